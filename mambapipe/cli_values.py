"""The command line's values, checked before Hydra composes: a config group option that does not exist
(`recipe=quickstrat`) or a value that its key's type refuses (`dtype=float8`) is one line naming it, where
Hydra's own errors take 5 to 20 lines; one value for a list or a group of settings (`steps=evaluate`, `build=3`) is
told what to write. Each value of a sweep (`-m dtype=float16,float8`) is checked as the job that gets it, so a bad
one stops the sweep before any job has run, and the line names that value alone. So is a recipe that picks no model
while it sets model keys, which would be merged into the default model, or means to with `- optional model: NAME`,
which Hydra skips."""

from __future__ import annotations

import os
import re
import shlex
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Optional

import yaml
from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType, ValueType
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from mambapipe.cli_keys import ParsedCommandLine
from mambapipe.cli_paths import recipe_place_hint
from mambapipe.config import CONFIG_DIR, MambapipeConfig, ModelConfig, close_key, key_shape
from mambapipe.pipeline.runner import config_dir_arguments, hydra_in_quotes, program_name
from mambapipe.pipeline.step import first_line

if TYPE_CHECKING:
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.config_repository import ConfigRepository
    from hydra.plugins.config_source import ConfigResult


# mambapipe's config groups, whose option is a whole recipe or model: Hydra takes a list of options for a group
# (recipe=[a,b]) and merges them in order, into a run of one recipe's model with the other's settings; [] picks none.
SINGLE_CHOICE_GROUPS = ("recipe", "model")


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


def bad_value_problem(args: ParsedCommandLine) -> Optional[str]:
    """The first value of `args` that Hydra would refuse, as one line; None when none is (or when Hydra cannot
    parse it: then it reports that)."""
    overrides = _job_overrides(args)
    config = OmegaConf.structured(MambapipeConfig(model=ModelConfig()))
    try:
        with hydra_internals():
            options = config_repository(args.config_dir, args.searchpath)
        for override in overrides:
            with hydra_internals():
                is_group = options.group_exists(override.key_or_group)
            if not is_group:
                problem = _type_problem(override, config)
            else:
                problem = _missing_option_problem(override, options, args.config_dir)
            if problem:
                return problem
    except HydraInternalsChanged:
        return None
    return None


def unswept_sweep_problem(args: ParsedCommandLine) -> Optional[str]:
    """The first sweep (dtype=a,b, choice(a,b), range(1,3)) of a command line without -m, as one line: the command
    with -m, and for a key that takes a list (steps=a,b) the list. Hydra's own report ('Ambiguous value', 'Sweep
    parameters ... requires --multirun') spans four lines, and first suggests key=[a,b] for any key, which the value
    check refuses for a key that takes one value. Sweeps of Hydra's own settings are hydra_sweep_problem's."""
    if args.multirun:
        return None
    for override in args.readable():
        if not override.is_sweep_override() or override.is_hydra_override():
            continue
        text, command = override.input_line, _multirun_command(args, args.overrides)
        if override.value_type != ValueType.SIMPLE_CHOICE_SWEEP:  # choice(a,b), range(1,3), glob(*)
            return f"{text}: a sweep runs with -m: `{command}`"
        return f"{text}: a comma-separated value for a key without -m is a sweep: add -m (`{command}`)" \
               f"{_list_alternative(override)}"
    return None


def _multirun_command(args: ParsedCommandLine, overrides: list[str]) -> str:
    """The command that runs `overrides` as a sweep: the user's own, with -m and its --config-dir."""
    config_dir = config_dir_arguments([args.config_dir] if args.config_dir is not None else [])
    return " ".join([program_name(), "-m", *map(shlex.quote, [*config_dir, *overrides])])


def _list_alternative(override: Override) -> str:
    """For a sweep of a key that takes a list of values (steps=a,b; not eval.scenarios, a list of groups of
    settings), what to write for the list it may have meant; '' for another key."""
    section, takes_list = key_shape(override.key_or_group)
    if not takes_list or section is not None:
        return ""
    return f", or for a list write {_assignment(override.key_or_group, list(override.sweep_iterator()), False)}"


