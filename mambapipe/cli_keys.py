"""The command line's keys, checked against the schema before Hydra composes: a mistyped key gets one line
naming the key it likely meant, where Hydra's own error spans six lines and suggests `+key`."""

from __future__ import annotations

import argparse
import io
import os
import shlex
from contextlib import redirect_stderr, redirect_stdout
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple, Optional, Union

from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException

from mambapipe.config import CONFIG_DIR, close_key, key_hint, schema_key

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


def _cache_arguments(words: list[str]) -> list[str]:
    """mambapipe's `cache_dir=DIR` is mambapipe-cache's `--cache-dir DIR`, an option before its command."""
    cache_dirs = [word.partition("=")[2] for word in words if word.startswith("cache_dir=")]
    rest = [word for word in words if not word.startswith("cache_dir=")]
    return ["--cache-dir", cache_dirs[-1], *rest] if cache_dirs else rest


class OtherCommand(NamedTuple):
    script: str
    module: str
    usage: str  # the arguments to suggest when none follow the word
    note: str = ""
    arguments: Callable[[list[str]], list[str]] = list  # the words after it, as the other program takes them


# Words a user may guess are commands of mambapipe, and the program that has them. Hydra would read one as an
# override without `=` and answer with a parse error of its grammar.
OTHER_COMMANDS = {
    "cache": OtherCommand("mambapipe-cache", "mambapipe.pipeline.cache", "ls", arguments=_cache_arguments),
    "sweep": OtherCommand("mambapipe-sweep", "mambapipe.sweep", "summarize SWEEP_DIR",
                          "; to run a sweep, add -m and comma-separated values (-m dtype=float16,bfloat16)"),
}


def other_command_problem(argv: list[str]) -> Optional[str]:
    """One line pointing to the right program when the command line starts with a command of another one
    (`python -m mambapipe cache ls` for `mambapipe-cache ls`); None otherwise."""
    if not argv or argv[0] not in OTHER_COMMANDS:
        return None
    word, words = argv[0], argv[1:]
    if word == "sweep" and any("=" in w for w in words):  # values to sweep over: a multirun of this program
        return (f"mambapipe: 'sweep' is not an override; a sweep is this program's multirun: python -m mambapipe -m "
                f"{shlex.join(words)} (comma-separated values run one job each)")
    other = OTHER_COMMANDS[word]
    arguments = shlex.join(other.arguments(words)) or other.usage
    return (f"mambapipe: {word!r} is a command of {other.script}, not an override: run `{other.script} "
            f"{arguments}` (or python -m {other.module} {arguments}){other.note}")


class ParsedCommandLine(NamedTuple):
    """The command line as the checks read it, parsed once for them all (parse_command_line): Hydra's grammar takes
    about 0.3 ms an override, and each check reads every one."""
    config_dir: Optional[str]  # its --config-dir, an existing folder ('' is the working directory); None for none
    overrides: list[str]
    searchpath: list[str]  # the hydra.searchpath it sets (_command_line_searchpath)
    multirun: bool  # -m: a sweep's jobs, each of one value of the sweeps (dtype=a,b)
    parsed: list[Union[Override, HydraException]]  # each of `overrides` as Hydra's grammar reads it, or its refusal

    def readable(self) -> list[Override]:
        """The overrides Hydra's grammar reads, in order (override.input_line is the text); those it refuses are
        grammar_problem's to name."""
        return [override for override in self.parsed if isinstance(override, Override)]

    def with_overrides(self, overrides: list[str]) -> ParsedCommandLine:
        """The same command line with other overrides (a check's fix of them), parsed."""
        return self._replace(overrides=overrides, parsed=parse_overrides(overrides))


def parse_overrides(texts: list[str]) -> list[Union[Override, HydraException]]:
    """Each override as Hydra's grammar reads it, or the error it refuses it with."""
    parser, parsed = OverridesParser.create(), []
    for text in texts:
        try:
            parsed.append(parser.parse_override(text))
        except HydraException as error:
            parsed.append(error)
    return parsed


