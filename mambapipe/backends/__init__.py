"""Engine backends behind one interface (see base.py), chosen by the `backend` config key."""

from __future__ import annotations

import importlib
import importlib.util
import shutil

from mambapipe import interrupts
from mambapipe.backends.base import Backend

_MODULES = {"native": "mambapipe.backends.native", "trtllm": "mambapipe.backends.trtllm"}


def get_backend(name: str) -> Backend:
    """The backend object for a resolved name ("native" or "trtllm"); heavy imports happen inside it."""
    if name not in _MODULES:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(_MODULES)}")
    with interrupts.deferred():  # trtllm's module imports torch: whole or not at all
        return importlib.import_module(_MODULES[name]).BACKEND


def resolve_backend(requested: str, device: str) -> tuple[str, str]:
    """(backend, why) for `backend=auto|native|trtllm` on a resolved device."""
    if requested != "auto":
        return requested, "requested"
    if device != "cuda":
        return "native", f"auto: device is {device}, TensorRT-LLM needs a GPU"
    if importlib.util.find_spec("tensorrt_llm") is None:
        return "native", "auto: tensorrt_llm is not installed"
    if shutil.which("trtllm-build") is None:  # the trtllm build step would refuse to plan without it
        return "native", "auto: trtllm-build is not on PATH"
    return "trtllm", "auto: tensorrt_llm is importable, trtllm-build is on PATH and a GPU is present"
