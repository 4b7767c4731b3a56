"""The recipe file check (mambapipe.cli_recipes.recipe_problem), run before any job: each job's config is composed
as Hydra composes it, and a mistake in a recipe file of one's own (or another config file) is one line naming the
file, the key and what to write; whatever composes, and the command line's own mistakes, pass to the run."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Optional

import hydra._internal.config_loader_impl
import pytest
from cli_checks import on_argv

from mambapipe import cli_recipes, cli_values
from mambapipe.config import CONFIG_DIR, BuildConfig, register_configs

recipe_problem = on_argv(cli_recipes.recipe_problem)
unchosen_model_problem = on_argv(cli_values.unchosen_model_problem)

RECIPES = sorted(p.stem for p in (Path(CONFIG_DIR) / "recipe").glob("*.yaml"))
# A user's recipe as QA wrote them (-cd DIR recipe=m1 reads DIR/recipe/m1.yaml); the cases below change a line.
M1 = """# @package _global_
# my Mamba1 at a small custom shape
defaults:
  - override /model: tiny_mamba

model:
  name: my-m1
  arch:
    hidden_size: 96
    num_layers: 3
    vocab_size: 1024
    state_size: 8
dtype: bfloat16
tp_size: 1
backend: native
device: cpu
build:
  max_batch_size: 4
  max_input_len: 256
  max_seq_len: 300
eval:
  task: summarize
  dataset: sample
  max_ite: 2
  batch_size: 2
  max_input_length: 255
  output_len: 8
"""
BENCH = M1.split("eval:")[0] + """eval:
  task: benchmark
  scenarios:
    - {batch: 1, input_len: 32, output_len: 16}
    - {batch: 4, input_len: 64, output_len: 16}
