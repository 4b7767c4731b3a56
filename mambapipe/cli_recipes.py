"""A recipe file's mistakes, found before any job runs: each job's config is composed as Hydra will compose it, and
what Hydra refuses in a recipe file (or in another config file of one's own) is one line naming the file, the key
and what to write instead. Hydra's own report is a ~100-line traceback for a YAML syntax error and 4 to 18 lines
otherwise, which lose a key's path inside a list (eval.scenarios) and do not name the usual causes: a recipe
without `# @package _global_` on its first line, or a defaults entry without `override /`. HYDRA_FULL_ERROR=1
leaves the check out, so that Hydra's full traceback stays there for debugging."""

from __future__ import annotations

import itertools
import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Optional

import yaml
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.types import RunMode
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from mambapipe.cli_keys import ParsedCommandLine
from mambapipe.cli_values import (
    HydraInternalsChanged,
    config_file,
    config_loader,
    config_repository,
    hydra_internals,
    listed_sweep,
    must_override,
    shape_problem,
)
from mambapipe.config import CONFIG_DIR, close_key, key_hint, schema_key, unknown_keys
from mambapipe.pipeline.step import first_line

_PACKAGE_LINE = re.compile(r"^\s*#\s*@package\b", re.MULTILINE)


class _ConfigFile(NamedTuple):
    path: str
    package: Optional[str]  # its `# @package` line's, None without one
    text: str
    defaults: Any  # its defaults list as written
    placed: Optional[dict]  # its keys where Hydra puts them (under its group, or at the top for _global_)


