"""From a composed Hydra config to the plain values steps see: interpolations resolved, enums as
strings, `device` and `backend` decided once for the whole run."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from mambapipe import interrupts
from mambapipe.config import close_key, key_hint, unknown_keys
from mambapipe.pipeline.disk import nearest_existing, why_unwritable
from mambapipe.pipeline.step import StepError, first_line

_CACHE_DIR_FIX = "set cache_dir (or MAMBAPIPE_CACHE) to a directory you can write to"


@dataclass(frozen=True)
class Resolved:
    config: dict[str, Any]  # the whole config, plain, with device/backend replaced by their decisions
    device_why: str
    backend_why: str
    problems: tuple[str, ...] = ()  # of the run itself (device, cache_dir), one line each


def resolve_device(requested: str) -> tuple[str, str, Optional[str]]:
    """(device, why, problem): `auto` picks cuda when torch sees a GPU; `cuda` without one is a problem."""
    if requested == "cpu":
        return "cpu", "requested", None
    with interrupts.deferred():  # only when there is a GPU to look for: importing torch costs a second
        import torch

    from mambapipe.engine.checks import no_cuda_device

    visible = torch.cuda.is_available()
    if requested == "cuda":
        return "cuda", "requested", None if visible else no_cuda_device()
    if visible:
        return "cuda", f"auto: {torch.cuda.device_count()} CUDA device(s) visible", None
    return "cpu", "auto: no CUDA device visible", None


def cache_dir_problem(cache_dir: Path) -> Optional[str]:
    """Why artifacts cannot be written under `cache_dir` (None when they can). Tried, not read off permission
    bits, which miss read-only and virtual file systems (/proc) and which root passes anyway: a directory is
    made and removed in cache_dir, or in its nearest existing parent when cache_dir is still to be made."""
    why = why_unwritable(cache_dir)
    if why is None:
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".mambapipe-write-test-", dir=nearest_existing(cache_dir)))
        except OSError as exc:
            why = why_unwritable(cache_dir, exc)
    return f"cache_dir={cache_dir} {why}; {_CACHE_DIR_FIX}" if why else None


def missing_values_problem(cfg: DictConfig) -> Optional[str]:
    """The keys left `???` (a mandatory value nobody set), which no plan can be made without."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if not missing:
        return None
    verb, pronoun = ("has", "it") if len(missing) == 1 else ("have", "them")
    return (f"{', '.join(missing)} {verb} no value (???): set {pronoun} on the command line (e.g. {missing[0]}=...) "
            "or pick a config that does (e.g. model=<a file of configs/model>)")


def resolve_config(cfg: DictConfig) -> Resolved:
    """The plain config; a StepError (one line) when a mandatory value is unset."""
    from mambapipe.backends import resolve_backend

    try:  # both read every value, so both meet an interpolation that cannot resolve
        problem = missing_values_problem(cfg)
        config = None if problem else OmegaConf.to_container(cfg, resolve=True, enum_to_str=True,
                                                             throw_on_missing=True)
    except Exception as exc:
        if interrupts.received():  # a Ctrl-C stopped OmegaConf, which then may raise another error for it
            raise KeyboardInterrupt from exc  # (QA: ConfigKeyError "'NoneType' object has no attribute ...")
        if isinstance(exc, InterpolationResolutionError):  # tp_size=${oc.env:NGPUS} with NGPUS unset
            raise StepError(f"{exc.full_key} cannot be resolved ({first_line(exc)}): set what it reads, or give "
                            f"{exc.full_key} a value") from None
        raise
    if problem:
        raise StepError(problem)
    # Absolute: run.json names real paths, and model.path=m and model.path=$PWD/m are one key; model.path also with
    # its links and ../ followed, so that every spelling of one checkpoint directory is one key.
    config["cache_dir"] = str(Path(config["cache_dir"]).expanduser().absolute())
    if config["model"]["path"]:
        config["model"]["path"] = os.path.realpath(Path(config["model"]["path"]).expanduser())  # never raises
    config["device"], device_why, device_problem = resolve_device(config["device"])
    config["backend"], backend_why = resolve_backend(config["backend"], config["device"])
    problems = [*map(partial(_unknown_key_problem, config), unknown_keys(config)), unread_path_problem(config),
                device_problem, cache_dir_problem(Path(config["cache_dir"]))]
    return Resolved(config, device_why, backend_why, tuple(p for p in problems if p))


def unread_path_problem(config: dict[str, Any]) -> Optional[str]:
    """model.path set for a source that reads none: most likely model.source=local was meant, and the run
    would otherwise make (or download) some other model without a word."""
    source = config["model"]["source"]
    if not config["model"]["path"] or source == "local":  # '' as unset as null
        return None
    return (f"model.path is set but model.source={source} reads no path: add model.source=local to use "
            f"{config['model']['path']}, or drop model.path")


def _unknown_key_problem(config: dict[str, Any], dotted: str) -> str:
    parent, _, leaf = dotted.rpartition(".")
    siblings = {} if "[" in parent else lookup(config, parent) if parent else config  # no hints inside lists
    close = close_key(leaf, siblings)
    hint = key_hint(close and dotted[:-len(leaf)] + close)
    return f"{dotted} is not a config key (added with +?) and nothing reads it; {hint}"


def lookup(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"config has no key {dotted!r}")
        node = node[part]
    return node


def select(config: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """The params slice a step declared: {dotted key: value} (subtrees as plain dicts)."""
    return {key: lookup(config, key) for key in keys}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists and scalars are leaves."""
    if not isinstance(value, dict):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, sub in value.items():
        flat.update(flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
    return flat
