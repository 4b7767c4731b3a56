"""Recognise a checkpoint's layout from its files' content (never from the directory's name)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from mambapipe import interrupts
from mambapipe.checkpoint import source_specs
from mambapipe.checkpoint.config_json import read_json_object
from mambapipe.checkpoint.errors import ConvertError, DamagedFileError, UnreadableError
from mambapipe.models import ModelSpec
from mambapipe.pipeline.step import first_line

HF_MAMBA = "hf_mamba"
HF_MAMBA2 = "hf_mamba2"
MAMBA_SSM = "mamba_ssm"
MISTRAL = "mistral"
FORMATS = (HF_MAMBA, HF_MAMBA2, MAMBA_SSM, MISTRAL)
HF_CONFIG_CLASSES = {HF_MAMBA: "MambaConfig", HF_MAMBA2: "Mamba2Config"}  # transformers' reader of each HF layout

MISTRAL_WEIGHTS = "consolidated.safetensors"
# Preference order when a directory holds several: safetensors (memory-safe, no pickle) before .bin.
_WEIGHT_CANDIDATES = ("model.safetensors.index.json", "model.safetensors",
                      "pytorch_model.bin.index.json", "pytorch_model.bin")


@dataclass(frozen=True)
class SourceInfo:
    format: str  # one of FORMATS
    spec: ModelSpec
    model_dir: Path
    config_file: Path  # the file the spec was read from (config.json or params.json)
    weight_files: tuple[Path, ...]
    # An HF config's layer_norm_epsilon (a float: transformers refuses anything else); None where the config
    # leaves it out or its layout has none (mamba_ssm, Mistral).
    norm_epsilon: Optional[float] = None


def source_format(model_dir: Path) -> str:
    """Which of FORMATS `model_dir` holds, from its config files alone (the download step's plan-time check
    and the convert step's detection, so that both accept the same directories)."""
    return _read_format(model_dir)[0]


def _read_format(model_dir: Path) -> tuple[str, Optional[dict[str, Any]]]:
    """The format, and the config.json it was recognised from (None for Mistral, recognised by its file names)."""
    try:
        return _source_format(model_dir)
    except PermissionError as err:  # a directory we may not list: is_file() raises rather than answering no
        raise UnreadableError(err.filename or model_dir, err.strerror) from None


def _source_format(model_dir: Path) -> tuple[str, Optional[dict[str, Any]]]:
    if not model_dir.is_dir():
        raise ConvertError(f"{model_dir}: not a directory; point at the downloaded checkpoint directory")
    if (model_dir / "params.json").is_file() and (model_dir / MISTRAL_WEIGHTS).is_file():
        return MISTRAL, None
    config = model_dir / "config.json"
    if not config.is_file():
        _refuse_broken_link(config)
        raise ConvertError(f"{model_dir}: no config.json (nor params.json + {MISTRAL_WEIGHTS}); "
                           "not a Mamba checkpoint directory")
    cfg = load_json_object(config)
    return _config_format(cfg, config), cfg


def detect_source(model_dir: str | Path) -> SourceInfo:
    model_dir = Path(model_dir).expanduser()
    fmt, cfg = _read_format(model_dir)
    params, config = model_dir / "params.json", model_dir / "config.json"
    if fmt == MISTRAL:
        spec = source_specs.spec_from_mistral(load_json_object(params), params)
        return SourceInfo(MISTRAL, spec, model_dir, params, (model_dir / MISTRAL_WEIGHTS,))
    norm_epsilon = None
    if fmt in HF_CONFIG_CLASSES:
        check_with_transformers(config, cfg, HF_CONFIG_CLASSES[fmt])
        norm_epsilon = cfg.get("layer_norm_epsilon")
    spec = {HF_MAMBA: source_specs.spec_from_hf_mamba, HF_MAMBA2: source_specs.spec_from_hf_mamba2,
            MAMBA_SSM: source_specs.spec_from_mamba_ssm}[fmt](cfg, config)
    return SourceInfo(fmt, spec, model_dir, config, weight_files(model_dir), norm_epsilon)


def check_with_transformers(path: Path, cfg: dict[str, Any], class_name: str) -> None:
    """An HF-layout config.json as transformers' own config class reads it, which the evaluate step does twice
    (AutoTokenizer parses the config.json linked beside the tokenizer, eval.compare_hf loads the model): a field it
    refuses (a dtype torch lacks, a size written as text or a fraction) is one line naming it here, not a traceback
    after convert and build. transformers' strict config dataclasses know their own rules; they are not copied here."""
    with interrupts.deferred():  # the first call imports transformers and the config class: whole or not at all
        import transformers

        try:
            getattr(transformers, class_name).from_json_file(path)
        except Exception as err:  # strict-dataclass errors, a torch dtype it cannot find, ...: all the file's fault
            raise ConvertError(_refusal(path, cfg, class_name, err)) from None


def _refusal(path: Path, cfg: dict[str, Any], class_name: str, err: Exception) -> str:
    reason = first_line(err.__cause__ or err) or type(err).__name__  # a strict error's cause: one line
    field = _quoted_field(cfg, f"{err} {reason}")
    what = f"{field}={json.dumps(cfg[field])}" if field else "it"
    fix = f"correct {field} in {path.name}" if field else f"correct {path.name}"
    return f"{path}: transformers' {class_name} refuses {what} ({reason}); {fix}"


def _quoted_field(cfg: dict[str, Any], message: str) -> Optional[str]:
    """The field of `cfg` an error message names: by its name (strict-dataclass errors), else by its text value
    (torch's "has no attribute 'float17'" names only the dtype's value); None when it names neither."""
    by_name = [key for key in cfg if f"'{key}'" in message]
    by_value = [key for key, value in cfg.items() if isinstance(value, str) and f"'{value}'" in message]
    return next(iter(by_name + by_value), None)


def _config_format(cfg: dict[str, Any], path: Path) -> str:
    model_type, archs = cfg.get("model_type"), cfg.get("architectures") or []
    if model_type == "mamba" or "MambaForCausalLM" in archs:
        return HF_MAMBA
    if model_type == "mamba2" or "Mamba2ForCausalLM" in archs:
        return HF_MAMBA2
    if model_type is None and {"d_model", "n_layer"} <= cfg.keys():  # ssm_cfg is optional: mamba_ssm defaults it
        return MAMBA_SSM
    raise ConvertError(f"{path}: unknown architecture (model_type={model_type!r}, architectures={archs}); "
                       "expected HF Mamba/Mamba2, a mamba_ssm config (d_model, n_layer) or Mistral params.json")


def weight_files(model_dir: Path) -> tuple[Path, ...]:
    for name in _WEIGHT_CANDIDATES:
        path = model_dir / name
        if not path.is_file():
            _refuse_broken_link(path)
            continue
        if name.endswith(".index.json"):
            return _index_files(path)
        return (path,)
    raise ConvertError(f"{model_dir}: no weights found (looked for {', '.join(_WEIGHT_CANDIDATES)})")


def _refuse_broken_link(path: Path) -> None:
    """A ConvertError naming `path` and its target when it is a link to nothing: is_file() follows links, so such a
    file would otherwise be reported as not there at all ('no weights found')."""
    if path.is_symlink() and not path.exists():
        target = path.parent / os.readlink(path)  # a relative target is relative to the link's directory
        raise ConvertError(f"{path} is a link to {target}, which does not exist")


def _index_files(index: Path) -> tuple[Path, ...]:
    weight_map = load_json_object(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise DamagedFileError(index, "no weight_map")
    if not all(isinstance(name, str) and name for name in weight_map.values()):
        raise DamagedFileError(index, "weight_map maps a tensor to something other than a shard's file name")
    files = tuple(index.parent / name for name in sorted(set(weight_map.values())))
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DamagedFileError(index, f"lists shard(s) {missing} that are missing")
    return files


def load_json_object(path: Path) -> dict[str, Any]:
    """`path` as a JSON object; a ConvertError naming the file when it is unreadable or not an object."""
    return read_json_object(path, lambda problem: ConvertError(f"{path} {problem}"))
