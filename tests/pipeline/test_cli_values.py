"""The command line's value check (mambapipe.cli_values.bad_value_problem), run before Hydra composes: a group
choice that names no config, or a value its key's type refuses, is one line naming it; whatever Hydra accepts
passes."""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import hydra._internal.config_repository
import pytest
from cli_checks import on_argv
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from mambapipe import cli_values
from mambapipe.cli_keys import parse_command_line
from mambapipe.config import CONFIG_DIR, ArchConfig, BuildConfig, EvalConfig, register_configs

bad_value_problem = on_argv(cli_values.bad_value_problem)
unchosen_model_problem = on_argv(cli_values.unchosen_model_problem)
unswept_sweep_problem = on_argv(cli_values.unswept_sweep_problem)
spaced_sweep_problem = on_argv(cli_values.spaced_sweep_problem)
hydra_sweep_problem = on_argv(cli_values.hydra_sweep_problem)

RECIPES = sorted(p.stem for p in (Path(CONFIG_DIR) / "recipe").glob("*.yaml"))
MODELS = sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _schema_registered():
    register_configs()  # as mambapipe.cli does on import: the group configs extend the schema's


@pytest.mark.parametrize("argv, problem", [
    (["recipe=quickstrat"], f"recipe=quickstrat: no such recipe; did you mean recipe=quickstart? "
                            f"(recipes: {', '.join(RECIPES)})"),
    (["model=tiny_mamba3"], f"model=tiny_mamba3: no such model; did you mean model=tiny_mamba? "
                            f"(models: {', '.join(MODELS)})"),
    (["recipe=xyzzy"], f"recipe=xyzzy: no such recipe (recipes: {', '.join(RECIPES)})"),
    (["recipe=null"], f"recipe=null: name a recipe (recipes: {', '.join(RECIPES)})"),  # Hydra: a traceback
    (["recipe="], f"recipe=: no such recipe (recipes: {', '.join(RECIPES)})"),  # no file named: was a traceback
    (["recipe=/"], f"recipe=/: no such recipe (recipes: {', '.join(RECIPES)})"),
    (["hydra/launcher=mambapipe_slrum"], "hydra/launcher=mambapipe_slrum: no such hydra/launcher; did you mean "
                                         "hydra/launcher=mambapipe_slurm? (hydra/launchers: "),
    (["dtype=float8"], "dtype=float8: Invalid value 'float8', expected one of [float16, bfloat16, float32]"),
    (["steps=[evalute]"], "steps=[evalute]: Invalid value 'evalute', expected one of [download, convert, build, "
                          "evaluate]"),
    (["steps=evaluate"], "steps=evaluate: steps is a list; write 'steps=[evaluate]'"),
    (["eval.task=bench"], "eval.task=bench: Invalid value 'bench', expected one of [summarize, benchmark]"),
    (["tp_size=3.5"], "tp_size=3.5: Value '3.5' of type 'float' could not be converted to Integer"),
    (["model.arch.hidden_size=wide"], "model.arch.hidden_size=wide: Value 'wide' of type 'str' could not be "
                                      "converted to Integer"),
    (["eval.scenarios=[{batch:x}]"], "eval.scenarios=[{batch:x}]: Value 'x' of type 'str' could not be converted"),
])
def test_a_bad_value_is_one_line_naming_it(argv, problem):
    assert bad_value_problem(["plan_only=true", *argv]).startswith(problem)


