"""The command line's key check (mambapipe.cli_keys.unknown_key_problem), run before Hydra composes: a key the
schema lacks is one line with the key it likely meant; whatever Hydra accepts passes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomllib
from cli_checks import on_argv
from omegaconf import OmegaConf

from mambapipe import cli_keys
from mambapipe.cli_keys import OTHER_COMMANDS, other_command_problem, runs_no_step
from mambapipe.config import CONFIG_DIR

unknown_key_problem = on_argv(cli_keys.unknown_key_problem)

RECIPES = sorted(p.stem for p in (Path(CONFIG_DIR) / "recipe").glob("*.yaml"))


def dotted_keys(node: Any, prefix: str = "") -> list[str]:
    """Every key of a plain config, nested ones and list items included: {'a': [{'b': 1}]} -> a, a.0, a.0.b."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    keys = []
    for key, value in items:
        dotted = f"{prefix}.{key}" if prefix else str(key)
        keys += [dotted, *dotted_keys(value, dotted)]
    return keys


@pytest.mark.parametrize("recipe", [None, *RECIPES])
def test_every_key_of_a_composed_config_passes(compose_config, recipe):
    cfg = compose_config(*([f"recipe={recipe}"] if recipe else []))
    keys = dotted_keys(OmegaConf.to_container(cfg))
    assert {"model.arch.n_groups", "build.max_batch_size", "steps.0"} <= set(keys)
    assert unknown_key_problem([f"{key}=1" for key in keys]) is None


@pytest.mark.parametrize("override, meant", [
    ("build.max_batch_szie=16", "did you mean build.max_batch_size?"),
    ("biuld.max_batch_size=16", "did you mean build.max_batch_size?"),  # a mistyped middle part: the whole path
    ("model.arhc.n_grups=2", "did you mean model.arch.n_groups?"),
    ("eval.scenarios.0.batc=2", "did you mean eval.scenarios.0.batch?"),
    ("eval.scenarios.batch=2", "did you mean eval.scenarios.0.batch?"),  # a list's index left out
    ("recipie=quickstart", "did you mean recipe?"),
    ("xyz=1", "see python -m mambapipe --help"),
    ("model.arch.xyz=1", "see python -m mambapipe --help"),
])
def test_an_unknown_key_names_the_key_meant(override, meant):
    key = override.partition("=")[0]
    assert unknown_key_problem(["dtype=float32", override]) == f"{key} is not a config key; {meant}"


@pytest.mark.parametrize("argv", [
    ["-m", "dtype=float32,bfloat16"], ["--cfg", "job", "tp_size=2"], ["--help"], ["--version"],
    ["-sc", "install=bash"],
    ["recipe=codestral_tp2", "model=mamba_130m", "hydra/launcher=mambapipe_slurm", "model@model=tiny_mamba"],
    ["+extra=1", "++eval.extra=2", "~model.revision"],  # resolve_config names added keys nothing reads
    ["hydra.run.dir=x", "hydra.job.chdir=true"],
    ["model.allow_patterns=[a]", "eval.scenarios=[{batch:1}]", "steps.0=build"],
    ["xyz=["],  # does not parse: Hydra says so
    ["--bogus", "xyz=1"], ["--config-name", "mine", "xyz=1"], ["--config-dir", "/my/configs", "mygroup=a"],
])
def test_what_hydra_handles_itself_passes_silently(capsys, argv):
    assert unknown_key_problem(argv) is None
    assert capsys.readouterr() == ("", "")


def my_config_dir(root: Path) -> Path:
    """A user's --config-dir: a recipe of their own, and a config group the schema does not have as a key."""
    (root / "recipe").mkdir(parents=True)
    (root / "recipe" / "mine.yaml").write_text("# @package _global_\ndefaults:\n  - /hw: cpu\n")
    (root / "hw").mkdir()
    (root / "hw" / "cpu.yaml").write_text("# @package _global_\ndevice: cpu\n")
    return root


