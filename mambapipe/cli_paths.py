"""Paths on the command line as the shell and Hydra leave them: a `~` after `=`, which the shell does not expand
(Hydra's override grammar refuses it unquoted, and its --config-dir takes it as a folder named ~)."""

from __future__ import annotations

import os
import re
import shlex
from typing import Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from mambapipe.cli_keys import parse_command_line

CONFIG_DIR_OPTIONS = ("--config-dir", "-cd")
# The keys whose ~ mambapipe expands (resolve_config, the download and evaluate steps).
HOME_EXPANDED_KEYS = ("model.path", "model.tokenizer", "eval.dataset", "cache_dir")
# An item of a value (between commas, brackets, braces) that holds a ~ and no quote.
_UNQUOTED_TILDE = re.compile(r"""[^,\[\]{}:\s'"]*~[^,\[\]{}'"]*""")


def expand_config_dir(argv: list[str]) -> list[str]:
    """`argv` with a --config-dir (-cd) that starts with ~ expanded, as the shell expands one in a word of its own:
    it leaves `--config-dir=~/dir` (or a quoted '~/dir') as typed, and Hydra would look for ./~/dir."""
    expanded, value_next = [], False
    for word in argv:
        option, equals, value = word.partition("=")
        if value_next:
            word = os.path.expanduser(word)
        elif equals and option in CONFIG_DIR_OPTIONS:
            word = f"{option}={os.path.expanduser(value)}"
        value_next = word in CONFIG_DIR_OPTIONS
        expanded.append(word)
    return expanded


def tilde_problem(argv: list[str]) -> Optional[str]:
    """The first override whose value holds a ~ out of quotes, which Hydra's grammar refuses ('token recognition
    error at: ~', with a link to its docs), as one line giving the override with that value quoted."""
    args = parse_command_line(argv)
    if args is None:
        return None
    parser = OverridesParser.create()
    for text in args.overrides:
        key, equals, value = text.partition("=")
        if not equals or "~" not in value or _parses(parser, text):
            continue
        quoted = key + "=" + _UNQUOTED_TILDE.sub(lambda item: f'"{item[0]}"', value)
        write = f"write {shlex.quote(quoted)}" if _parses(parser, quoted) else "put the value in quotes"
        home = key.lstrip("+") in HOME_EXPANDED_KEYS and any(i.startswith("~") for i in _UNQUOTED_TILDE.findall(value))
        expands = " (mambapipe expands the ~ itself; the shell does not, after =)" if home else ""
        return f"{text}: Hydra reads ~ only in quotes: {write}{expands}"
    return None


def _parses(parser: OverridesParser, text: str) -> bool:
    try:
        parser.parse_override(text)
    except HydraException:
        return False
    return True