@pytest.mark.parametrize("argv, problem", [
    (["recipe=[]"], "recipe=[]: a run takes one recipe, and [] picks none: write recipe=NAME (recipes: "),
    (["model=[]"], "model=[]: a run takes one model, and [] picks none: write model=NAME (models: "),
    (["recipe=[mamba_130m]"], "recipe=[mamba_130m]: a run takes one recipe, not a list: write recipe=mamba_130m ("),
    (["recipe=[quickstart,mamba_130m]"], "recipe=[quickstart,mamba_130m]: a run takes one recipe, and Hydra would "
                                         "merge the listed recipes into one: write recipe=NAME, or -m "
                                         "recipe=quickstart,mamba_130m to run each as a job of a sweep (recipes: "),
    (["-m", "model=tiny_mamba,[tiny_mamba2,tiny_mamba]"], "model=[tiny_mamba2,tiny_mamba]: a run takes one model, "),
])
def test_a_list_of_recipes_or_models_is_refused_with_what_to_write(argv, problem):
    """Hydra takes a list for a config group and merges its configs: recipe=[] ran the schema's defaults with no
    recipe at all, recipe=[quickstart,mamba_130m] mamba-130m on quickstart's CPU, and model=[] failed only once its
    run dir was made ('model has no value')."""
    assert bad_value_problem([*argv, "plan_only=true"]).startswith(problem)
    sweep = problem.partition(", or ")[2].partition(" to run")[0]
    assert not sweep or bad_value_problem(shlex.split(sweep)) is None  # the sweep it offers runs


def test_a_group_of_ones_own_still_takes_a_list(tmp_path):
    (tmp_path / "mygroup").mkdir()
    (tmp_path / "mygroup" / "a.yaml").write_text("# @package _global_\ndtype: float32\n")
    (tmp_path / "mygroup" / "b.yaml").write_text("# @package _global_\ntp_size: 1\n")
    assert bad_value_problem(["-cd", str(tmp_path), "+mygroup=[a,b]"]) is None
    assert bad_value_problem(["-cd", str(tmp_path), "+mygroup=[a,c]"]).startswith("+mygroup=c: no such mygroup")


def settings(section: type) -> str:
    return ", ".join(f.name for f in fields(section))


@pytest.mark.parametrize("override, write", [
    ("build=3", f"build is a group of settings, not one value: set its keys ({settings(BuildConfig)}) one by one, as "
                "build.max_batch_size=8"),
    ("build=[16]", "build is a group of settings, not one value: "),  # Hydra: Cannot merge DictConfig with ListConfig
    ("eval=fast", f"eval is a group of settings, not one value: set its keys ({settings(EvalConfig)}) one by one, "
                  "as eval.task=summarize"),
    ("model.arch=3", f"model.arch is a group of settings, not one value: set its keys ({settings(ArchConfig)}) one by "
                     "one, as model.arch.conv_kernel=4"),
    ("force='[build]'", "force is a list; write 'force=[build]'"),  # a list in quotes: not force=[[build]]
    ("steps='[convert, build]'", "steps is a list; write 'steps=[convert,build]'"),
    ("model.allow_patterns=*.json", "model.allow_patterns is a list; write 'model.allow_patterns=[*.json]'"),
    ("model.allow_patterns='[*.json]'", "model.allow_patterns is a list; write 'model.allow_patterns=[*.json]'"),
    ("model.allow_patterns='my model/*'", "model.allow_patterns is a list; write 'model.allow_patterns=[my model/*]'"),
    ("eval.scenarios=3", "eval.scenarios is a list of groups of settings (batch, input_len, output_len); write "
                         "'eval.scenarios=[{batch:1,input_len:100,output_len:100}]'"),
    ("eval.scenarios=[4]", "eval.scenarios is a list of groups of settings (batch, input_len, output_len); write "),
])
def test_one_value_for_a_group_of_settings_or_a_list_is_told_what_to_write(override, write):
    """build=3 was OmegaConf's 'int is not a subclass of BuildConfig', force='[build]' was told to
    write force=[[build]], and model.allow_patterns (null by default) was told nothing of a list."""
    problem = bad_value_problem([override])
    assert problem.startswith(f"{override}: {write}")
    written = shlex.split(problem.rpartition(" write ")[2] if " write " in problem else problem.rpartition(" as ")[2])
    assert bad_value_problem(written) is None, written  # what it says to write passes


@pytest.mark.parametrize("value", ["'a=b'", "'a,b'", "a\\,b", "'1'", "'true'", "' a'", "'a\"b'", "'a\\\\'",
                                   "'[\"x,y\", 2]'", "'[null, b]'", "'my model/*'", "*.json"])