@pytest.mark.parametrize("spelling", [["-cd", "{}"], ["--config-dir", "{}"], ["--config-dir={}"]])
def test_a_config_dirs_command_line_is_checked_too(tmp_path, spelling):
    """A --config-dir adds recipes and groups (hw=cpu is a choice, not a key), but its recipes add no keys."""
    mine = my_config_dir(tmp_path / "mine")
    config_dir = [word.format(mine) for word in spelling]
    assert unknown_key_problem([*config_dir, "recipe=mine", "hw=cpu", "build.max_batch_size=4"]) is None
    problem = unknown_key_problem([*config_dir, "recipe=mine", "build.max_batch_szie=4"])
    assert problem == "build.max_batch_szie is not a config key; did you mean build.max_batch_size?"
    assert unknown_key_problem([*config_dir, "hwx=cpu"]) == "hwx is not a config key; did you mean hw?"


@pytest.mark.parametrize("spelling", [["--config-dir="], ["-cd", ""]])
def test_an_empty_config_dir_is_the_working_directory_as_hydra_reads_it(tmp_path, monkeypatch, spelling):
    """`-cd "$DIR"` with DIR unset: Hydra reads the working directory's configs; the checks were left out."""
    monkeypatch.chdir(my_config_dir(tmp_path / "mine"))
    assert unknown_key_problem([*spelling, "recipe=mine", "hw=cpu"]) is None
    assert unknown_key_problem([*spelling, "hwx=cpu"]) == "hwx is not a config key; did you mean hw?"


