"""Build a native engine directory from a TensorRT-LLM Mamba checkpoint.

The engine dir mirrors TensorRT-LLM's: `config.json` = {"version", "pretrained_config" (the checkpoint's
config), "build_config" (limits, dtype, tp, device kind, the resolved SSM state dtype)}
plus one `rank{r}.safetensors` per rank with the weights already renamed, fused, transposed and split for
inference (see weights.py). Loading it needs nothing from the checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file
from tqdm import tqdm

from mambapipe.backends.base import BuildSettings
from mambapipe.checkpoint.config_json import config_tp_size, read_config_json
from mambapipe.checkpoint.safetensors_io import save_file
from mambapipe.dtypes import TORCH_DTYPES
from mambapipe.engine.weights import engine_tensors
from mambapipe.models import ModelSpec

# -2: build_config's ssm_state_dtype is the dtype the engine really keeps its state in (-1 wrote "float32"
# while the CUDA path kept it in the model dtype), and build_config gained fused_conv_ssm. That option is
# gone (its kernel made no measured case faster); an older -2 engine that still has the key loads as before
# and the key is ignored, without a bump: it chose only a decode kernel, not what the engine computes.
ENGINE_FORMAT = "mambapipe-native-2"
SSM_STATE_DTYPES = ("auto", *TORCH_DTYPES)


def limits_problem(max_batch_size: int, max_input_len: int, max_seq_len: int) -> Optional[str]:
    """Why these engine limits cannot work (None when they can)."""
    if min(max_batch_size, max_input_len, max_seq_len) < 1:
        return (f"build limits must be >= 1 (max_batch_size={max_batch_size}, max_input_len={max_input_len}, "
                f"max_seq_len={max_seq_len})")
    if max_input_len > max_seq_len:
        return (f"build.max_input_len={max_input_len} exceeds build.max_seq_len={max_seq_len}; "
                f"raise build.max_seq_len or lower build.max_input_len")
    return None


def no_cuda_device(device: str = "cuda") -> str:
    return f"device={device} but torch sees no CUDA device; use device=cpu or device=auto"


def dtype_problem(dtype: str, device: str) -> Optional[str]:
    """Why `device` (cpu, cuda or cuda:N) cannot run `dtype` (None when it can)."""
    if dtype not in TORCH_DTYPES:
        return f"dtype {dtype!r} is not one of {sorted(TORCH_DTYPES)}"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return no_cuda_device(device)
        index, count = device.partition(":")[2], torch.cuda.device_count()
        if index and int(index) >= count:  # else torch's "invalid device ordinal" at the first allocation
            choices = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
            return f"device={device} but torch sees {count} CUDA device(s); use {choices}, or cuda"
        if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            return "this GPU cannot run bfloat16 (needs compute capability >= 8.0); use dtype=float16"
    return None


def ssm_state_dtype_problem(setting: str, device: str) -> Optional[str]:
    """Why build.ssm_state_dtype=`setting` cannot run on `device` (None when it can)."""
    if setting not in SSM_STATE_DTYPES:
        return f"build.ssm_state_dtype={setting!r} is not one of {list(SSM_STATE_DTYPES)}; pick one of those"
    no_bf16 = device == "cuda" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported()
    if setting == "bfloat16" and no_bf16:
        return "this GPU cannot hold a bfloat16 SSM state (needs compute capability >= 8.0); use float16 or float32"
    return None


def residual_problem(spec: ModelSpec) -> Optional[str]:
    """The native engine keeps the residual stream in float32, as every published Mamba checkpoint asks; a model
    that rounds it to its own dtype would be computed otherwise (None when the spec asks for float32)."""
    if spec.residual_in_fp32:
        return None
    return ("residual_in_fp32=false: the native engine keeps the residual stream in float32; build this checkpoint "
            "with backend=trtllm, or use one with residual_in_fp32 true (model.arch.residual_in_fp32 for "
            "model.source=synthetic)")


def resolve_ssm_state_dtype(setting: str, dtype: str, device: str) -> str:
    """auto: the model dtype on CUDA (the Triton kernels' choice, as mamba_ssm's: half the state traffic
    of fp32, the dominant decode term of Mamba2 at batch), float32 on the CPU torch path."""
    if setting != "auto":
        return setting
    return dtype if device == "cuda" else "float32"


def build_engine(checkpoint_dir: Path, out_dir: Path, settings: BuildSettings,
                 show_progress: bool = True) -> dict[str, Any]:
    """Write the engine dir for `checkpoint_dir` into `out_dir`; return facts for the manifest."""
    cfg = read_config_json(checkpoint_dir, "a TensorRT-LLM checkpoint", "convert")
    spec = ModelSpec.from_trtllm_config(cfg)
    tp_size = config_tp_size(cfg)
    for problem in (limits_problem(settings.max_batch_size, settings.max_input_len, settings.max_seq_len),
                    dtype_problem(cfg["dtype"], settings.device), residual_problem(spec), *spec.tp_problems(tp_size)):
        if problem:
            raise ValueError(problem)
    runtime = runtime_settings(settings, cfg["dtype"])
    out_dir.mkdir(parents=True, exist_ok=True)
    for rank in tqdm(range(tp_size), desc="build ranks", disable=not show_progress or tp_size == 1):
        src = checkpoint_dir / f"rank{rank}.safetensors"
        if not src.is_file():
            raise FileNotFoundError(f"{src} is missing: the checkpoint has fewer ranks than tp_size={tp_size}")
        save_file(engine_tensors(load_file(str(src)), spec), out_dir / f"rank{rank}.safetensors",
                  metadata={"format": ENGINE_FORMAT, "rank": str(rank)})
    build_config = {"max_batch_size": settings.max_batch_size, "max_input_len": settings.max_input_len,
                    "max_seq_len": settings.max_seq_len, "max_beam_width": 1, "dtype": cfg["dtype"],
                    "tp_size": tp_size, "device": settings.device, "backend": "native",
                    **runtime}
    engine_cfg = {"version": ENGINE_FORMAT, "pretrained_config": cfg, "build_config": build_config}
    (out_dir / "config.json").write_text(json.dumps(engine_cfg, indent=2))
    return {"engine_format": ENGINE_FORMAT, "tp_size": tp_size, "dtype": cfg["dtype"],
            "mamba_version": spec.mamba_version, "ranks": tp_size, **runtime}


def runtime_settings(settings: BuildSettings, dtype: str) -> dict[str, Any]:
    """The native engine's own build.* options (from BuildSettings.options), resolved as it will run them;
    raises ValueError for a bad one."""
    setting = settings.options.get("ssm_state_dtype", "auto")
    problem = ssm_state_dtype_problem(setting, settings.device)
    if problem:
        raise ValueError(problem)
    return {"ssm_state_dtype": resolve_ssm_state_dtype(setting, dtype, settings.device)}
