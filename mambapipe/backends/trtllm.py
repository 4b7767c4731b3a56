"""The TensorRT-LLM backend: NVIDIA's own engine, built with `trtllm-build` and run with its runtime.

TensorRT-LLM is an optional extra (`pip install -e '.[trtllm]' --extra-index-url https://pypi.nvidia.com`)
that only installs on GPU machines, so nothing here imports it at module level: plans work without it,
and `unavailable_reason` says what is missing. Build: trtllm_build.py; engine config: trtllm_engine.py;
generation: trtllm_runtime.py.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import shlex
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import torch

from mambapipe.backends.base import BuildSettings, Generator
from mambapipe.backends.trtllm_build import (
    BUILD_EXECUTABLE,
    BUILD_FLAGS_VERSION,
    describe_build,
    needed_max_num_tokens,
    run_build_command,
    trtllm_build_command,
)
from mambapipe.backends.trtllm_engine import ARCHITECTURE, EngineInfo, read_engine_config
from mambapipe.backends.trtllm_runtime import load_generator
from mambapipe.checkpoint.config_json import config_tp_size, read_config_json
from mambapipe.pipeline.step import StepError

INSTALL_HINT = ("pip install -e '.[trtllm]' --extra-index-url https://pypi.nvidia.com on a machine with an "
                "NVIDIA GPU, or use backend=native")


def unavailable_reason(device: str) -> Optional[str]:
    """None when tensorrt_llm is importable, a GPU is present and trtllm-build is on PATH."""
    if importlib.util.find_spec("tensorrt_llm") is None:
        return f"backend=trtllm needs TensorRT-LLM, which is not installed: {INSTALL_HINT}"
    if device != "cuda" or not torch.cuda.is_available():
        return f"backend=trtllm needs a CUDA GPU (device is {device}); use backend=native"
    if shutil.which(BUILD_EXECUTABLE) is None:
        return (f"{BUILD_EXECUTABLE} is not on PATH although tensorrt_llm is installed; activate the environment "
                f"that installed it ({INSTALL_HINT})")
    return None


def _version(distribution: str) -> Optional[str]:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _tensorrt_version() -> Optional[str]:
    """TensorRT ships under several distribution names (tensorrt, tensorrt_cu12, ...); the module knows."""
    if importlib.util.find_spec("tensorrt") is None:
        return None
    return str(getattr(importlib.import_module("tensorrt"), "__version__", None))


def environment() -> dict[str, Any]:
    """Facts outside the config that change the engine, and the version of our trtllm-build command line; the build
    step hashes them into its key."""
    capability = None
    if torch.cuda.is_available():
        capability = "{}.{}".format(*torch.cuda.get_device_capability(0))
    return {"tensorrt_llm": _version("tensorrt_llm"), "tensorrt": _tensorrt_version(),
            "gpu_compute_capability": capability, "trtllm_build_flags": BUILD_FLAGS_VERSION}


def _built_engine(out_dir: Path, checkpoint: dict[str, Any], settings: BuildSettings) -> EngineInfo:
    """What trtllm-build wrote, which must be a complete engine of the checkpoint's dtype and ranks within the limits
    asked for: the build key promises them, and an engine that clamped one would fail or mislabel every evaluation
    that reused it."""
    try:
        info = read_engine_config(out_dir)
    except StepError as err:
        raise StepError(f"{BUILD_EXECUTABLE} exited 0 without writing a complete engine ({err}); its output is in "
                        "the run log") from None
    asked = {"dtype": checkpoint["dtype"], "tp_size": config_tp_size(checkpoint),
             "max_batch_size": settings.max_batch_size, "max_input_len": settings.max_input_len,
             "max_seq_len": settings.max_seq_len}
    max_num_tokens = needed_max_num_tokens(settings)
    if max_num_tokens is not None:  # else the command leaves it to trtllm-build, as NVIDIA's does
        asked["max_num_tokens"] = max_num_tokens
    wrong = [f"{key} {getattr(info, key)}, asked {value}" for key, value in asked.items()
             if getattr(info, key) != value]
    if wrong:
        raise StepError(f"{BUILD_EXECUTABLE} wrote an engine other than the one asked for ({'; '.join(wrong)}); see "
                        "its output in the run log for why, and fix the install or the build.* limits")
    return info


def _check_checkpoint(checkpoint_dir: Path) -> dict[str, Any]:
    """The convert artifact must be a TensorRT-LLM Mamba checkpoint with every rank's weights; returns its config."""
    cfg = read_config_json(checkpoint_dir, "a TensorRT-LLM checkpoint", "convert")
    if cfg.get("architecture") != ARCHITECTURE:
        raise StepError(f"checkpoint {checkpoint_dir} is a {cfg.get('architecture')!r}, not {ARCHITECTURE!r}; "
                        "rerun the convert step")
    world_size = int((cfg.get("mapping") or {}).get("world_size", 1))
    missing = [f"rank{r}.safetensors" for r in range(world_size)
               if not (checkpoint_dir / f"rank{r}.safetensors").is_file()]
    if missing:
        raise StepError(f"checkpoint {checkpoint_dir} lacks {missing[0]} (world_size {world_size}); "
                        "rerun the convert step")
    return cfg


class TrtllmBackend:
    name = "trtllm"

    def unavailable_reason(self, device: str) -> Optional[str]:
        return unavailable_reason(device)

    def environment(self) -> dict[str, Any]:
        return environment()

    def describe_build(self, checkpoint_dir: Path, output_dir: Path, settings: BuildSettings) -> list[str]:
        """The exact shell-quoted `trtllm-build` line (printed in the plan with plan_only=true)."""
        return describe_build(Path(checkpoint_dir), Path(output_dir), settings)

    def build(self, checkpoint_dir: Path, out_dir: Path, settings: BuildSettings,
              show_progress: bool = True) -> dict[str, Any]:
        """Run trtllm-build on the convert artifact, streaming its output into the log. There is no bar to
        show or hide (trtllm-build reports no progress of its own), so `show_progress` changes nothing."""
        reason = unavailable_reason(settings.device)
        if reason:
            raise StepError(reason)
        checkpoint = _check_checkpoint(Path(checkpoint_dir))
        cmd = trtllm_build_command(Path(checkpoint_dir), Path(out_dir), settings)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        run_build_command(cmd, cwd=Path(out_dir))
        info = _built_engine(Path(out_dir), checkpoint, settings)
        return {"command": shlex.join(cmd), "build_seconds": round(time.perf_counter() - start, 2),
                "engine_version": info.version, "tp_size": info.tp_size,
                "inflight_batching": info.supports_inflight_batching}

    def load(self, engine_dir: Path, device: str) -> Generator:
        return load_generator(Path(engine_dir), device)


BACKEND = TrtllmBackend()

__all__ = ["BACKEND", "describe_build", "environment", "trtllm_build_command", "unavailable_reason"]
