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

from safetensors.torch import load_file
from tqdm import tqdm

from mambapipe.backends.base import BuildSettings
from mambapipe.checkpoint.config_json import config_tp_size, read_config_json
from mambapipe.checkpoint.safetensors_io import save_file
from mambapipe.engine.checks import (
    ENGINE_FORMAT,
    dtype_problem,
    limits_problem,
    resolve_ssm_state_dtype,
    ssm_state_dtype_problem,
)
from mambapipe.engine.weights import engine_tensors
from mambapipe.models import ModelSpec


def residual_problem(spec: ModelSpec) -> Optional[str]:
    """The native engine keeps the residual stream in float32, as every published Mamba checkpoint asks; a model
    that rounds it to its own dtype would be computed otherwise (None when the spec asks for float32)."""
    if spec.residual_in_fp32:
        return None
    return ("residual_in_fp32=false: the native engine keeps the residual stream in float32; build this checkpoint "
            "with backend=trtllm, or use one with residual_in_fp32 true (model.arch.residual_in_fp32 for "
            "model.source=synthetic)")


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