def test_a_list_hint_reads_back_as_the_list_of_the_value_given(value):
    """The hint wrote each item unquoted: 'a=b' became [a=b], which Hydra cannot parse, 'a,b' [a,b], two items, and
    '1' or 'true' [1] and [true], which OmegaConf stores in the list of strings as '1' and 'True', and '[null, b]'
    [None,b]."""
    parser = OverridesParser.create()
    given = parser.parse_override(f"model.allow_patterns={value}").value()
    items = parser.parse_override(f"key={given}").value() if given.startswith("[") else [given]  # a list in quotes
    problem = bad_value_problem([f"model.allow_patterns={value}"])
    written = shlex.split(problem.partition("; write ")[2])
    assert len(written) == 1 and parser.parse_override(written[0]).value() == items, problem


@pytest.mark.parametrize("sweep, bad", [("recipe=quickstart,quickstrat", "recipe=quickstrat: no such recipe"),
                                        ("dtype=float16,float8", "dtype=float8: Invalid value 'float8'"),
                                        ("tp_size=choice(1,2.5)", "tp_size=2.5: Value '2.5'")])
def test_each_value_of_a_sweep_is_checked_and_named_alone(sweep, bad):
    assert bad_value_problem(["-m", sweep, "plan_only=true"]).startswith(bad)


SWEEP_WITHOUT_M = "a comma-separated value for a key without -m is a sweep: add -m"


@pytest.mark.parametrize("argv, problem", [
    (["recipe=quickstart,mamba_130m"], f"{SWEEP_WITHOUT_M} (`python -m mambapipe -m recipe=quickstart,mamba_130m`)"),
    (["-cd", "{tmp}", "steps=download,convert", "plan_only=true"],
     f"{SWEEP_WITHOUT_M} (`python -m mambapipe -m --config-dir {{tmp}} steps=download,convert plan_only=true`), "
     "or for a list write 'steps=[download,convert]'"),
    (["model.allow_patterns=*.json,a b"],
     f"{SWEEP_WITHOUT_M} (`python -m mambapipe -m 'model.allow_patterns=*.json,a b'`), or for a list write "
     "'model.allow_patterns=[*.json,a b]'"),
    (["eval.scenarios=1,2"], f"{SWEEP_WITHOUT_M} (`python -m mambapipe -m eval.scenarios=1,2`)"),  # not a list of 1s
    (["dtype=choice(float32,bfloat16)"], "a sweep runs with -m: `python -m mambapipe -m 'dtype=choice(float32,"
                                         "bfloat16)'`"),
])
def test_a_sweep_without_m_is_one_line_with_the_command_that_runs_it(tmp_path, argv, problem):
    """Hydra's 'Ambiguous value' report spans four lines and first suggests key=[value1,value2], a list that the
    value check refuses for a key of one value (recipe=[a,b] would merge the recipes): the list form is offered for a
    key that takes a list alone."""
    argv = [word.format(tmp=tmp_path) for word in argv]
    override = next(word for word in argv if "," in word)
    assert unswept_sweep_problem(argv) == f"{override}: {problem.format(tmp=tmp_path)}"
    for written in re.findall(r"`([^`]*)`|write (.*)$", problem.format(tmp=tmp_path)):
        words = shlex.split("".join(written))
        assert parse_command_line(words[3:] if words[0] == "python" else words) is not None  # it reads back


@pytest.mark.parametrize("argv", [["-m", "recipe=quickstart,mamba_130m"], ["steps=[download,convert]"],
                                  ["model.name='a,b'"], ["hydra.job.name=a,b"]])  # Hydra's settings: Hydra's
def test_a_sweep_with_m_or_a_comma_in_a_list_or_quotes_passes(argv):
    assert unswept_sweep_problem(argv) is None


SPACED = "a sweep's values are separated by commas, not spaces: write "