"""
TEXTS = {"m1": M1, "bench": BENCH}


def line_of(text: str, line: str) -> int:
    """The line number an editor shows for `line` of `text`."""
    return text.splitlines().index(line) + 1


@pytest.fixture(autouse=True)
def _schema_registered():
    register_configs()  # as mambapipe.app does on import: the configs extend the schema's


@pytest.fixture
def config_dir(tmp_path) -> Path:
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "m1.yaml").write_text(M1)
    return tmp_path


def problem_of(config_dir: Path, name: str, text: str, *argv: str) -> Optional[str]:
    (config_dir / "recipe" / f"{name}.yaml").write_text(text)
    return recipe_problem(["-cd", str(config_dir), f"recipe={name}", *argv])


@pytest.mark.parametrize("recipe, old, new, problem", [
    ("m1", "  max_ite: 2", "  max_ite 2", f"line {line_of(M1, '  max_ite: 2')}: could not find expected ':'"),
    ("m1", "  batch_size: 2", " batch_size: 2",
     f"line {line_of(M1, '  batch_size: 2')}: expected <block end>, but found '<block mapping start>'"),
    ("m1", '  name: my-m1', '  name: "my-m1', f"line {line_of(M1, '  name: my-m1')}: found unexpected end of stream"),
])
def test_a_yaml_syntax_error_is_the_line_an_editor_shows(config_dir, recipe, old, new, problem):
    """Hydra's report is the YAML scanner's traceback, ~100 lines (QA); a scanner's error is at the line where
    the token it could not finish starts, not at the next line, where it gave up."""
    path = config_dir / "recipe" / "typo.yaml"
    assert problem_of(config_dir, "typo", TEXTS[recipe].replace(old, new)) == f"recipe=typo: {path} {problem}"


@pytest.mark.parametrize("recipe, old, new, problem", [
    ("m1", "max_batch_size: 4", "max_batch_szie: 4",
     "build.max_batch_szie is not a config key; did you mean build.max_batch_size?"),
    ("m1", "hidden_size: 96", "hiden_size: 96",
     "model.arch.hiden_size is not a config key; did you mean model.arch.hidden_size?"),
    ("m1", "dtype: bfloat16", "dtyp: bfloat16", "dtyp is not a config key; did you mean dtype?"),
    ("bench", "{batch: 1, input_len: 32", "{batch: 1, input_length: 32",  # OmegaConf's error says 'input_length'
     "eval.scenarios[0].input_length is not a config key; did you mean eval.scenarios[0].input_len?"),
    ("bench", "{batch: 4,", "{batch: four,",
     "eval.scenarios[1].batch: Value 'four' of type 'str' could not be converted to Integer"),
    ("m1", "device: cpu", "device: cpu\nsteps: evaluate", "steps is a list; write steps: [evaluate]"),
    ("m1", "device: cpu", "device: cpu\nforce: [biuld]",
     "force[0]: Invalid value 'biuld', expected one of [download, convert, build, evaluate]"),
    ("m1", "dtype: bfloat16", "dtype: fp16", "dtype: Invalid value 'fp16', expected one of [float16, bfloat16, "
                                           "float32]"),
    ("m1", "num_layers: 3", "num_layers: 2.5",
     "model.arch.num_layers: Value '2.5' of type 'float' could not be converted to Integer"),
    ("m1", "# @package _global_\n", "",
     "add '# @package _global_' as its first line (without it Hydra puts its keys under recipe.)"),
    ("m1", "# @package _global_\n# my Mamba1 at a small custom shape",
     "# my Mamba1 at a small custom shape\n# @package _global_",
     "move its '# @package _global_' line to the top: Hydra reads it only above every other line"),
    ("m1", "- override /model: tiny_mamba", "- model: tiny_mamba",
     "its defaults entry '- model: tiny_mamba' must read '- override /model: tiny_mamba': a recipe overrides "
     "the model that mambapipe's config.yaml chooses"),
    ("m1", "- override /model: tiny_mamba", "- /model: tiny_mamba",
     "its defaults entry '- /model: tiny_mamba' must read '- override /model: tiny_mamba': "),
    ("m1", "- override /model: tiny_mamba", "- override /model: tiny_mamba1",
     "its defaults entry '- override /model: tiny_mamba1': no such model; did you mean tiny_mamba? (models: "),
    ("m1", "build:\n  max_batch_size: 4\n  max_input_len: 256\n  max_seq_len: 300", "build: 3",
     f"build is a group of settings, not one value: set its keys ({', '.join(f.name for f in fields(BuildConfig))}) "
     "under it, as build: {max_batch_size: 8}"),  # Hydra: Merge error: int is not a subclass of BuildConfig
    ("m1", "  arch:\n    hidden_size: 96\n    num_layers: 3\n    vocab_size: 1024\n    state_size: 8\n",
     "  arch: [96]\n", "model.arch is a group of settings, not one value: "),
    ("bench", "    - {batch: 1, input_len: 32, output_len: 16}\n    - {batch: 4, input_len: 64, output_len: 16}\n",
     "    - 4\n", "eval.scenarios is a list of groups of settings (batch, input_len, output_len); write "
                 "eval.scenarios: [{batch: 1, input_len: 100, output_len: 100}]"),
    ("m1", "device: cpu", "device: cpu\nforce: '[build]'", "force is a list; write force: [build]"),
    ("m1", "  name: my-m1", "  name: my-m1\n  allow_patterns: '*.json'",
     "model.allow_patterns is a list; write model.allow_patterns: ['*.json']"),
    ("m1", "  name: my-m1", "  name: my-m1\n  allow_patterns: '[\"*.json\", a.txt]'",  # quoted where YAML needs it
     "model.allow_patterns is a list; write model.allow_patterns: ['*.json', a.txt]"),
    ("m1", "device: cpu", "device: cpu\nhydra:\n  run:\n    dirr: x",  # Hydra's words, on one line
     "hydra.run.dirr: Key 'dirr' not in 'RunDir'"),
])
def test_a_mistake_in_a_recipe_file_is_one_line_naming_the_file_and_key(config_dir, recipe, old, new, problem):
    """Hydra's errors span 4 to 18 lines, name no file, lose a list item's path and say nothing of the missing
    `# @package _global_` line (`Could not override 'model@recipe.model'`) or `override /` (`Could not find
    'recipe/model/tiny_mamba'`)."""
    assert old in TEXTS[recipe]
    path = config_dir / "recipe" / "mine.yaml"
    assert problem_of(config_dir, "mine", TEXTS[recipe].replace(old, new)).startswith(f"recipe=mine: {path}: {problem}")


@pytest.mark.parametrize("entry", ["model", "/model", "optional model", "optional /model", "override model",
                                   "optional override model"])
def test_a_defaults_entry_that_does_not_override_the_model_is_one_line(config_dir, entry):
    """Each way to leave out `override /`, as the app checks them; `- optional model: NAME` composed and the default
    tiny_mamba2 ran: Hydra skips the recipe's own recipe/model/NAME it does not find, as optional."""
    (config_dir / "recipe" / "mine.yaml").write_text(f"# @package _global_\ndefaults:\n  - {entry}: mamba_130m\n")
    argv = ["-cd", str(config_dir), "recipe=mine"]
    assert (recipe_problem(argv) or unchosen_model_problem(argv)) == (
        f"recipe=mine: {config_dir / 'recipe' / 'mine.yaml'}: its defaults entry '- {entry}: mamba_130m' must read "
        "'- override /model: mamba_130m': a recipe overrides the model that mambapipe's config.yaml chooses")


