"""The command line's values, checked before Hydra composes: a config group option that does not exist
(`recipe=quickstrat`) or a value that its key's type refuses (`dtype=float8`) is one line naming it, where
Hydra's own errors take 5 to 20 lines. Each value of a sweep (`-m dtype=float16,float8`) is checked as the job
that gets it, so a bad one stops the sweep before any job has run, and the line names that value alone. So is a
recipe that sets model keys without picking a model, which would merge them into the default model."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Optional

import yaml
from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType, ValueType
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from mambapipe.cli_keys import parse_command_line
from mambapipe.cli_paths import recipe_place_hint
from mambapipe.config import CONFIG_DIR, MambapipeConfig, ModelConfig, close_key
from mambapipe.pipeline.step import first_line

if TYPE_CHECKING:
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.config_repository import ConfigRepository


class HydraInternalsChanged(Exception):
    """hydra._internal, which the check reads the config groups with, no longer works as it did: the check is then
    left out, and Hydra reports the command line's mistakes itself."""


@contextmanager
def hydra_internals() -> Iterator[None]:
    """Around the check's calls into hydra._internal alone: what a change in it would raise becomes
    HydraInternalsChanged there, while the same errors from the check's own code stay the bugs they are."""
    try:
        yield
    except (ImportError, AttributeError, TypeError) as err:
        raise HydraInternalsChanged from err


def bad_value_problem(argv: list[str]) -> Optional[str]:
    """The first value of `argv` that Hydra would refuse, as one line; None when none is (or when Hydra reads
    the line with another primary config, cannot parse it, or lacks the --config-dir: then it reports that)."""
    args = parse_command_line(argv)
    if args is None:
        return None
    overrides = _job_overrides(args.overrides)
    # hydra.searchpath adds config dirs that only the composed config names: a group may have options not known here.
    more_options = any(o.key_or_group == "hydra.searchpath" for o in overrides)
    config = OmegaConf.structured(MambapipeConfig(model=ModelConfig()))
    try:
        with hydra_internals():
            options = _options(args.config_dir)
        for override in overrides:
            with hydra_internals():
                is_group = options.group_exists(override.key_or_group)
            if not is_group:
                problem = _type_problem(override, config)
            else:
                problem = None if more_options else _missing_option_problem(override, options, args.config_dir)
            if problem:
                return problem
    except HydraInternalsChanged:
        return None
    return None


def unchosen_model_problem(argv: list[str]) -> Optional[str]:
    """A recipe that sets model keys but picks no model (no `- override /model: NAME` in its defaults), on a
    command line that picks none either, as one line: its keys would be merged into config.yaml's default model, so
    a `model.arch` written for a Mamba1 would run as a Mamba2 of that shape. None when every recipe the line runs
    picks its model, sets no model keys (it runs the default model as it is), or cannot be read here (Hydra
    reports that)."""
    args = parse_command_line(argv)
    if args is None:
        return None
    overrides = _job_overrides(args.overrides)
    if any(o.key_or_group in ("model", "hydra.searchpath") for o in overrides):  # chosen, or configs not seen here
        return None
    choices = [f"recipe={o.value()}" for o in overrides if o.key_or_group == "recipe"] or [None]
    try:
        with hydra_internals():
            loader = config_loader(args.config_dir)
        for choice in dict.fromkeys(choices):
            problem = _recipe_model_problem(loader, choice)
            if problem:
                return problem
    except (HydraInternalsChanged, HydraException, OmegaConfBaseException, OSError, yaml.YAMLError):  # Hydra's
        return None
    return None


def _recipe_model_problem(loader: ConfigLoaderImpl, choice: Optional[str]) -> Optional[str]:
    """The problem of the recipe `choice` picks (None: config.yaml's default one) when it sets model keys without
    picking a model."""
    with hydra_internals():
        defaults = loader.compute_defaults_list("config", [choice] if choice else [], RunMode.RUN)
    if "model" in defaults.overrides.override_metadata:  # the recipe (or a config it includes) picked the model
        return None
    chosen = {d.config_path.partition("/")[0]: d.config_path for d in defaults.defaults if d.config_path}
    if "recipe" not in chosen or "model" not in chosen:
        return None
    with hydra_internals():
        recipe = loader.repository.load_config(chosen["recipe"])
        model_config = loader.repository.load_config(chosen["model"]).config
        models = loader.repository.get_group_options("model", results_filter=ObjectType.CONFIG)
    sets = recipe and recipe.header.get("package") == "_global_" and recipe.config.get("model")
    if not OmegaConf.is_dict(sets):  # no model keys (or not as keys: Hydra says what is wrong with those)
        return None
    keys = ", ".join(f"model.{key}" for key in sets)
    model = chosen["model"].partition("/")[2]
    version = OmegaConf.select(model_config, "arch.mamba_version")
    model += f" (a {version})" if version else ""
    return (f"recipe={chosen['recipe'].partition('/')[2]} sets {keys} but picks no model, so they would be merged "
            f"into the default model {model}: add '- override /model: NAME' to its defaults, as the "
            f"recipes in recipes/ do, or give model=NAME (models: {', '.join(models)})")


