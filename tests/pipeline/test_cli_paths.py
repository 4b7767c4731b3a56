"""The command line's paths as the shell and Hydra leave them (mambapipe.cli_paths): a ~ after `=`, and a recipe
given as its file's path or beside a -cd that is the recipe/ folder itself."""

from __future__ import annotations

import os
import shlex

import pytest
from cli_checks import on_argv
from hydra.core.override_parser.overrides_parser import OverridesParser

from mambapipe import cli_paths
from mambapipe.cli_paths import expand_config_dir, recipe_place_hint

tilde_problem = on_argv(cli_paths.tilde_problem)
grammar_problem = on_argv(cli_paths.grammar_problem)

HOME = os.path.expanduser("~")
NOT_FOUND = {}.get  # recipe_place_hint's recipe_file where Hydra finds no recipe by the name


@pytest.mark.parametrize("argv, expanded", [
    (["--config-dir=~/mine", "recipe=m1"], [f"--config-dir={HOME}/mine", "recipe=m1"]),  # the shell leaves it so
    (["-cd=~/mine"], [f"-cd={HOME}/mine"]),
    (["-cd", "~/mine"], ["-cd", f"{HOME}/mine"]),  # quoted: '~/mine'
    (["recipe=m1", "--config-dir", "~/mine"], ["recipe=m1", "--config-dir", f"{HOME}/mine"]),
    (["-cd", "/abs/~", "model.path=~/m", "~model.tokenizer"], ["-cd", "/abs/~", "model.path=~/m", "~model.tokenizer"]),
])
def test_a_config_dir_starting_with_a_tilde_is_expanded_as_the_shell_would(argv, expanded):
    """Hydra took `--config-dir=~/dir` as ./~/dir: `Additional config directory '/cwd/~/dir' not found` (QA)."""
    assert expand_config_dir(argv) == expanded


EXPANDS = " (mambapipe expands the ~ itself; the shell does not, after =)"


@pytest.mark.parametrize("override, write", [
    ("model.path=~/m1hf", "write 'model.path=\"~/m1hf\"'" + EXPANDS),
    ("+model.tokenizer=~/tok", "write '+model.tokenizer=\"~/tok\"'" + EXPANDS),
    ("model.path=~/a,~/b", "write 'model.path=\"~/a\",\"~/b\"'" + EXPANDS),  # a sweep: each value quoted
    ("eval.dataset=[~/a.jsonl]", "write 'eval.dataset=[\"~/a.jsonl\"]'" + EXPANDS),
    ("model.path=/a~b/c", "write 'model.path=\"/a~b/c\"'"),  # no home directory meant
    ("model.path=~/my models", "write 'model.path=\"~/my models\"'" + EXPANDS),  # quoted for the shell
    ("hydra.run.dir=~/runs", "write 'hydra.run.dir=\"~/runs\"'"),  # Hydra's key: not expanded, not promised
])
def test_an_unquoted_tilde_in_a_value_is_one_line_giving_it_quoted(override, write):
    """Hydra's report is `LexerNoViableAltException: model.path=~/m1hf` with a caret and a link to its grammar."""
    assert tilde_problem(["plan_only=true", override]) == f"{override}: Hydra reads ~ only in quotes: {write}"


@pytest.mark.parametrize("argv", [["model.path=\"~/m1hf\""], ["model.path='~/m'"], ["~model.path"],
                                  ["dtype=["], ["-sc", "install=bash"]])
def test_what_hydra_parses_or_fails_on_for_another_reason_passes(argv):
    assert tilde_problem(argv) is None


EMPTY = "Hydra cannot parse an empty value between commas: write "


@pytest.mark.parametrize("override, problem", [
    ("recipe=quickstart,", EMPTY + "recipe=quickstart"),  # Hydra: "mismatched input '<EOF>' expecting {...}"
    ("recipe=,quickstart", EMPTY + "recipe=quickstart"),
    ("dtype=float16,,float32", EMPTY + "dtype=float16,float32"),
    ("steps=[build,]", EMPTY + "'steps=[build]'"),
    ("tp_size=choice(1,)", EMPTY + "'tp_size=choice(1)'"),
    ("model.name='a,,b',", EMPTY + shlex.quote("model.name='a,,b'")),  # a quoted value's commas are its own
    ("model.name=a=b", "Hydra cannot parse it (mismatched input '='); put the value in quotes: write "
                       "'model.name=\"a=b\"'"),
    ("model.name=é", "Hydra cannot parse it (token recognition error at: 'é'); put the value in quotes: write "
                     "'model.name=\"é\"'"),
    ("steps=[", f"Hydra cannot parse it (no viable alternative at input '['); see {cli_paths.GRAMMAR_DOCS}"),
    ("quickstart", "not an override, which reads key=value (recipe=NAME picks a recipe)"),
])
def test_an_override_hydra_cannot_parse_is_one_line_naming_it(override, problem):
    """Hydra's report spans four lines, and for a trailing comma (-m recipe=a,) names neither the override nor what
    to write: `mismatched input '<EOF>' expecting {':', BRACKET_OPEN, ...}` and a link to its grammar."""
    assert grammar_problem(["-m", "plan_only=true", override]) == f"{override}: {problem}"
    written = problem.partition(": write ")[2]
    if written:  # what it says to write parses
        OverridesParser.create().parse_override(shlex.split(written)[0])


