"""Paths on the command line as the shell and Hydra leave them: a `~` after `=`, which the shell does not expand
(Hydra's override grammar refuses it unquoted, and its --config-dir takes it as a folder named ~), and a recipe
given as its file's path, or a --config-dir that is the recipe/ folder itself, where Hydra looks for
DIR/recipe/NAME.yaml. Beside the ~, whatever else that grammar refuses (an empty value between commas: -m
recipe=a,) is one line too."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Callable, Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from mambapipe.cli_keys import ParsedCommandLine
from mambapipe.pipeline.runner import hydra_quoted

CONFIG_DIR_OPTIONS = ("--config-dir", "-cd")
# The keys whose ~ mambapipe expands (resolve_config, the download and evaluate steps).
HOME_EXPANDED_KEYS = ("model.path", "model.tokenizer", "eval.dataset", "cache_dir")
# An item of a value (between commas, brackets, braces) that holds a ~ and no quote.
_UNQUOTED_TILDE = re.compile(r"""[^,\[\]{}:\s'"]*~[^,\[\]{}'"]*""")
# A comma with no value before it (at the start, after another comma or an opening bracket) or after it; a quoted
# string is matched whole, to be kept as it is.
_EMPTY_VALUE = re.compile(r"""(?P<quoted>'[^']*'|"[^"]*")|,\s*(?=[,\])]|$)|(?:^|(?<=[\[(]))\s*,""")
GRAMMAR_DOCS = "https://hydra.cc/docs/1.2/advanced/override_grammar/basic"  # as Hydra 1.3 links it


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


def tilde_problem(args: ParsedCommandLine) -> Optional[str]:
    """The first override whose value holds a ~ out of quotes, which Hydra's grammar refuses ('token recognition
    error at: ~', with a link to its docs), as one line giving the override with that value quoted."""
    parser = OverridesParser.create()  # for the value quoted
    for text, parsed in zip(args.overrides, args.parsed):
        key, equals, value = text.partition("=")
        if not equals or "~" not in value or not isinstance(parsed, HydraException):
            continue
        quoted = key + "=" + _UNQUOTED_TILDE.sub(lambda item: f'"{item[0]}"', value)
        write = f"write {shlex.quote(quoted)}" if _parses(parser, quoted) else "put the value in quotes"
        home = key.lstrip("+") in HOME_EXPANDED_KEYS and any(i.startswith("~") for i in _UNQUOTED_TILDE.findall(value))
        expands = " (mambapipe expands the ~ itself; the shell does not, after =)" if home else ""
        return f"{text}: Hydra reads ~ only in quotes: {write}{expands}"
    return None


def grammar_problem(args: ParsedCommandLine) -> Optional[str]:
    """The first override that Hydra's grammar refuses, as one line naming it and what to write: Hydra's report
    spans four lines and, for most such mistakes (a trailing comma: -m recipe=a,), names neither the override nor a
    fix. A ~ out of quotes is tilde_problem's."""
    parser = OverridesParser.create()  # for the fixes
    for text, parsed in zip(args.overrides, args.parsed):
        if isinstance(parsed, HydraException):
            return _grammar_fix(parser, text, str(parsed).partition(" expecting ")[0])  # less ANTLR's token list
    return None


def _grammar_fix(parser: OverridesParser, text: str, reason: str) -> str:
    """What to write for the override `text` that Hydra's grammar refuses for `reason`: without its empty values
    between commas, or, where its value is plainly one string (no brackets, commas or quotes), that string quoted."""
    key, equals, value = text.partition("=")
    if not equals:
        return f"{text}: not an override, which reads key=value (recipe=NAME picks a recipe)"
    fixes = [f"{key}={_EMPTY_VALUE.sub(lambda found: found['quoted'] or '', value)}"]
    if not re.search(r"""[\[\]{}(),'"]""", value):
        fixes.append(f"{key}={hydra_quoted(value)}")
    fixed = next((fix for fix in fixes if fix != text and _parses(parser, fix)), None)
    if fixed is None:
        return f"{text}: Hydra cannot parse it ({reason}); see {GRAMMAR_DOCS}"
    if fixed == fixes[0]:
        return f"{text}: Hydra cannot parse an empty value between commas: write {shlex.quote(fixed)}"
    return f"{text}: Hydra cannot parse it ({reason}); put the value in quotes: write {shlex.quote(fixed)}"


def _parses(parser: OverridesParser, text: str) -> bool:
    try:
        parser.parse_override(text)
    except HydraException:
        return False
    return True


def recipe_place_hint(name: str, config_dir: Optional[str], recipe_file: Callable[[str], Optional[str]]) -> str:
    """How to run a recipe that Hydra does not find where its file is plain to see, to end the 'no such recipe'
    line with: `recipe=NAME` (a path to a recipe Hydra finds by that name: the project's recipes/, seen as
    configs/recipe, or one of the -cd), `recipe=DIR/recipe/NAME.yaml` (a path, where Hydra takes a name) or
    `-cd DIR/recipe recipe=NAME` (the recipe/ folder itself, where Hydra looks in DIR/recipe/recipe/); '' when
    none is the case. `recipe_file(NAME)` is the file Hydra reads for recipe=NAME, None for none."""
    path = Path(name).expanduser()
    if not path.name:  # recipe=, recipe=. or recipe=/: no file is named
        return ""
    file = path if path.suffix == ".yaml" else path.with_name(f"{path.name}.yaml")
    if ("/" in name or path.suffix == ".yaml") and file.is_file():
        return f"; recipe= takes a recipe's name, not its path: {_how_to_run(file, recipe_file(file.stem))}"
    if config_dir is None:
        return ""
    file = Path(config_dir).expanduser() / f"{name}.yaml"
    if file.is_file() and not (file.parent / "recipe").is_dir():
        return f"; -cd {config_dir} holds {file.name} but no recipe/ folder, where Hydra looks: {_how_to_run(file)}"
    return ""


def _how_to_run(file: Path, found: Optional[str] = None) -> str:
    """The arguments that run the recipe `file`, or where to put it first: its name alone where it is the file
    Hydra finds by that name (`found`), else -cd naming the folder above recipe/."""
    if found is not None and os.path.exists(found) and os.path.samefile(found, file):
        return f"write recipe={file.stem}"
    if file.parent.name == "recipe":
        return f"use -cd {shlex.quote(str(file.parent.parent))} recipe={file.stem}"
    folder = shlex.quote(str(file.parent))
    return f"put it in {folder}/recipe/ and give -cd {folder} recipe={file.stem}"