@pytest.mark.parametrize("argv, problem", [
    (["-m", "dtype=float32", "bfloat16"], "bfloat16: not an override, which reads key=value; " + SPACED
     + "dtype=float32,bfloat16"),
    (["-m", "dtype=float32", "bfloat16", "float16", "plan_only=true"], "bfloat16: not an override, which reads "
     "key=value; " + SPACED + "dtype=float32,bfloat16,float16"),
    (["-m", "dtype=float32,", "bfloat16"], "dtype=float32,: " + SPACED + "dtype=float32,bfloat16"),  # was: write
    (["-m", "dtype=float32", ",", "bfloat16"], ",: not an override, which reads key=value; " + SPACED  # float32
     + "dtype=float32,bfloat16"),
    (["-m", "recipe=quickstart", "mamba_130m"], "mamba_130m: not an override, which reads key=value; " + SPACED
     + "recipe=quickstart,mamba_130m"),
    (["-m", "model.name=my", "model"], "model: not an override, which reads key=value; " + SPACED
     + "model.name=my,model"),  # a guess: a string takes either
])
def test_a_space_between_a_sweeps_values_is_told_to_write_a_comma(argv, problem):
    """`-m dtype=float32 bfloat16` was told 'bfloat16: not an override, which reads key=value', not what to write;
    `-m dtype=float32, bfloat16` to write dtype=float32, leaving bfloat16 out."""
    assert spaced_sweep_problem(argv) == problem


@pytest.mark.parametrize("argv", [
    ["-m", "plan_only=true", "quickstart"],  # not a value of plan_only: grammar_problem's 'not an override'
    ["-m", "dtype=float32", "float8"], ["-m", "recipe=quickstart", "quickstrat"],
    ["-m", "bfloat16", "dtype=float32"], ["-m", "dtype=float32"],
    ["dtype=float32", "bfloat16"],  # without -m a value with a space may be meant as much as a sweep
])
def test_words_that_are_not_a_sweeps_values_are_left_to_the_grammar_check(argv):
    assert spaced_sweep_problem(argv) is None


SPACED_WITHOUT_M = "a sweep runs with -m, its values separated by commas, not spaces: "


@pytest.mark.parametrize("argv, problem", [
    (["dtype=float32,", "bfloat16", "plan_only=true"],  # was: write dtype=float32, leaving bfloat16 out
     "dtype=float32,: " + SPACED_WITHOUT_M + "`python -m mambapipe -m dtype=float32,bfloat16 plan_only=true`"),
    (["-cd", "{tmp}", "dtype=float32", ",bfloat16"],  # was: ',bfloat16: not an override' alone
     ",bfloat16: not an override, which reads key=value; " + SPACED_WITHOUT_M
     + "`python -m mambapipe -m --config-dir {tmp} dtype=float32,bfloat16`"),
    (["recipe=quickstart", ",", "mamba_130m", "eval.max_ite=3"], ",: not an override, which reads key=value; "
     + SPACED_WITHOUT_M + "`python -m mambapipe -m recipe=quickstart,mamba_130m eval.max_ite=3`"),
])
def test_a_spaced_sweep_without_m_is_told_the_command_with_m_and_commas(tmp_path, argv, problem):
    """Without -m, a comma next to the space says a sweep was meant: the line gives the user's command as it runs
    that sweep, as a sweep written without spaces or -m is told (unswept_sweep_problem)."""
    argv = [word.format(tmp=tmp_path) for word in argv]
    assert spaced_sweep_problem(argv) == problem.format(tmp=tmp_path)
    words = shlex.split(re.search(r"`([^`]*)`", problem.format(tmp=tmp_path))[1])[3:]
    args = parse_command_line(words)
    assert args.multirun and spaced_sweep_problem(words) is None and unswept_sweep_problem(words) is None


LISTED = " is a list; write it without spaces, in brackets and quotes: "


@pytest.mark.parametrize("argv, problem", [
    (["steps=download,", "convert"], "steps=download,: steps" + LISTED + "'steps=[download,convert]'"),
    (["force=build,", "evaluate", "plan_only=true"], "force=build,: force" + LISTED + "'force=[build,evaluate]'"),
    (["steps=download", ",convert", "build"], ",convert: not an override, which reads key=value; steps" + LISTED
     + "'steps=[download,convert,build]'"),
    (["-m", "dtype=float32,bfloat16", "steps=download,", "convert"], "steps=download,: steps" + LISTED
     + "'steps=[download,convert]'"),  # a sweep of steps would have each job refused: steps=download is no list
])
def test_a_spaced_list_is_told_to_write_it_in_brackets(argv, problem):
    """`steps=download, convert` (a list typed with a space, which the shell splits) was told 'Hydra cannot parse
    an empty value between commas: write steps=download', leaving convert out; the list it means now, quoted for the
    shell (zsh refuses brackets out of quotes that match no file), which the check then passes."""
    assert spaced_sweep_problem(argv) == problem
    listed = shlex.split(problem.rpartition(": ")[2])  # as the shell passes what the line says to write
    assert unswept_sweep_problem(listed) is None and bad_value_problem(listed) is None


