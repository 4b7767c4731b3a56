"""Reading Mamba checkpoints in every supported layout and writing the TensorRT-LLM checkpoint."""

from __future__ import annotations

import importlib
from typing import Any

from mambapipe.checkpoint.detect import FORMATS, HF_MAMBA, HF_MAMBA2, MAMBA_SSM, MISTRAL, SourceInfo, detect_source
from mambapipe.checkpoint.errors import ConvertError, DamagedFileError

__all__ = ["convert_checkpoint", "detect_source", "parse_dtype", "SourceInfo", "ConvertError", "DamagedFileError",
           "FORMATS", "HF_MAMBA", "HF_MAMBA2", "MAMBA_SSM", "MISTRAL"]
_FROM_CONVERT = ("convert_checkpoint", "parse_dtype")


def __getattr__(name: str) -> Any:
    """The converter's names, from mambapipe.checkpoint.convert when first asked for: it imports torch, which the
    plan's reads of a checkpoint's config (detect, config_json) must not wait for."""
    if name in _FROM_CONVERT:
        return getattr(importlib.import_module("mambapipe.checkpoint.convert"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
