"""ModelSpec from each source layout's own config file, honouring every field that changes the math.

Fields that only matter for training initialisation are ignored; fields whose non-default values the
TensorRT-LLM Mamba layers cannot express (hybrid attention, MLP blocks, norm-before-gate, ...) are refused
instead of silently dropped, which is what TensorRT-LLM's converter does with `ssm_cfg` (reference §1.7).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mambapipe.checkpoint.errors import ConvertError
from mambapipe.models import MAMBA1, MAMBA2, ModelSpec

# mamba_ssm module defaults (mamba_simple.Mamba, mamba2.Mamba2) used when ssm_cfg leaves a field out.
_MAMBA1_DEFAULTS = {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": "auto", "bias": False, "conv_bias": True}
_MAMBA2_DEFAULTS = {"d_state": 128, "d_conv": 4, "expand": 2, "headdim": 64, "ngroups": 1, "chunk_size": 256,
                    "bias": False, "conv_bias": True}
# Values the TensorRT-LLM layers hard-wire; a source asking for anything else cannot be converted faithfully.
_MAMBA2_FIXED = {"rmsnorm": True, "norm_before_gate": False, "D_has_hdim": False, "d_ssm": None,
                 "activation": "silu", "learnable_init_states": False}
_INIT_ONLY = {"layer", "dt_min", "dt_max", "dt_init", "dt_scale", "dt_init_floor", "dt_limit", "A_init_range",
              "conv_init", "use_fast_path", "layer_idx", "sequence_parallel", "process_group", "device", "dtype"}
_SSM = "ssm_cfg."  # the prefix naming a field of the file's ssm_cfg in messages
_REQUIRED = object()  # the default of a field the file must have


def spec_from_hf_mamba(cfg: dict[str, Any], path: Path) -> ModelSpec:
    hidden, expand = _int(cfg, "hidden_size", path), _int(cfg, "expand", path, 2)
    if "intermediate_size" in cfg and _int(cfg, "intermediate_size", path) != expand * hidden:
        raise ConvertError(f"{path}: intermediate_size={cfg['intermediate_size']} is not expand*hidden_size="
                           f"{expand * hidden}; fix the config")
    return ModelSpec(
        mamba_version=MAMBA1, hidden_size=hidden, expand=expand, **_hf_shared_fields(cfg, path),
        state_size=_int(cfg, "state_size", path, 16), tie_embeddings=_bool(cfg, "tie_word_embeddings", path, True),
        time_step_rank=_time_step_rank(cfg, "time_step_rank", path, hidden))


def spec_from_hf_mamba2(cfg: dict[str, Any], path: Path) -> ModelSpec:
    hidden, expand = _int(cfg, "hidden_size", path), _int(cfg, "expand", path, 2)
    head_dim, num_heads = _int(cfg, "head_dim", path, 64), _int(cfg, "num_heads", path, 128)
    if num_heads * head_dim != expand * hidden:
        raise ConvertError(f"{path}: num_heads*head_dim={num_heads * head_dim} != expand*hidden_size="
                           f"{expand * hidden}; fix the config")
    _require_no_dt_limit(cfg.get("time_step_limit"), path, "time_step_limit")
    return ModelSpec(
        mamba_version=MAMBA2, hidden_size=hidden, expand=expand, **_hf_shared_fields(cfg, path),
        state_size=_int(cfg, "state_size", path, 128), tie_embeddings=_bool(cfg, "tie_word_embeddings", path, False),
        head_dim=head_dim, n_groups=_int(cfg, "n_groups", path, 8), chunk_size=_int(cfg, "chunk_size", path, 256))


def _hf_shared_fields(cfg: dict[str, Any], path: Path) -> dict[str, Any]:
    """The fields both HF layouts read from the same keys with the same defaults (their state_size and
    tie_word_embeddings default differently, so each reads those itself)."""
    if cfg.get("hidden_act", "silu") != "silu":
        raise ConvertError(f"{path}: hidden_act={json.dumps(cfg['hidden_act'])} is not supported: TensorRT-LLM's Mamba "
                           "layers compute SiLU only; only hidden_act \"silu\" converts")
    return dict(num_layers=_int(cfg, "num_hidden_layers", path), vocab_size=_int(cfg, "vocab_size", path),
                conv_kernel=_int(cfg, "conv_kernel", path, 4), use_bias=_bool(cfg, "use_bias", path, False),
                use_conv_bias=_bool(cfg, "use_conv_bias", path, True), rms_norm=_rms_norm(cfg, path),
                residual_in_fp32=_bool(cfg, "residual_in_fp32", path, True),
                pad_vocab_size_multiple=_int(cfg, "pad_vocab_size_multiple", path, 1))


def spec_from_mamba_ssm(cfg: dict[str, Any], path: Path) -> ModelSpec:
    if _int(cfg, "d_intermediate", path, 0):
        raise ConvertError(f"{path}: d_intermediate={cfg['d_intermediate']} (MLP blocks) is not a pure Mamba "
                           "model; TensorRT-LLM's Mamba checkpoint cannot hold it")
    if cfg.get("attn_layer_idx"):
        raise ConvertError(f"{path}: attn_layer_idx={cfg['attn_layer_idx']} makes a hybrid model; only pure "
                           "Mamba models convert")
    ssm_cfg = cfg.get("ssm_cfg") or {}
    if not isinstance(ssm_cfg, dict):
        raise _bad_field(path, "ssm_cfg", ssm_cfg, "an object")
    layer = ssm_cfg.get("layer", MAMBA1)
    if layer not in (MAMBA1, MAMBA2):
        raise ConvertError(f"{path}: ssm_cfg.layer={layer!r} is unknown; expected 'Mamba1' or 'Mamba2'")
    pad = _int(cfg, "pad_vocab_size_multiple", path, 8)
    common = dict(hidden_size=_int(cfg, "d_model", path), num_layers=_int(cfg, "n_layer", path),
                  vocab_size=math.ceil(_int(cfg, "vocab_size", path, 50277) / pad) * pad,  # the model pads its vocab
                  tie_embeddings=_bool(cfg, "tie_embeddings", path, True), rms_norm=_rms_norm(cfg, path),
                  residual_in_fp32=_bool(cfg, "residual_in_fp32", path, True), pad_vocab_size_multiple=pad)
    if layer == MAMBA1:
        return ModelSpec(mamba_version=MAMBA1, **common, **_mamba1_ssm_fields(ssm_cfg, common["hidden_size"], path))
    return ModelSpec(mamba_version=MAMBA2, **common, **_mamba2_ssm_fields(ssm_cfg, path))


def spec_from_mistral(params: dict[str, Any], path: Path) -> ModelSpec:
    """mistral-inference builds `MambaLMHeadModel(ssm_cfg={"ngroups": n_groups, "layer": "Mamba2"})`, so
    every other mixer field takes mamba_ssm's Mamba2 default."""
    if params.get("model_type", "mamba") != "mamba":
        raise ConvertError(f"{path}: model_type={params['model_type']!r} is not a Mamba model")
    pad = _int(params, "pad_vocab_size_multiple", path, 1)
    ssm_cfg = {"ngroups": _int(params, "n_groups", path, 1)}
    return ModelSpec(
        mamba_version=MAMBA2, hidden_size=_int(params, "dim", path), num_layers=_int(params, "n_layers", path),
        vocab_size=math.ceil(_int(params, "vocab_size", path) / pad) * pad,
        tie_embeddings=_bool(params, "tie_embeddings", path, False), rms_norm=_rms_norm(params, path),
        residual_in_fp32=_bool(params, "residual_in_fp32", path, True), pad_vocab_size_multiple=pad,
        **_mamba2_ssm_fields(ssm_cfg, path))