class _HydraConfigs:
    """The configs Hydra finds for the command line (this package's configs/, its plugins', the --config-dir, the
    hydra.searchpath), read through Hydra's own config loader (hydra._internal: a change in it leaves the check to
    Hydra, as the value check's)."""

    def __init__(self, config_dir: Optional[str], searchpath: list[str]):
        with hydra_internals():
            self._loader = config_loader(config_dir, [])  # its load_configuration adds the overrides' searchpath
            self._repository = config_repository(config_dir, searchpath)

    def compose_error(self, overrides: list[str]) -> Optional[Exception]:
        """What Hydra refuses the job's config with, as the run would compose it; None when it composes."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the run composes again and shows them
                self._loader.load_configuration("config", overrides, RunMode.RUN)
        except Exception as error:  # Hydra's verdict on the config (the run would stop on it), whatever its type
            return error
        return None

    def is_group(self, name: str) -> bool:
        with hydra_internals():
            return self._repository.group_exists(name)

    def options(self, group: str) -> list[str]:
        with hydra_internals():
            return self._repository.get_group_options(group, results_filter=ObjectType.CONFIG)

    def file(self, config_path: str) -> Optional[_ConfigFile]:
        """The file of a config (`recipe/m1`), None when it is no file (a ConfigStore schema, a package's)."""
        with hydra_internals():
            found = self._repository.load_config(config_path)
            source, package = (found.path, found.header["package"]) if found else ("", None)
        path = config_file(source, config_path)
        if path is None:
            return None
        content = OmegaConf.to_container(OmegaConf.load(path))
        content = content if isinstance(content, dict) else {}
        defaults = content.pop("defaults", None)
        # Without a `# @package` line Hydra puts a config's keys under its group (model/x.yaml: model.*).
        prefix = config_path.rpartition("/")[0].replace("/", ".") if package is None else package
        placed = _nested(prefix, content) if package in (None, "_global_") else None
        return _ConfigFile(path, package, Path(path).read_text(), defaults, placed)


def _nested(prefix: str, content: dict) -> dict:
    """`content` under the package `prefix` (a.b: {a: {b: content}}; _global_: at the top)."""
    for part in reversed([] if prefix == "_global_" else prefix.split(".")):
        content = {part: content}
    return content


def recipe_problem(args: ParsedCommandLine) -> Optional[str]:
    """The first job of `args` whose config Hydra refuses for a mistake in a config file, as one line naming the
    file (`recipe=m1: DIR/recipe/m1.yaml: build.max_batch_szie is not a config key; did you mean
    build.max_batch_size?`), or for the command line's choice of a config group that no defaults list picks, which
    only composing finds (`mygroup=a`, for `+mygroup=a`); None when every job composes, when the mistake is the
    command line's otherwise (which the other checks, or Hydra, report), or when Hydra cannot be asked so."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return None
    try:
        configs = _HydraConfigs(args.config_dir, args.searchpath)
        for job in _jobs(args, configs.is_group):
            error = configs.compose_error([override.input_line for override in job])
            problem = error and (_unpicked_group_problem(error, job) or _config_file_problem(error, job, configs))
            if problem:
                return problem
    # Explaining the error reads the config files again: one that cannot be read (not UTF-8, gone) is Hydra's to
    # report, as it is where no explanation is found.
    except (HydraInternalsChanged, OSError, ValueError, OmegaConfBaseException, yaml.YAMLError):
        return None
    return None


def _jobs(args: ParsedCommandLine, is_group: Callable[[str], bool]) -> list[list[Override]]:
    """The overrides of each job whose config files differ: one per combination of the config group choices that
    a sweep lists (recipe=a,b model=c,d). The sweeps of values are left out: the value check checked each, and
    Hydra sets them after every config file. No job when some override does not parse: Hydra reports that."""
    if len(args.readable()) < len(args.parsed):
        return []
    parser, fixed, swept = OverridesParser.create(), [], []  # for a sweep's values
    for override in args.readable():
        if not override.is_sweep_override():
            fixed.append(override)
        elif is_group(override.key_or_group) and (values := listed_sweep(parser, override)) is not None:
            swept.append(values)
    return [fixed + list(choices) for choices in itertools.product(*swept)]


def _unpicked_group_problem(error: Exception, job: list[Override]) -> Optional[str]:
    """A choice of a config group that no defaults list picks (mygroup=a, a group of the --config-dir or the
    hydra.searchpath), which Hydra refuses as an override of nothing: what adds it instead."""
    unpicked = re.match(r"Could not override '([^']+)'\. No match in the defaults list", str(error))
    override = unpicked and next((o for o in job if o.key_or_group == unpicked[1]), None)
    if not override:
        return None
    return (f"{override.input_line}: {override.key_or_group} is a config group that no defaults list picks, so there "
            f"is no choice to change: add it with +{override.input_line}")


def _config_file_problem(error: Exception, job: list[Override], configs: _HydraConfigs) -> Optional[str]:
    """`error` as one line naming the config file at fault, None when no config file is."""
    label, recipes = _recipes(job)
    syntax = _yaml_problem(error)
    if syntax:
        return f"{label}: {syntax}"
    for name in recipes:
        file = configs.file(f"recipe/{name}")
        problem = file and _recipe_file_problem(file, configs)
        if problem:
            return f"{label}: {file.path}: {problem}"
    # Hydra's message names the config it was composing: "In 'recipe/m1': ..."; 'config' is mambapipe's own,
    # whose choices the command line made.
    at_fault = re.match(r"In '([^']+)': (.*)", str(error), re.DOTALL)
    file = configs.file(at_fault[1]) if at_fault and at_fault[1] != "config" else None
    if file is None:
        return None
    return f"{label}: {file.path}: {_key_problem(error, file) or _hydras_words(error, at_fault[2])}"


def _recipes(job: list[Override]) -> tuple[str, list[str]]:
    """The job's recipe choice as the command line gives it (`recipe=m1`), and the recipes it names: mambapipe's
    config.yaml's choice where the command line makes none."""
    chosen = next((o for o in job if o.key_or_group == "recipe" and o.type == OverrideType.CHANGE), None)
    if chosen is None:
        defaults = OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / "config.yaml").defaults)
        default = next(entry["recipe"] for entry in defaults if isinstance(entry, dict) and "recipe" in entry)
        return f"recipe={default}", [default]
    # A list (recipe=[a,b]) never gets here: the value check refuses it first (SINGLE_CHOICE_GROUPS).
    return chosen.input_line, [chosen.value()] if isinstance(chosen.value(), str) else []


def _yaml_problem(error: BaseException) -> Optional[str]:
    """`FILE line N: what YAML could not read`, with N as an editor counts lines; None for other errors."""
    while error is not None and not isinstance(error, yaml.MarkedYAMLError):
        error = error.__cause__ or error.__context__
    if error is None:
        return None
    # A scanner's context is where the token it could not finish starts (a key without its ':', a quote never
    # closed): the line to fix. A parser's is the whole block the bad line is in, and its problem mark that line.
    scanner = isinstance(error, yaml.scanner.ScannerError) and error.context_mark is not None
    mark = error.context_mark if scanner else error.problem_mark or error.context_mark
    return f"{mark.name} line {mark.line + 1}: {error.problem}"