def hydra_sweep_problem(args: ParsedCommandLine) -> Optional[str]:
    """The first sweep of one of Hydra's own settings (hydra.run.dir=a,b, hydra.job.chdir=true,false,
    hydra/launcher=basic,joblib), as one line naming the key and what to write. Hydra sweeps none of them, -m or
    not: with -m it says so in three lines that name no fix, and without -m its six-line 'Ambiguous value' report
    suggests adding --multirun, which it would then refuse."""
    for override in args.readable():
        if override.is_sweep_override() and override.is_hydra_override():
            return (f"{override.input_line}: Hydra sweeps none of its own settings, with -m or without: "
                    f"{_hydra_setting_fix(override)}")
    return None


def _hydra_setting_fix(override: Override) -> str:
    """What to write for a sweep of a Hydra setting: the list it may have meant, for a setting that takes one
    (hydra.searchpath=a,b); else one value, and for a sweep of strings written plainly, one string with its commas
    in quotes."""
    from hydra.conf import HydraConf  # imported here alone: a Hydra setting's sweep is rare

    key, listed = override.get_key_element(), listed_sweep(OverridesParser.create(), override)
    values = [value.value() for value in listed or []]  # none for glob(...), interval(...)
    setting, written = override.key_or_group.partition(".")[2], override.input_line.partition("=")[2]
    plain = override.value_type == ValueType.SIMPLE_CHOICE_SWEEP and not re.search("['\"]", written)
    if plain and setting and isinstance(OmegaConf.select(OmegaConf.structured(HydraConf), setting), ListConfig):
        return f"{key} takes a list: write {_assignment(key, values, in_yaml=False)}"
    one = f" ({_assignment(key, values[0], in_yaml=False)}, and run once per value)" if values else ""
    if plain and setting and all(isinstance(value, str) for value in values):
        quoted = shlex.quote(f"{key}={hydra_in_quotes(written)}")
        return f"give {key} one value{one}, or one with commas in quotes: {quoted}"
    return f"give {key} one value{one}"


def spaced_sweep_problem(args: ParsedCommandLine) -> Optional[str]:
    """A sweep's values split by spaces (-m dtype=float32 bfloat16, or dtype=float32, bfloat16), which Hydra's
    grammar refuses at the word after the space, as one line with the values joined by commas; without -m, the
    command that runs the sweep, with -m, as for dtype=float32,bfloat16 without it (unswept_sweep_problem). Only
    where each joined value is one its key takes: -m plan_only=true quickstart is not a sweep of plan_only
    (grammar_problem says what an override reads); and without -m only where a comma is next to the space
    (dtype=float32 bfloat16 may be meant as one value as much as a sweep). For a key that takes a list
    (steps=download, convert), whose joined values are refused one by one, the list they make instead."""
    words = args.overrides
    for index, text in enumerate(words):
        if not isinstance(args.parsed[index], HydraException):
            continue
        start, end, joined = _joined_sweep(words, index)
        fixed = args.with_overrides([joined] if joined else [])
        override = next(iter(fixed.readable()), None)
        swept = override is not None and override.is_sweep_override() and not override.is_hydra_override()
        comma = args.multirun or any(word.startswith(",") or word.endswith(",") for word in words[start:end])
        if not swept or not comma:
            return None  # grammar_problem reports the word
        what = "" if "=" in text else " not an override, which reads key=value;"
        if bad_value_problem(fixed) is not None:  # a value its key refuses, or each one alone for a list (steps)
            listed = _spaced_list(args, override)
            if listed is None:
                return None
            return f"{text}:{what} {override.key_or_group} is a list; write it without spaces, in brackets and " \
                   f"quotes: {listed}"
        if args.multirun:
            return f"{text}:{what} a sweep's values are separated by commas, not spaces: write {shlex.quote(joined)}"
        command = _multirun_command(args, [*words[:start], joined, *words[end:]])
        return f"{text}:{what} a sweep runs with -m, its values separated by commas, not spaces: `{command}`" \
               f"{_list_alternative(override)}"
    return None