def _mamba1_ssm_fields(ssm_cfg: dict[str, Any], hidden: int, path: Path) -> dict[str, Any]:
    _refuse_unknown(ssm_cfg, set(_MAMBA1_DEFAULTS), path)
    c = _MAMBA1_DEFAULTS | ssm_cfg
    return dict(state_size=_int(c, "d_state", path, prefix=_SSM), conv_kernel=_int(c, "d_conv", path, prefix=_SSM),
                expand=_int(c, "expand", path, prefix=_SSM),
                time_step_rank=_time_step_rank(c, "dt_rank", path, hidden, prefix=_SSM),
                use_bias=_bool(c, "bias", path, prefix=_SSM), use_conv_bias=_bool(c, "conv_bias", path, prefix=_SSM))


def _mamba2_ssm_fields(ssm_cfg: dict[str, Any], path: Path) -> dict[str, Any]:
    _refuse_unknown(ssm_cfg, set(_MAMBA2_DEFAULTS) | set(_MAMBA2_FIXED), path)
    for key, required in _MAMBA2_FIXED.items():
        if key in ssm_cfg and ssm_cfg[key] != required:
            raise ConvertError(f"{path}: ssm_cfg.{key}={ssm_cfg[key]!r} is not supported by TensorRT-LLM's "
                               f"Mamba2 layer (needs {required!r})")
    _require_no_dt_limit(ssm_cfg.get("dt_limit"), path, "ssm_cfg.dt_limit")
    c = _MAMBA2_DEFAULTS | ssm_cfg
    return dict(state_size=_int(c, "d_state", path, prefix=_SSM), conv_kernel=_int(c, "d_conv", path, prefix=_SSM),
                expand=_int(c, "expand", path, prefix=_SSM), head_dim=_int(c, "headdim", path, prefix=_SSM),
                n_groups=_int(c, "ngroups", path, prefix=_SSM), chunk_size=_int(c, "chunk_size", path, prefix=_SSM),
                use_bias=_bool(c, "bias", path, prefix=_SSM), use_conv_bias=_bool(c, "conv_bias", path, prefix=_SSM))