@pytest.mark.parametrize("entry", ["file://{dir}", "{dir}", "pkg://my_configs"])
def test_a_searchpaths_groups_are_choices_not_keys(tmp_path, monkeypatch, entry):
    """mygroup=a, a group that hydra.searchpath adds, was refused as 'mygroup is not a config key'."""
    my_config_dir(tmp_path / "my_configs")
    (tmp_path / "my_configs" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    searchpath = f"hydra.searchpath=[{entry.format(dir=tmp_path / 'my_configs')}]"
    assert unknown_key_problem([searchpath, "hw=cpu", "build.max_batch_size=4"]) is None
    assert unknown_key_problem([searchpath, "hwx=cpu"]) == "hwx is not a config key; did you mean hw?"
    assert unknown_key_problem(["hw=cpu"]) == "hw is not a config key; see python -m mambapipe --help"


@pytest.mark.parametrize("searchpath", [
    "hydra.searchpath=[file:///no/such/dir]", "hydra.searchpath=[pkg://no.such]", "hydra.searchpath=[pkg://]",
    "hydra.searchpath=[pkg://json.decoder]", "hydra.searchpath=[pkg://.x]", "hydra.searchpath=file:///a/string",
    "hydra.searchpath=[",
])
def test_a_searchpath_hydra_cannot_read_leaves_the_keys_checked(searchpath):
    assert unknown_key_problem([searchpath, "biuld.max_batch_size=4"]) == (
        "biuld.max_batch_size is not a config key; did you mean build.max_batch_size?")


@pytest.mark.parametrize("argv, problem", [
    (["cache", "ls"], "mambapipe: 'cache' is a command of mambapipe-cache, not an override: run `mambapipe-cache ls` "
                      "(or python -m mambapipe.pipeline.cache ls)"),
    (["cache"], "mambapipe: 'cache' is a command of mambapipe-cache, not an override: run `mambapipe-cache ls` "
                "(or python -m mambapipe.pipeline.cache ls)"),
    (["cache", "rm", "--step", "my build"], "run `mambapipe-cache rm --step 'my build'` "
                                            "(or python -m mambapipe.pipeline.cache rm --step 'my build')"),
    (["sweep"], "mambapipe: 'sweep' is a command of mambapipe-sweep, not an override: run `mambapipe-sweep summarize "
                "SWEEP_DIR` (or python -m mambapipe.sweep summarize SWEEP_DIR); to run a sweep, add -m"),
    (["sweep", "summarize", "multirun/x"], "run `mambapipe-sweep summarize multirun/x` "
                                           "(or python -m mambapipe.sweep summarize multirun/x)"),
    # What the other program takes: its --cache-dir option, and a sweep is this program's own -m.
    (["cache", "ls", "cache_dir=/tmp/c c"], "run `mambapipe-cache --cache-dir '/tmp/c c' ls` "
                                            "(or python -m mambapipe.pipeline.cache --cache-dir '/tmp/c c' ls)"),
    (["sweep", "dtype=float32,float16"], "mambapipe: 'sweep' is not an override; a sweep is this program's multirun: "
                                         "python -m mambapipe -m dtype=float32,float16 (comma-separated values"),
])
def test_a_command_of_another_program_points_to_it(argv, problem):
    assert problem in other_command_problem(argv)


@pytest.mark.parametrize("argv", [[], ["dtype=float32"], ["recipe=quickstart", "cache"], ["cache_dir=/tmp/c"],
                                  ["-m", "sweep"]])
def test_only_a_first_word_naming_another_program_is_one(argv):
    assert other_command_problem(argv) is None


def test_the_programs_pointed_to_are_the_console_scripts_and_modules_that_exist():
    scripts = tomllib.loads((Path(CONFIG_DIR).parent / "pyproject.toml").read_text())["project"]["scripts"]
    for other in OTHER_COMMANDS.values():
        script_module = scripts[other.script].partition(":")[0]  # mambapipe.sweep.cli for mambapipe.sweep
        assert script_module == other.module or script_module.startswith(other.module + "."), other
        module_file = Path(CONFIG_DIR).parent.joinpath(*other.module.split("."))
        assert (module_file / "__main__.py").is_file() or "__main__" in module_file.with_suffix(".py").read_text()


@pytest.mark.parametrize("argv, runs_none", [
    (["--version"], True), (["--help"], True), (["--he"], True), (["--hydra-help"], True), (["--info"], True),
    (["--cfg", "job", "dtype=bfloat16"], True), (["-sc", "install=bash"], True), (["cache", "ls"], True),
    (["sweep", "summarize", "s"], True), (["--no-such-option"], True),  # Hydra's parser refuses it and exits
    ([], False), (["dtype=bfloat16"], False), (["-m", "dtype=float32,bfloat16"], False), (["plan_only=true"], False),
])
def test_a_command_line_that_runs_no_step_is_told_apart(argv, runs_none):
    """What mambapipe.cli runs on a launcher's first rank alone, where a run is refused."""
    assert runs_no_step(argv) is runs_none


@pytest.mark.parametrize("argv", [
    ["recipe=quickstart", "dtype=float32", "eval.max_ite=3", "hydra.run.dir=run"],
    ["-m", "recipe=quickstart,mamba_130m", "dtype=float32,bfloat16", "steps=[download]", "hydra.sweep.dir=s"],
    ["dtype=float32,", "bfloat16", "plan_only=true"],  # a check that fixes the line parses its fix alone
])
def test_the_command_line_is_parsed_once_for_all_the_checks(monkeypatch, argv):
    """Each check parsed every override again with Hydra's grammar: the app's checks (mambapipe.app) made 6 passes
    over the overrides on the first line (24 parses of its 4), 8 with the sweep checks; now parse_command_line
    parses each once and the checks read what it parsed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from mambapipe import app

    parsed, parse = [], OverridesParser.parse_override
    monkeypatch.setattr(OverridesParser, "parse_override", lambda self, text: parsed.append(text) or parse(self, text))
    args = cli_keys.parse_command_line(argv)
    app.command_line_problem(args)
    assert {text: parsed.count(text) for text in args.overrides} == dict.fromkeys(args.overrides, 1)