def _spaced_list(args: ParsedCommandLine, override: Override) -> Optional[str]:
    """The sweep `override` (steps=download,convert) as the list it likely meant, quoted for the shell, whose
    brackets zsh would glob: 'steps=[download,convert]'. None where its key takes no list of plain values, or the
    value check refuses the list (steps=download,convrt: grammar_problem reports the word)."""
    section, takes_list = key_shape(override.key_or_group)
    if not takes_list or section is not None or override.value_type != ValueType.SIMPLE_CHOICE_SWEEP:
        return None
    text = f"{override.key_or_group}={_as_override(list(override.sweep_iterator()))}"
    return shlex.quote(text) if bad_value_problem(args.with_overrides([text])) is None else None


def _joined_sweep(words: list[str], index: int) -> tuple[int, int, Optional[str]]:
    """The override that the word at `index` is likely a sweep's value of, whole, and the words it is made of
    (words[start:end]): the override before it (or at it, ending in a comma) joined with the words after it up to
    the next override, a comma between each (dtype=float32 bfloat16, or dtype=float32, bfloat16:
    dtype=float32,bfloat16); (index, index + 1, None) for no such words."""
    start = next((i for i in range(index, -1, -1) if "=" in words[i]), None)
    end = next((i for i in range(index + 1, len(words)) if "=" in words[i]), len(words))
    if start is None or end - start < 2:
        return index, index + 1, None
    values = [word.strip(",") for word in words[start + 1:end]]
    return start, end, ",".join([words[start].rstrip(","), *filter(None, values)])


def unchosen_model_problem(args: ParsedCommandLine) -> Optional[str]:
    """A recipe that picks no model, on a command line that picks none either, as one line: where it sets model keys
    (no `- override /model: NAME` in its defaults) they would be merged into config.yaml's default model, so a
    `model.arch` written for a Mamba1 would run as a Mamba2 of that shape; where its entry for the model reads
    `- optional model: NAME`, Hydra looks for recipe/model/NAME and skips it without a word. None when every recipe
    the line runs picks its model, sets no model keys (it runs the default model as it is), or cannot be read here
    (Hydra reports that)."""
    overrides = _job_overrides(args)
    if any(o.key_or_group == "model" for o in overrides):
        return None
    choices = [f"recipe={o.value()}" for o in overrides if o.key_or_group == "recipe"] or [None]
    try:
        with hydra_internals():
            loader = config_loader(args.config_dir, args.searchpath)
        for choice in dict.fromkeys(choices):
            problem = _recipe_model_problem(loader, choice)
            if problem:
                return problem
    except (HydraInternalsChanged, HydraException, OmegaConfBaseException, OSError, yaml.YAMLError):  # Hydra's
        return None
    return None


def _recipe_model_problem(loader: ConfigLoaderImpl, choice: Optional[str]) -> Optional[str]:
    """The problem of the recipe `choice` picks (None: config.yaml's default one) when it picks no model."""
    with hydra_internals():
        defaults = loader.compute_defaults_list("config", [choice] if choice else [], RunMode.RUN)
    if "model" in defaults.overrides.override_metadata:  # the recipe (or a config it includes) picked the model
        return None
    chosen = {d.config_path.partition("/")[0]: d.config_path for d in defaults.defaults if d.config_path}
    if "recipe" not in chosen or "model" not in chosen:
        return None
    with hydra_internals():
        recipe = loader.repository.load_config(chosen["recipe"])
    if recipe is None:
        return None
    label = f"recipe={chosen['recipe'].partition('/')[2]}"
    skipped = _skipped_model_entry(loader.repository, recipe)
    if skipped:
        path = config_file(recipe.path, chosen["recipe"])
        return f"{label}: {path}: {skipped}" if path else f"{label}: {skipped}"
    sets = recipe.header.get("package") == "_global_" and recipe.config.get("model")
    if not OmegaConf.is_dict(sets):  # no model keys (or not as keys: Hydra says what is wrong with those)
        return None
    with hydra_internals():
        model_config = loader.repository.load_config(chosen["model"]).config
        models = loader.repository.get_group_options("model", results_filter=ObjectType.CONFIG)
    keys = ", ".join(f"model.{key}" for key in sets)
    model = chosen["model"].partition("/")[2]
    version = OmegaConf.select(model_config, "arch.mamba_version")
    model += f" (a {version})" if version else ""
    return (f"{label} sets {keys} but picks no model, so they would be merged into the default model {model}: "
            f"add '- override /model: NAME' to its defaults, as the recipes in recipes/ do, or give model=NAME "
            f"(models: {', '.join(models)})")