@pytest.mark.parametrize("argv", [["steps=download,", "convrt"],  # no such step: grammar_problem names the word
                                  ["steps=download", "convert"]])  # no comma: not plainly a list of the two
def test_a_spaced_list_with_a_bad_step_or_no_comma_is_left_to_the_grammar_check(argv):
    assert spaced_sweep_problem(argv) is None


ONE_VALUE = "Hydra sweeps none of its own settings, with -m or without: "


@pytest.mark.parametrize("argv, problem", [
    (["hydra.run.dir=a,b"], ONE_VALUE + "give hydra.run.dir one value (hydra.run.dir=a, and run once per value), or "
                            "one with commas in quotes: 'hydra.run.dir=\"a,b\"'"),
    (["-m", "hydra.run.dir=out/a,out/b"], ONE_VALUE + "give hydra.run.dir one value (hydra.run.dir=out/a, and run "
                                          "once per value), or one with commas in quotes: "
                                          "'hydra.run.dir=\"out/a,out/b\"'"),
    (["hydra.job.chdir=true,false"], ONE_VALUE + "give hydra.job.chdir one value (hydra.job.chdir=true, and run once "
                                     "per value)"),
    (["-m", "hydra.job.chdir=choice(true,false)"], ONE_VALUE + "give hydra.job.chdir one value (hydra.job.chdir=true, "
                                                   "and run once per value)"),
    (["-m", "hydra.searchpath=pkg://a,file://b"], ONE_VALUE + "hydra.searchpath takes a list: write "
                                                  "'hydra.searchpath=[pkg://a,file://b]'"),
    (["-m", "dtype=float32,bfloat16", "hydra/launcher=basic,joblib"],
     ONE_VALUE + "give hydra/launcher one value (hydra/launcher=basic, and run once per value)"),
    (["-m", "hydra.sweep.dir=glob(*)"], ONE_VALUE + "give hydra.sweep.dir one value"),
])
def test_a_sweep_of_a_hydra_setting_is_one_line_naming_the_key_and_what_to_write(argv, problem):
    """Hydra refused such a sweep with -m in three lines ('Sweeping over Hydra's configuration is not supported'),
    and without -m in six ('Ambiguous value'), suggesting --multirun, which it then refuses."""
    override = next(word for word in argv if word.startswith("hydra"))
    assert hydra_sweep_problem(argv) == f"{override}: {problem}"


@pytest.mark.parametrize("argv", [["-m", "hydra.run.dir=out", "dtype=float32,bfloat16"],  # what the lines offer
                                  ["hydra.searchpath=[pkg://a,file://b]"], ['hydra.run.dir="a,b"']])
def test_hydra_settings_of_one_value_pass(argv):
    assert hydra_sweep_problem(argv) is None


def as_overrides(node: Any, prefix: str = "") -> list[str]:
    """`key=value` for each value of a plain config, in JSON (which Hydra's override grammar reads); a list of
    plain values whole, a list of dicts item by item."""
    if isinstance(node, dict):
        return [o for key, value in node.items() for o in as_overrides(value, f"{prefix}{key}.")]
    if isinstance(node, list) and any(isinstance(item, dict) for item in node):
        return [o for i, item in enumerate(node) for o in as_overrides(item, f"{prefix}{i}.")]
    return [f"{prefix[:-1]}={json.dumps(node)}"]


@pytest.mark.parametrize("recipe", [None, *RECIPES])
def test_every_value_of_a_composed_config_passes(compose_config, recipe):
    """As the recipes set them: a list a recipe fills (eval.scenarios) is empty in the schema's defaults."""
    cfg = compose_config(*([f"recipe={recipe}"] if recipe else []))
    overrides = as_overrides(OmegaConf.to_container(cfg, enum_to_str=True))
    assert any(o.startswith("model.arch.n_groups=") for o in overrides) and "eval.task" in str(overrides)
    assert bad_value_problem(overrides) is None


