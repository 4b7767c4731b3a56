"""Reading Mamba checkpoints in every supported layout and writing the TensorRT-LLM checkpoint."""

from __future__ import annotations

from mambapipe.checkpoint.convert import convert_checkpoint, parse_dtype
from mambapipe.checkpoint.detect import FORMATS, HF_MAMBA, HF_MAMBA2, MAMBA_SSM, MISTRAL, SourceInfo, detect_source
from mambapipe.checkpoint.errors import ConvertError, DamagedFileError

__all__ = ["convert_checkpoint", "detect_source", "parse_dtype", "SourceInfo", "ConvertError", "DamagedFileError",
           "FORMATS", "HF_MAMBA", "HF_MAMBA2", "MAMBA_SSM", "MISTRAL"]