def _skipped_model_entry(repository: ConfigRepository, recipe: ConfigResult) -> Optional[str]:
    """What a recipe's `- optional model: NAME` must read: Hydra takes a group without its leading / as the
    recipe's own (recipe/model), finds no NAME there, and skips the entry as optional."""
    with hydra_internals():
        skipped = [(entry.value, entry.override) for entry in recipe.defaults_list or []
                   if getattr(entry, "group", None) == "model" and entry.optional and entry.package is None
                   and not repository.config_exists(f"recipe/model/{entry.value}")]
    if not skipped:
        return None
    choice, override = skipped[0]
    return must_override(f"optional {'override ' if override else ''}model", "model", choice)


def must_override(spec: str, group: str, choice: str) -> str:
    """What a recipe's defaults entry `- spec: choice` that picks an option of the primary config's `group` without
    `override /` must read."""
    return (f"its defaults entry '- {spec}: {choice}' must read '- override /{group}: {choice}': a recipe "
            f"overrides the {group} that mambapipe's config.yaml chooses")


def config_file(source: str, config_path: str) -> Optional[str]:
    """The file of the config `config_path` (recipe/m1) that Hydra found in `source` (file://DIR); None when it
    is no file (a ConfigStore schema, a package's)."""
    return os.path.join(source[len("file://"):], f"{config_path}.yaml") if source.startswith("file://") else None


def _job_overrides(args: ParsedCommandLine) -> list[Override]:
    """The overrides as the jobs get them: a sweep's once per value (listed_sweep). Left out: what does not parse
    (Hydra says so), and sweeps whose values are not listed on the command line."""
    parser, jobs = OverridesParser.create(), []  # for a sweep's values
    for override in args.readable():
        jobs += (listed_sweep(parser, override) or []) if override.is_sweep_override() else [override]
    return jobs


def listed_sweep(parser: OverridesParser, override: Override) -> Optional[list[Override]]:
    """A sweep's override once per value, as Hydra's basic sweeper writes out its jobs' (`dtype=a,b`: dtype=a and
    dtype=b); None for a sweep whose values the command line does not list (glob(...) picks among a group's
    options itself, interval(...) is an optimizing sweeper's)."""
    if not override.is_discrete_sweep() or override.value_type == ValueType.GLOB_CHOICE_SWEEP:
        return None
    key = override.get_key_element()
    return [parser.parse_override(f"{key}={value}") for value in override.sweep_string_iterator()]


def config_repository(config_dir: Optional[str], searchpath: list[str]) -> ConfigRepository:
    """The configs Hydra finds: this package's configs/, its plugins', the command line's --config-dir (an
    existing dir) and its hydra.searchpath, each put where Hydra puts it. Hydra's internals are imported here, not
    on the module's import, so that a change in them costs the check (HydraInternalsChanged), not every command."""
    from hydra._internal.config_repository import ConfigRepository

    return ConfigRepository(_search_path(config_dir, searchpath))