@pytest.mark.parametrize("argv", [
    [f"recipe={recipe}" for recipe in RECIPES], [f"model={model}" for model in MODELS],
    ["-m", f"recipe={','.join(RECIPES)}", "model=glob(tiny_*)", "tp_size=range(1,3)", "dtype=float16,float32"],
    ["~model"], ["model@model=tiny_mamba", "hydra/launcher=mambapipe_slurm"],
    ["dtype=${model.source_dtype}", "model.arch.hidden_size=???", "model.revision=null"],
    ["+extra=float8", "++eval.extra=2", "xyz=1"],  # added and unknown keys: resolve_config's and the key check's
    ["eval.scenarios.0.batch=3", "steps.0=build"],  # through a list that a recipe may fill
    ["hydra.searchpath=[file:///mine]", "model=tiny_mamba"],  # a group choice, not a value of the schema's key
    ["--config-name", "mine", "recipe=mine", "dtype=float8"], ["-cd", "/no/such/dir", "recipe=mine"],
    ["-cd", "/no/such/dir", "model=tiny_mamba"],  # Hydra says the dir is missing
    ["dtype=[", "--bogus"],  # Hydra's own errors
])
def test_what_hydra_accepts_or_reports_itself_passes(capsys, argv):
    assert bad_value_problem(argv) is None
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("spelling", [["-cd", "{}"], ["--config-dir", "{}"], ["--config-dir={}"]])
def test_a_config_dirs_recipes_are_options_too(tmp_path, spelling):
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "too_wide.yaml").write_text("# @package _global_\ntp_size: 3\n")
    config_dir = [word.format(tmp_path) for word in spelling]
    assert bad_value_problem([*config_dir, "recipe=too_wide"]) is None
    problem = bad_value_problem([*config_dir, "recipe=to_wide"])
    assert problem.startswith("recipe=to_wide: no such recipe; did you mean recipe=too_wide? (recipes: ")
    assert "too_wide" in problem and "quickstart" in problem
    assert bad_value_problem([*config_dir, "dtype=float8"]).startswith("dtype=float8: Invalid value 'float8'")


def test_a_recipe_given_as_its_files_path_or_beside_a_config_dir_that_is_its_folder_is_told_how_to_run_it(tmp_path):
    """Both were `no such recipe` alone (QA): recipe=DIR/recipe/m1.yaml, and -cd DIR/recipe recipe=m1."""
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "m1.yaml").write_text("# @package _global_\ntp_size: 1\n")
    assert bad_value_problem([f"recipe={tmp_path / 'recipe' / 'm1.yaml'}"]).startswith(
        f"recipe={tmp_path / 'recipe' / 'm1.yaml'}: no such recipe; recipe= takes a recipe's name, not its path: use "
        f"-cd {tmp_path} recipe=m1 (recipes: ")
    assert bad_value_problem(["-cd", str(tmp_path / "recipe"), "recipe=m1"]).startswith(
        f"recipe=m1: no such recipe; -cd {tmp_path / 'recipe'} holds m1.yaml but no recipe/ folder, where Hydra "
        f"looks: use -cd {tmp_path} recipe=m1 (recipes: ")


@pytest.mark.parametrize("given, hint", [
    ("{recipes}/mamba_130m.yaml", "recipe= takes a recipe's name, not its path: write recipe=mamba_130m"),
    ("{configs}/recipe/mamba_130m", "recipe= takes a recipe's name, not its path: write recipe=mamba_130m"),
    ("recipes/mamba_130m.yaml", "did you mean recipe=mamba_130m?"),  # no such file here: the name is a recipe's
    ("{recipes}/quickstrat.yaml", "did you mean recipe=quickstart?"),
    ("elsewhere/quickstrat", "did you mean recipe=quickstart?"),
])
def test_a_path_to_the_projects_own_recipe_is_told_its_name(tmp_path, monkeypatch, given, hint):
    """recipe=recipes/mamba_130m.yaml was told to put it in recipes/recipe/ and give -cd recipes (the project's
    recipes/ is its recipe group, configs/recipe a link to it); from another directory, with no such file there,
    it was `did you mean recipe=bench_mamba_130m?`, the name matched with its folder and .yaml."""
    monkeypatch.chdir(tmp_path)
    given = given.format(recipes=Path(CONFIG_DIR).parent / "recipes", configs=CONFIG_DIR)
    assert bad_value_problem([f"recipe={given}"]) == (
        f"recipe={given}: no such recipe; {hint} (recipes: {', '.join(RECIPES)})")