def _recipe_file_problem(file: _ConfigFile, configs: _HydraConfigs) -> Optional[str]:
    """The mistakes of a recipe file that Hydra's errors do not name: its `# @package _global_` line missing or
    not first, and a defaults entry that does not override a group's choice as `- override /group: option`."""
    if file.package is None:  # Hydra then puts its keys under recipe., which the schema lacks
        if _PACKAGE_LINE.search(file.text):
            return "move its '# @package _global_' line to the top: Hydra reads it only above every other line"
        return "add '# @package _global_' as its first line (without it Hydra puts its keys under recipe.)"
    for entry in file.defaults if isinstance(file.defaults, list) else []:
        if isinstance(entry, dict) and len(entry) == 1:
            problem = _defaults_entry_problem(*next(iter(entry.items())), configs)
            if problem:
                return problem
    return None


def _defaults_entry_problem(spec: str, choice: Any, configs: _HydraConfigs) -> Optional[str]:
    """A defaults entry `- spec: choice` that names a group of the primary config (model) but does not override
    its choice as `- override /model: tiny_mamba`, or overrides it with an option the group lacks."""
    words = str(spec).split()
    group = words[-1].lstrip("/")
    if "@" in group or not isinstance(choice, str) or configs.is_group(f"recipe/{group}"):
        return None  # a config added at a package of its own, a choice removed, or a group of the recipe's own
    if not configs.is_group(group):
        return None
    if "override" not in words or not words[-1].startswith("/"):
        return must_override(spec, group, choice)
    names = configs.options(group)
    if choice in names:
        return None
    meant = close_key(choice, names)
    suggestion = f"; did you mean {meant}?" if meant else ""
    return f"its defaults entry '- {spec}: {choice}': no such {group}{suggestion} ({group}s: {', '.join(names)})"


def _key_problem(error: Exception, file: _ConfigFile) -> Optional[str]:
    """A key of `file` that the schema lacks, or a value its type refuses, named by its whole path
    (eval.scenarios[0].input_len, which OmegaConf's error gives as input_len) with what to write instead."""
    cause = error.__cause__ or error.__context__
    if file.placed is None or not isinstance(cause, (ConfigKeyError, ValidationError)):
        return None
    if isinstance(cause, ConfigKeyError):
        key = _located(cause, unknown_keys({k: v for k, v in file.placed.items() if k != "hydra"}))
        if key is None:
            return None
        meant = schema_key(re.sub(r"\[(\d+)\]", r".\1", key))  # as schema_key takes an index: eval.scenarios.0.batch
        meant = meant and re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", meant)
        return f"{key} is not a config key; {key_hint(meant)}"
    misshapen = _misshapen_problem(file.placed)  # build: 3, whose error names neither key nor value
    if misshapen:
        return misshapen
    values = dict(_leaves(file.placed))
    key = _located(cause, [path for path, value in values.items() if str(value) == str(cause.value)])
    return key and f"{key}: {first_line(cause)}"


def _misshapen_problem(node: dict, prefix: str = "") -> Optional[str]:
    """The first key of a config file's `node` (its keys where Hydra puts them) that is given one value where the
    schema makes it a list or a group of settings (steps: evaluate, build: 3), with what to write instead."""
    for key, value in node.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        problem = shape_problem(dotted, value, in_yaml=True)
        if problem is None and isinstance(value, dict):
            problem = _misshapen_problem(value, dotted)
        if problem:
            return problem
    return None


def _located(cause: OmegaConfBaseException, paths: list[str]) -> Optional[str]:
    """Which of `paths` (full keys of a config file) OmegaConf's error is about: its full key, or, where it lost
    the path (a list item's key is merged on its own), the path that ends in its key."""
    if cause.full_key in paths:
        return cause.full_key
    return next((path for path in paths if path.rpartition(".")[2] == str(cause.key)), None)


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(full key as OmegaConf writes it, value) for each plain value of `node`: eval.scenarios[0].batch."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, f"{prefix}[{index}]")
    else:
        yield prefix, node


def _hydras_words(error: Exception, message: str) -> str:
    """Hydra's message on one line: OmegaConf's error with its key, or Hydra's lines up to the first blank one."""
    cause = error.__cause__ or error.__context__
    if isinstance(cause, OmegaConfBaseException):
        return f"{cause.full_key}: {first_line(cause)}" if cause.full_key else first_line(cause)
    return " ".join(line.strip() for line in message.split("\n\n")[0].splitlines())