def _search_path(config_dir: Optional[str], searchpath: list[str]) -> ConfigSearchPath:
    from hydra._internal.utils import create_config_search_path

    search_path = create_config_search_path(f"file://{CONFIG_DIR}")
    if config_dir is not None:
        search_path.prepend("command-line", f"file://{os.path.abspath(config_dir)}", SearchPathQuery(provider="schema"))
    if searchpath:
        schema = search_path.get_path().pop()  # the structured configs stay last, as Hydra keeps them
        for entry in searchpath:
            search_path.append("hydra.searchpath in command-line", entry)
        search_path.append(schema.provider, schema.path)
    return search_path


def config_loader(config_dir: Optional[str], searchpath: list[str]) -> ConfigLoaderImpl:
    """Hydra's config loader over the configs config_repository finds, for the defaults list a command line
    composes (its load_configuration adds the hydra.searchpath of the overrides it is given itself)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    return ConfigLoaderImpl(config_search_path=_search_path(config_dir, searchpath))


def _missing_option_problem(override: Override, options: ConfigRepository,
                            config_dir: Optional[str]) -> Optional[str]:
    """`recipe=quickstrat: no such recipe; did you mean recipe=quickstart? (recipes: ...)` for a group choice
    that names no config of the group (or a list of them, `group=[a,b]`, with one such; a group of
    SINGLE_CHOICE_GROUPS refuses any list). A recipe given as its file's path, or in `config_dir` (the -cd) that is
    its recipe/ folder itself, is told how to run it instead."""
    group, key, value = override.key_or_group, override.get_key_element(), override.value()
    if override.is_delete():
        return None
    with hydra_internals():
        names = options.get_group_options(group, results_filter=ObjectType.CONFIG)
    if value is None:  # Hydra's own error is a traceback: "must be a string or a list. Got NoneType"
        return f"{key}=null: name a {group} ({group}s: {', '.join(names)})"
    if isinstance(value, list) and group in SINGLE_CHOICE_GROUPS:
        return _listed_choice_problem(override, names)
    chosen = value if isinstance(value, list) else [value]
    with hydra_internals():
        missing = [name for name in chosen if not options.config_exists(f"{group}/{name}")]
    if not missing:
        return None
    # A config's path (recipes/m1.yaml) is named by its file's name without .yaml, which may be an option itself.
    named = re.sub(r"\.yaml$", "", os.path.basename(str(missing[0]))) or str(missing[0])
    meant = named if named in names else close_key(named, names)
    place = ""
    if group == "recipe":
        place = recipe_place_hint(str(missing[0]), config_dir, lambda name: _config_path(options, f"recipe/{name}"))
    suggestion = place or (f"; did you mean {key}={meant}?" if meant else "")
    return f"{key}={missing[0]}: no such {group}{suggestion} ({group}s: {', '.join(names)})"


def _config_path(options: ConfigRepository, config_path: str) -> Optional[str]:
    """The file Hydra reads for the config `config_path` (recipe/m1); None for none, or no file."""
    with hydra_internals():
        found = options.load_config(config_path) if options.config_exists(config_path) else None
    return found and config_file(found.path, config_path)


def _listed_choice_problem(override: Override, names: list[str]) -> str:
    """What to write for a list given to a group of SINGLE_CHOICE_GROUPS (recipe=[a,b]): one choice, or a sweep
    of them."""
    group, key, chosen = override.key_or_group, override.get_key_element(), override.value()
    if not chosen:
        why, write = "and [] picks none", f"{key}=NAME"
    elif len(chosen) == 1:
        why, write = "not a list", f"{key}={chosen[0]}"
    else:
        why = f"and Hydra would merge the listed {group}s into one"
        write = f"{key}=NAME, or -m {key}={','.join(map(str, chosen))} to run each as a job of a sweep"
    return f"{override.input_line}: a run takes one {group}, {why}: write {write} ({group}s: {', '.join(names)})"


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
    except OmegaConfBaseException as exc:  # build=[1] raises no ValidationError; a key the schema lacks is Hydra's
        problem = shape_problem(key, value) or (first_line(exc) if isinstance(exc, ValidationError) else None)
        return problem and f"{override.input_line}: {problem}"
    return None


def shape_problem(key: str, value: Any, in_yaml: bool = False) -> Optional[str]:
    """What to write where one value is given for a key that the schema makes a list (steps=evaluate,
    force='[build]') or a group of settings (build=3: its keys, one set as an example); None for a value of the
    key's shape, null, or an interpolation (Hydra judges those). `in_yaml`: as a recipe file's line
    (`steps: [evaluate]`), not the command line's (`steps=[evaluate]`)."""
    section, listed = key_shape(key)
    if value is None or (isinstance(value, str) and "${" in value):
        return None
    if section is None:
        return None if not listed or isinstance(value, (list, dict)) else _list_hint(key, value, in_yaml)
    if not listed:
        return None if isinstance(value, dict) else _group_hint(key, section, in_yaml)
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return None
    return _list_of_groups_hint(key, section, in_yaml)  # eval.scenarios=3