@pytest.mark.parametrize("spelling", ["file://{}", "{}"])
def test_a_searchpaths_recipes_and_groups_are_options_too(tmp_path, spelling):
    """With hydra.searchpath a missing recipe was Hydra's `In 'config': Could not find 'recipe/opt'`
    (and its list of the search path), and a group's missing option passed to Hydra too."""
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "opt2.yaml").write_text("# @package _global_\ntp_size: 1\n")
    (tmp_path / "mygroup").mkdir()
    (tmp_path / "mygroup" / "a.yaml").write_text("# @package _global_\ndtype: float32\n")
    searchpath = f"hydra.searchpath=[{spelling.format(tmp_path)}]"
    assert bad_value_problem([searchpath, "recipe=opt2", "mygroup=a"]) is None
    problem = bad_value_problem([searchpath, "recipe=opt"])
    assert problem.startswith("recipe=opt: no such recipe; did you mean recipe=opt2? (recipes: ")
    assert "opt2" in problem.partition("(recipes: ")[2] and "quickstart" in problem
    assert bad_value_problem([searchpath, "mygroup=b"]) == "mygroup=b: no such mygroup (mygroups: a)"


@pytest.mark.parametrize("hydra_change", ["module gone", "class changed"])
def test_a_change_in_hydras_internals_leaves_the_check_to_hydra(monkeypatch, hydra_change):
    """The check reads the config groups through hydra._internal; once that changes, Hydra reports mistakes."""
    if hydra_change == "module gone":
        monkeypatch.setitem(sys.modules, "hydra._internal.config_repository", None)  # ImportError on import
    else:
        monkeypatch.setattr(hydra._internal.config_repository, "ConfigRepository", lambda search_path: object())
    assert bad_value_problem(["recipe=quickstrat"]) is None and bad_value_problem(["dtype=float8"]) is None


@pytest.mark.parametrize("method", ["get_group_options", "config_exists"])
def test_a_change_in_the_calls_after_finding_a_group_leaves_the_check_to_hydra(monkeypatch, method):
    """Its options and whether the choice is among them, asked only of a group choice."""
    changed = lambda self, name, added: True  # noqa: E731 - a new parameter: a TypeError where the check calls it
    monkeypatch.setattr(hydra._internal.config_repository.ConfigRepository, method, changed)
    assert bad_value_problem(["recipe=quickstrat"]) is None


@pytest.mark.parametrize("argv, own_code", [(["dtype=float8"], "first_line"), (["recipe=quickstrat"], "close_key")])
def test_a_bug_in_the_checks_own_code_is_raised_not_taken_for_a_change_in_hydra(monkeypatch, argv, own_code):
    def bug(*args):
        raise AttributeError("a bug of ours")

    monkeypatch.setattr(f"mambapipe.cli_values.{own_code}", bug)
    with pytest.raises(AttributeError, match="a bug of ours"):
        bad_value_problem(argv)


MY_MAMBA1 = ("# @package _global_\n{defaults}model:\n  name: my-m1\n  arch:\n    mamba_version: Mamba1\n"
             "    hidden_size: 96\n")


@pytest.fixture
def my_recipes(tmp_path) -> Path:
    """A config dir with a recipe that sets model keys and picks no model, one that picks it, and one that sets
    none (it runs the default model as it is)."""
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "unpicked.yaml").write_text(MY_MAMBA1.format(defaults=""))
    (tmp_path / "recipe" / "picked.yaml").write_text(
        MY_MAMBA1.format(defaults="defaults:\n  - override /model: tiny_mamba\n"))
    (tmp_path / "recipe" / "no_model.yaml").write_text("# @package _global_\ndtype: float32\n")
    return tmp_path


