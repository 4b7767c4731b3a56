"""Build a native engine directory from a TensorRT-LLM Mamba checkpoint.

The engine dir mirrors TensorRT-LLM's: `config.json` = {"version", "pretrained_config" (the checkpoint's
config), "build_config" (limits, dtype, tp, device kind)} plus one `rank{r}.safetensors` per rank with the
weights already renamed, fused, transposed and split for inference (see weights.py). Loading it needs
nothing from the checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from mambapipe.backends.base import BuildSettings
from mambapipe.engine.weights import engine_tensors
from mambapipe.models import ModelSpec

ENGINE_FORMAT = "mambapipe-native-1"
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def limits_problem(max_batch_size: int, max_input_len: int, max_seq_len: int) -> Optional[str]:
    """Why these engine limits cannot work (None when they can)."""
    if min(max_batch_size, max_input_len, max_seq_len) < 1:
        return (f"build limits must be >= 1 (max_batch_size={max_batch_size}, max_input_len={max_input_len}, "
                f"max_seq_len={max_seq_len})")
    if max_input_len > max_seq_len:
        return (f"build.max_input_len={max_input_len} exceeds build.max_seq_len={max_seq_len}; "
                f"raise build.max_seq_len or lower build.max_input_len")
    return None


def dtype_problem(dtype: str, device: str) -> Optional[str]:
    """Why `device` cannot run `dtype` (None when it can)."""
    if dtype not in DTYPES:
        return f"dtype {dtype!r} is not one of {sorted(DTYPES)}"
    if device == "cuda":
        if not torch.cuda.is_available():
            return "device=cuda but no CUDA device is visible; use device=cpu"
        if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            return "this GPU cannot run bfloat16 (needs compute capability >= 8.0); use dtype=float16"
    return None


def read_checkpoint_config(checkpoint_dir: Path) -> dict[str, Any]:
    path = checkpoint_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: not a TensorRT-LLM checkpoint; rerun the convert step")
    return json.loads(path.read_text())


def build_engine(checkpoint_dir: Path, out_dir: Path, settings: BuildSettings,
                 show_progress: bool = True) -> dict[str, Any]:
    """Write the engine dir for `checkpoint_dir` into `out_dir`; return facts for the manifest."""
    cfg = read_checkpoint_config(checkpoint_dir)
    spec = ModelSpec.from_trtllm_config(cfg)
    tp_size = int(cfg.get("mapping", {}).get("tp_size", cfg.get("mapping", {}).get("world_size", 1)))
    for problem in (limits_problem(settings.max_batch_size, settings.max_input_len, settings.max_seq_len),
                    dtype_problem(cfg["dtype"], settings.device), *spec.tp_problems(tp_size)):
        if problem:
            raise ValueError(problem)
    out_dir.mkdir(parents=True, exist_ok=True)
    for rank in tqdm(range(tp_size), desc="build ranks", disable=not show_progress or tp_size == 1):
        src = checkpoint_dir / f"rank{rank}.safetensors"
        if not src.is_file():
            raise FileNotFoundError(f"{src} is missing: the checkpoint has fewer ranks than tp_size={tp_size}")
        save_file(engine_tensors(load_file(str(src)), spec), str(out_dir / f"rank{rank}.safetensors"),
                  metadata={"format": ENGINE_FORMAT, "rank": str(rank)})
    build_config = {"max_batch_size": settings.max_batch_size, "max_input_len": settings.max_input_len,
                    "max_seq_len": settings.max_seq_len, "max_beam_width": 1, "dtype": cfg["dtype"],
                    "tp_size": tp_size, "device": settings.device, "backend": "native",
                    "ssm_state_dtype": "float32", "options": dict(settings.options)}
    engine_cfg = {"version": ENGINE_FORMAT, "pretrained_config": cfg, "build_config": build_config}
    (out_dir / "config.json").write_text(json.dumps(engine_cfg, indent=2))
    return {"engine_format": ENGINE_FORMAT, "tp_size": tp_size, "dtype": cfg["dtype"],
            "mamba_version": spec.mamba_version, "ranks": tp_size}