def _list_hint(key: str, value: Any, in_yaml: bool) -> str:
    items = _quoted_list(value)
    return f"{key} is a list; write {_assignment(key, [value] if items is None else items, in_yaml)}"


def _quoted_list(value: Any) -> Optional[list]:
    """The items of a list in quotes (force='[build]'), as Hydra's grammar reads them; None for another value."""
    if not isinstance(value, str) or not value.startswith("["):
        return None
    try:
        items = OverridesParser.create().parse_override(f"key={value}").value()
    except HydraException:
        return None
    return items if isinstance(items, list) else None


def _group_hint(key: str, section: type, in_yaml: bool) -> str:
    settings = _defaults(section)
    name, value = next((name, value) for name, value in settings.items()
                       if value not in (None, MISSING) and not isinstance(value, (dict, list)))
    example = _assignment(key, {name: value}, in_yaml) if in_yaml else _assignment(f"{key}.{name}", value, in_yaml)
    how = "under it" if in_yaml else "one by one"
    return f"{key} is a group of settings, not one value: set its keys ({', '.join(settings)}) {how}, as {example}"


def _list_of_groups_hint(key: str, section: type, in_yaml: bool) -> str:
    settings = _defaults(section)
    return (f"{key} is a list of groups of settings ({', '.join(settings)}); write "
            f"{_assignment(key, [settings], in_yaml)}")


def _defaults(section: type) -> dict[str, Any]:
    """The keys of a schema class with their default values (enums by name)."""
    return OmegaConf.to_container(OmegaConf.structured(section), enum_to_str=True)


def _assignment(key: str, value: Any, in_yaml: bool) -> str:
    """`key: value` as a recipe file's YAML writes it; `key=value` as the command line's override grammar does,
    quoted where the shell would expand it (braces; brackets, a glob that zsh refuses to run unmatched) or split it
    (a space in a value: model.allow_patterns=[a b])."""
    if in_yaml:
        return f"{key}: {yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1000).strip()}"
    text = f"{key}={_as_override(value)}"
    return shlex.quote(text) if re.search(r"[{\[\s'\"]", text) else text


def _as_override(value: Any) -> str:
    """A plain value as Hydra's override grammar writes it, for it to read back the same: [a,b], {batch:1}, true,
    null, and a string in quotes where it would read otherwise ("a=b", "a,b", "true")."""
    if isinstance(value, list):
        return f"[{','.join(map(_as_override, value))}]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{name}:{_as_override(item)}" for name, item in value.items()) + "}"
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    if not isinstance(value, str) or _reads_back(value):
        return str(value)
    return hydra_in_quotes(value)


def _reads_back(text: str) -> bool:
    """Whether Hydra's grammar reads the string `text`, unquoted as an item of a list, as that string: not where it
    is a parse error (a=b), several items (a,b), another type (1, true) or loses its spaces ( a)."""
    try:
        return OverridesParser.create().parse_override(f"key=[{text}]").value() == [text]
    except HydraException:
        return False