def test_a_recipe_that_sets_model_keys_but_picks_no_model_is_one_line(my_recipes):
    """Found by QA: without `- override /model: ...` a recipe's Mamba1 model.arch ran as config.yaml's default
    tiny_mamba2, a Mamba2, and nothing said so."""
    assert unchosen_model_problem(["-cd", str(my_recipes), "recipe=unpicked"]) == (
        "recipe=unpicked sets model.name, model.arch but picks no model, so they would be merged into the default "
        "model tiny_mamba2 (a Mamba2): add '- override /model: NAME' to its defaults, as the recipes in recipes/ do, "
        f"or give model=NAME (models: {', '.join(MODELS)})")


@pytest.mark.parametrize("spelling", [["-cd", "{}"], ["hydra.searchpath=[file://{}]"]])
def test_a_recipe_whose_model_entry_hydra_skips_as_optional_is_one_line(my_recipes, spelling):
    """`- optional model: mamba_130m` composed, and the default tiny-mamba2 ran: Hydra looks for the
    recipe's own recipe/model/mamba_130m, finds none and skips the entry as optional. It says so also where the
    recipe sets model keys, whose line would say to add the entry it has."""
    for name, defaults in [("skipped", ""), ("skipped_keys", MY_MAMBA1.format(defaults="").partition("\n")[2])]:
        (my_recipes / "recipe" / f"{name}.yaml").write_text(
            f"# @package _global_\ndefaults:\n  - optional model: mamba_130m\n{defaults}")
        problem = unchosen_model_problem([*(word.format(my_recipes) for word in spelling), f"recipe={name}"])
        assert problem == (f"recipe={name}: {my_recipes / 'recipe' / name}.yaml: its defaults entry '- optional "
                           "model: mamba_130m' must read '- override /model: mamba_130m': a recipe overrides the "
                           "model that mambapipe's config.yaml chooses")


def test_a_searchpaths_recipe_that_picks_no_model_is_checked_too(my_recipes):
    assert unchosen_model_problem([f"hydra.searchpath=[file://{my_recipes}]", "recipe=unpicked"]).startswith(
        "recipe=unpicked sets model.name, model.arch but picks no model")


def test_a_bug_in_the_model_checks_own_code_is_raised_not_taken_for_a_change_in_hydra(my_recipes, monkeypatch):
    """Found by review: only the calls into hydra._internal fall back, as in bad_value_problem."""
    import mambapipe.cli_values as cli_values

    class BuggyOmegaConf:  # what the check's own code calls, while Hydra's keeps the real OmegaConf
        is_dict = staticmethod(OmegaConf.is_dict)

        @staticmethod
        def select(*args):
            raise TypeError("a bug of ours")

    monkeypatch.setattr(cli_values, "OmegaConf", BuggyOmegaConf)
    with pytest.raises(TypeError, match="a bug of ours"):
        unchosen_model_problem(["-cd", str(my_recipes), "recipe=unpicked"])


def test_each_recipe_of_a_sweep_is_checked(my_recipes):
    problem = unchosen_model_problem(["-m", "-cd", str(my_recipes), "recipe=picked,unpicked", "dtype=float32"])
    assert problem.startswith("recipe=unpicked sets model.name, model.arch but picks no model")


@pytest.mark.parametrize("argv", [["recipe=picked"], ["recipe=no_model"], ["recipe=unpicked", "model=tiny_mamba"],
                                  ["-m", "recipe=unpicked", "model=tiny_mamba,tiny_mamba2"],
                                  ["recipe=optional_picked"], *[[f"recipe={recipe}"] for recipe in RECIPES], []])
def test_a_model_picked_by_the_recipe_or_the_command_line_passes(my_recipes, argv):
    (my_recipes / "recipe" / "optional_picked.yaml").write_text(
        "# @package _global_\ndefaults:\n  - optional override /model: tiny_mamba\n")
    assert unchosen_model_problem(["-cd", str(my_recipes), *argv]) is None