def _refuse_unknown(ssm_cfg: dict[str, Any], known: set[str], path: Path) -> None:
    unknown = sorted(set(ssm_cfg) - known - _INIT_ONLY)
    if unknown:
        raise ConvertError(f"{path}: unknown ssm_cfg field(s) {unknown}; refusing to guess what they change")


def _time_step_rank(cfg: dict[str, Any], key: str, path: Path, hidden: int, prefix: str = "") -> int:
    """0 stands for mamba's "auto" (ceil(H/16)), so "auto" and its resolved value give the same spec."""
    if cfg.get(key, "auto") == "auto":
        return 0
    rank = _int(cfg, key, path, prefix=prefix, expected='an integer or "auto"')
    return 0 if rank == math.ceil(hidden / 16) else rank


def _rms_norm(cfg: dict[str, Any], path: Path) -> bool:
    if not _bool(cfg, "rms_norm", path, True):
        raise ConvertError(f"{path}: rms_norm=false (LayerNorm blocks) is not supported; "
                           "all Mamba checkpoints this converts use RMSNorm")
    return True


def _require_no_dt_limit(limit: Any, path: Path, field: str) -> None:
    """TensorRT-LLM never clamps dt, so only the no-op limit (0, inf) converts faithfully."""
    if limit is None:
        return
    low, high = _float_pair(limit, path, field)
    if low != 0.0 or high != math.inf:
        raise ConvertError(f"{path}: {field}={[low, high]} clamps dt, which TensorRT-LLM's Mamba layer "
                           "does not do; only (0, inf) converts")


def _float_pair(value: Any, path: Path, field: str) -> tuple[float, float]:
    try:
        low, high = (_as_float(v) for v in value)
    except (TypeError, ValueError, KeyError):  # not two items, or an item that is no number
        raise _bad_field(path, field, value, "a pair of numbers") from None
    return low, high


def _as_float(value: Any) -> float:
    if isinstance(value, dict):  # transformers 5 writes non-finite floats as {"__float__": "Infinity"}
        return float(value["__float__"])
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{value!r} is no number")
    return float(value)


def _int(cfg: dict[str, Any], key: str, path: Path, default: Any = _REQUIRED, prefix: str = "",
         expected: str = "an integer") -> int:
    """`cfg[key]`, which must be a JSON integer: int() would truncate 512.7, read the text "8" and take true for 1,
    a wrong model built without a word."""
    value = _value(cfg, key, path, default)
    if type(value) is not int:
        raise _bad_field(path, prefix + key, value, expected)
    return value


def _bool(cfg: dict[str, Any], key: str, path: Path, default: Any = _REQUIRED, prefix: str = "") -> bool:
    """`cfg[key]`, which must be a JSON true or false: bool() would take the text "false" for true."""
    value = _value(cfg, key, path, default)
    if type(value) is not bool:
        raise _bad_field(path, prefix + key, value, "true or false")
    return value


def _value(cfg: dict[str, Any], key: str, path: Path, default: Any) -> Any:
    if key in cfg:
        return cfg[key]
    if default is _REQUIRED:
        raise ConvertError(f"{path}: missing required field {key!r}")
    return default


def _bad_field(path: Path, field: str, value: Any, expected: str) -> ConvertError:
    return ConvertError(f"{path}: {field}={json.dumps(value)} is not {expected}; correct {field} in {path.name}")