@pytest.mark.parametrize("argv", [
    ["-m", "recipe=quickstart,mamba_130m", "tp_size=range(1,3)", "model=glob(tiny_*)", "steps=[build],[evaluate]"],
    ["model.name='a,b'", "model.path=\"~/m\"", "~model.tokenizer", "+extra=[]", "eval.scenarios=[{batch:1}]"],
    ["-sc", "install=bash"], ["--config-name", "mine", "dtype=["],  # Hydra reads these itself
])
def test_what_hydras_grammar_reads_passes(argv):
    assert grammar_problem(argv) is None


def test_a_recipe_given_as_its_files_path_is_told_the_name_and_config_dir(tmp_path):
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "m1.yaml").write_text("# @package _global_\n")
    hint = f"; recipe= takes a recipe's name, not its path: use -cd {tmp_path} recipe=m1"
    assert recipe_place_hint(str(tmp_path / "recipe" / "m1.yaml"), None, NOT_FOUND) == hint
    assert recipe_place_hint(str(tmp_path / "recipe" / "m1"), str(tmp_path), NOT_FOUND) == hint
    (tmp_path / "loose.yaml").write_text("# @package _global_\n")
    assert recipe_place_hint(str(tmp_path / "loose.yaml"), None, NOT_FOUND) == (
        f"; recipe= takes a recipe's name, not its path: put it in {tmp_path}/recipe/ and give -cd {tmp_path} "
        "recipe=loose")


@pytest.mark.parametrize("given", ["recipe/m1.yaml", "recipe/m1", "link/m1.yaml"])
def test_a_path_to_a_recipe_hydra_finds_by_its_name_is_told_the_name_alone(tmp_path, given):
    """A path to one of the project's recipes (recipes/m1.yaml, configs/recipe being a link to recipes/) was told
    to put it in recipes/recipe/ and give -cd recipes: Hydra finds it as recipe=m1 already."""
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "m1.yaml").write_text("# @package _global_\n")
    (tmp_path / "link").symlink_to(tmp_path / "recipe")
    found = {"m1": str(tmp_path / "recipe" / "m1.yaml")}.get
    assert recipe_place_hint(str(tmp_path / given), None, found) == (
        "; recipe= takes a recipe's name, not its path: write recipe=m1")
    (tmp_path / "elsewhere").mkdir()  # a file of the same name that is not the one Hydra finds: how to run it
    (tmp_path / "elsewhere" / "m1.yaml").write_text("# @package _global_\n")
    assert recipe_place_hint(str(tmp_path / "elsewhere" / "m1.yaml"), None, found) == (
        f"; recipe= takes a recipe's name, not its path: put it in {tmp_path}/elsewhere/recipe/ and give "
        f"-cd {tmp_path}/elsewhere recipe=m1")


def test_a_config_dir_that_is_the_recipe_folder_itself_is_told_its_parent(tmp_path):
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "m1.yaml").write_text("# @package _global_\n")
    assert recipe_place_hint("m1", str(tmp_path / "recipe"), NOT_FOUND) == (
        f"; -cd {tmp_path / 'recipe'} holds m1.yaml but no recipe/ folder, where Hydra looks: use -cd {tmp_path} "
        "recipe=m1")


@pytest.mark.parametrize("name, config_dir", [("m2", "{tmp}/recipe"), ("m1", None), ("m1", "{tmp}"),
                                              ("{tmp}/recipe/m2.yaml", None),
                                              ("", None), (".", None), ("/", None), ("", "{tmp}/recipe")])
def test_no_hint_where_no_such_file_is_in_sight(tmp_path, name, config_dir):
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "m1.yaml").write_text("# @package _global_\n")
    config_dir = config_dir and config_dir.format(tmp=tmp_path)
    assert recipe_place_hint(name.format(tmp=tmp_path), config_dir, NOT_FOUND) == ""