def _job_overrides(texts: list[str]) -> list[Override]:
    """The overrides as the jobs get them: a sweep's once per value, as Hydra's basic sweeper writes them out.
    Left out: what does not parse (Hydra says so), and sweeps whose values are not listed on the command line
    (glob(...) picks among a group's options itself, interval(...) is an optimizing sweeper's)."""
    parser, jobs = OverridesParser.create(), []
    for text in texts:
        try:
            override = parser.parse_override(text)
            if not override.is_sweep_override():
                jobs.append(override)
            elif override.is_discrete_sweep() and override.value_type != ValueType.GLOB_CHOICE_SWEEP:
                key = override.get_key_element()
                jobs += [parser.parse_override(f"{key}={value}") for value in override.sweep_string_iterator()]
        except HydraException:
            continue
    return jobs


def _options(config_dir: Optional[str]) -> ConfigRepository:
    """The configs Hydra finds: this package's configs/, its plugins', and the command line's --config-dir (an
    existing dir, put where Hydra puts it). Hydra's internals are imported here, not on the module's import, so
    that a change in them costs the check (HydraInternalsChanged), not every command."""
    from hydra._internal.config_repository import ConfigRepository

    return ConfigRepository(_search_path(config_dir))


def _search_path(config_dir: Optional[str]) -> ConfigSearchPath:
    from hydra._internal.utils import create_config_search_path

    search_path = create_config_search_path(f"file://{CONFIG_DIR}")
    if config_dir is not None:
        search_path.prepend("command-line", f"file://{os.path.abspath(config_dir)}", SearchPathQuery(provider="schema"))
    return search_path


def config_loader(config_dir: Optional[str]) -> ConfigLoaderImpl:
    """Hydra's config loader over the configs _options finds, for the defaults list a command line composes."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    return ConfigLoaderImpl(config_search_path=_search_path(config_dir))


def _missing_option_problem(override: Override, options: ConfigRepository,
                            config_dir: Optional[str]) -> Optional[str]:
    """`recipe=quickstrat: no such recipe; did you mean recipe=quickstart? (recipes: ...)` for a group choice
    that names no config of the group (or a list of them, `group=[a,b]`, with one such). A recipe given as its
    file's path, or in `config_dir` (the -cd) that is its recipe/ folder itself, is told how to run it instead."""
    group, key, value = override.key_or_group, override.get_key_element(), override.value()
    if override.is_delete():
        return None
    with hydra_internals():
        names = options.get_group_options(group, results_filter=ObjectType.CONFIG)
    if value is None:  # Hydra's own error is a traceback: "must be a string or a list. Got NoneType"
        return f"{key}=null: name a {group} ({group}s: {', '.join(names)})"
    chosen = value if isinstance(value, list) else [value]
    with hydra_internals():
        missing = [name for name in chosen if not options.config_exists(f"{group}/{name}")]
    if not missing:
        return None
    meant = close_key(str(missing[0]), names)
    place = recipe_place_hint(str(missing[0]), config_dir) if group == "recipe" else ""
    suggestion = place or (f"; did you mean {key}={meant}?" if meant else "")
    return f"{key}={missing[0]}: no such {group}{suggestion} ({group}s: {', '.join(names)})"


def _type_problem(override: Override, config: DictConfig) -> Optional[str]:
    """The value's problem when the schema's type for the key refuses it (`dtype=float8: Invalid value 'float8',
    expected one of [float16, bfloat16, float32]`): set on `config` (the schema's defaults, with the overrides
    before it) as Hydra sets it on the composed config. Left to Hydra: added and removed keys, its own, and keys
    through a list index (eval.scenarios.0.batch), whose list only a recipe fills; unknown keys are
    unknown_key_problem's."""
    key = override.key_or_group
    if override.type != OverrideType.CHANGE or override.is_hydra_override() or any(map(str.isdigit, key.split("."))):
        return None
    value = override.value()
    try:
        OmegaConf.update(config, key, value, merge=True)
    except ValidationError as exc:
        if isinstance(value, str) and OmegaConf.is_list(OmegaConf.select(config, key)):  # steps=evaluate
            return f"{override.input_line}: {key} is a list; write {key}=[{value}]"
        return f"{override.input_line}: {first_line(exc)}"
    except OmegaConfBaseException:  # e.g. a key the schema lacks: Hydra reports it, with the composed config
        pass
    return None
