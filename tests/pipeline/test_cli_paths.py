"""The command line's paths as the shell and Hydra leave them (mambapipe.cli_paths): a ~ after `=`."""

from __future__ import annotations

import os

import pytest

from mambapipe.cli_paths import expand_config_dir, tilde_problem

HOME = os.path.expanduser("~")


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