def unknown_key_problem(args: ParsedCommandLine) -> Optional[str]:
    """The first override of `args` that sets a key the schema lacks, as one line with the key it likely meant.
    Checked before Hydra composes: its own error for a mistyped key spans six lines and suggests `+key`, which
    would add the typo as a new key that no step reads. A --config-dir or hydra.searchpath adds recipes and config
    groups but no keys: the schema is the primary config's first default, and Hydra refuses a key it lacks in any
    config."""
    groups = _group_names(args)
    for key in _changed_keys(args.readable(), groups):
        meant = schema_key(key) or close_key(key, groups)
        if meant != key:
            return f"{key} is not a config key; {key_hint(meant)}"
    return None


def _group_names(args: ParsedCommandLine) -> set[str]:
    """The config groups at the top of the configs the command line reaches: configs/, its --config-dir and its
    hydra.searchpath."""
    folders = [Path(CONFIG_DIR), *([Path(args.config_dir)] if args.config_dir is not None else []),
               *map(_searchpath_folder, args.searchpath)]
    return {p.name for folder in folders if folder is not None and folder.is_dir()
            for p in folder.iterdir() if p.is_dir()}


def _command_line_searchpath(texts: list[str], parsed: list[Union[Override, HydraException]]) -> list[str]:
    """The hydra.searchpath the command line sets (its first, which Hydra takes): the config dirs (file://DIR, or
    DIR) and packages (pkg://module) whose recipes and config groups it adds; [] for none, or one Hydra refuses."""
    for text, override in zip(texts, parsed):
        if isinstance(override, HydraException):
            if "hydra.searchpath" in text:
                return []
            continue
        if override.key_or_group == "hydra.searchpath":
            value = override.value()
            return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else []
    return []


def _searchpath_folder(entry: str) -> Optional[Traversable]:
    """The folder of a hydra.searchpath entry as Hydra reads it; None for a package that does not import, or
    another kind of source."""
    scheme, _, where = entry.rpartition("://")
    if scheme in ("", "file"):
        return Path(where)
    if scheme == "pkg":
        try:
            return resources.files(where.replace("/", "."))
        except (ImportError, ValueError, TypeError):  # no such package, no name, a module: Hydra reports the entry
            return None
    return None


def parse_command_line(argv: list[str]) -> Optional[ParsedCommandLine]:
    """The command line as Hydra's own argument parser reads it; None when Hydra will refuse the line itself (a
    --config-dir that is no directory among its mistakes), or when its primary config may not be this one:
    another config (--config-name, --config-path), a rerun, or -sc (whose `install=bash` is no override). An empty
    --config-dir (`-cd "$DIR"` with DIR unset) is the working directory, as Hydra reads it."""
    args = _hydra_arguments(argv)
    if args is None or args.shell_completion or args.config_path or args.config_name or args.experimental_rerun:
        return None
    if args.config_dir is not None and not os.path.isdir(os.path.abspath(args.config_dir)):
        return None
    parsed = parse_overrides(args.overrides)
    searchpath = _command_line_searchpath(args.overrides, parsed)
    return ParsedCommandLine(args.config_dir, args.overrides, searchpath, args.multirun, parsed)


def runs_no_step(argv: list[str]) -> bool:
    """Whether the command line runs no step: it shows something (--help, --hydra-help, --version, --info, --cfg),
    prints tab completion's script (-sc), is a command of another program (`cache ls`), or is one Hydra's parser
    refuses (it says so and exits). mambapipe.cli runs such a line on a launcher's first rank alone."""
    if argv and argv[0] in OTHER_COMMANDS:
        return True
    args = _hydra_arguments(argv)
    return args is None or bool(args.help or args.hydra_help or args.info or args.cfg or args.shell_completion)


def _hydra_arguments(argv: list[str]) -> Optional[argparse.Namespace]:
    """The command line as Hydra's own argument parser reads it; None where it exits instead (a mistake, or
    --version)."""
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):  # argparse's usage, --version
            return get_args_parser().parse_args(argv)
    except SystemExit:
        return None


def _changed_keys(overrides: list[Override], groups: set[str]) -> list[str]:
    """The config keys `overrides` (those Hydra's grammar reads) change. Left out: `+key`/`++key`/`~key`
    (resolve_config names added keys that nothing reads), Hydra's own keys, and config group choices (recipe=...,
    hydra/launcher=..., group@package=...)."""
    return [override.key_or_group for override in overrides
            if override.type == OverrideType.CHANGE and override.package is None and "/" not in override.key_or_group
            and override.key_or_group not in groups and override.key_or_group.partition(".")[0] != "hydra"]