@pytest.mark.parametrize("where", [["-cd", "{}"], ["hydra.searchpath=[file://{}]"]])
def test_a_choice_of_a_group_no_defaults_list_picks_says_to_add_it(config_dir, where):
    """Was, with -cd, a StopIteration traceback from this check (with recipe=, Hydra's 'Could not override
    'mygroup'. No match in the defaults list.' and three lines more); with hydra.searchpath, the key check's
    'mygroup is not a config key'."""
    (config_dir / "mygroup").mkdir()
    (config_dir / "mygroup" / "a.yaml").write_text("# @package _global_\ndtype: float32\n")
    argv = [word.format(config_dir) for word in where]
    assert recipe_problem([*argv, "mygroup=a"]) == ("mygroup=a: mygroup is a config group that no defaults list "
                                                    "picks, so there is no choice to change: add it with +mygroup=a")
    assert recipe_problem([*argv, "+mygroup=a"]) is None
    (config_dir / "recipe" / "picks.yaml").write_text("# @package _global_\ndefaults:\n  - /mygroup: a\n")
    assert recipe_problem([*argv, "recipe=picks", "mygroup=a"]) is None


def test_a_searchpaths_recipe_file_is_named_too(config_dir):
    path = config_dir / "recipe" / "typo.yaml"
    path.write_text(M1.replace("dtype:", "dtyp:"))
    assert recipe_problem([f"hydra.searchpath=[file://{config_dir}]", "recipe=typo"]) == (
        f"recipe=typo: {path}: dtyp is not a config key; did you mean dtype?")


def test_a_mistake_in_a_model_file_of_ones_own_names_that_file(config_dir):
    (config_dir / "model").mkdir()
    (config_dir / "model" / "mine.yaml").write_text("name: mine\narch:\n  hiden_size: 3\n")
    problem = problem_of(config_dir, "uses_mine", M1.replace("override /model: tiny_mamba", "override /model: mine"))
    assert problem == (f"recipe=uses_mine: {config_dir / 'model' / 'mine.yaml'}: model.arch.hiden_size is not a "
                       f"config key; did you mean model.arch.hidden_size?")


def test_each_recipe_of_a_sweep_is_checked_before_any_job(config_dir):
    (config_dir / "recipe" / "typo.yaml").write_text(M1.replace("dtype:", "dtyp:"))
    typo = config_dir / "recipe" / "typo.yaml"
    problem = recipe_problem(["-cd", str(config_dir), "-m", "recipe=m1,typo", "dtype=float16,float32"])
    assert problem == f"recipe=typo: {typo}: dtyp is not a config key; did you mean dtype?"
    assert recipe_problem(["-cd", str(config_dir), "-m", "recipe=m1", "model=tiny_mamba,tiny_mamba2"]) is None


@pytest.mark.parametrize("argv", [
    [], *([f"recipe={recipe}"] for recipe in RECIPES), ["recipe=m1"], ["recipe=m1", "model=tiny_mamba2"],
    ["-m", f"recipe={','.join(RECIPES)}", "tp_size=1,2"],
    ["recipe=bench_mamba_130m", "eval.scenarios.0.batch=x"],  # the command line's mistakes: Hydra reports them
    ["dtype=["], ["recipe=quickstrat"], ["-cd", "/no/such/dir"], ["--config-name", "mine"],
    ["eval.scenarios.0=3"],  # a compose error with the default recipe: was a StopIteration traceback
])
def test_what_composes_or_is_the_command_lines_mistake_passes(config_dir, capsys, argv):
    assert recipe_problem(["-cd", str(config_dir), *argv] if "-cd" not in argv else argv) is None
    assert capsys.readouterr() == ("", "")


def test_hydra_full_error_leaves_the_check_out_for_hydras_traceback(config_dir, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    assert problem_of(config_dir, "typo", M1.replace("dtype:", "dtyp:")) is None


def test_a_change_in_hydras_internals_leaves_the_check_to_hydra(config_dir, monkeypatch):
    def changed(config_search_path):
        raise TypeError("ConfigLoaderImpl() takes another argument now")

    monkeypatch.setattr(hydra._internal.config_loader_impl, "ConfigLoaderImpl", changed)
    assert problem_of(config_dir, "typo", M1.replace("dtype:", "dtyp:")) is None


def test_a_recipe_file_the_explanation_cannot_read_is_left_to_hydra(config_dir):
    """Found by review: a recipe that is not UTF-8 ended in a UnicodeDecodeError traceback from this check."""
    (config_dir / "recipe" / "latin1.yaml").write_bytes(M1.replace("my-m1", "my-m\xe9").encode("latin-1"))
    assert recipe_problem(["-cd", str(config_dir), "recipe=latin1"]) is None
