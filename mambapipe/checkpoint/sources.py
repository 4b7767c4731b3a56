"""Lazy, canonically named access to a checkpoint's tensors, whatever files hold them.

Only metadata (name, shape, dtype) is read up front, so the whole source can be checked against the
spec before a single output byte is written. Tensor data is read one tensor at a time and nothing keeps
a memory map open between reads (a map keeps every page it touched resident: see safetensors_io).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from mambapipe.checkpoint import safetensors_io
from mambapipe.checkpoint.detect import HF_MAMBA, HF_MAMBA2, MISTRAL, SourceInfo
from mambapipe.checkpoint.errors import ConvertError, DamagedFileError, UnreadableError
from mambapipe.checkpoint.naming import LM_HEAD, canonical_name, expected_source_shapes, source_key

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class SourceTensor:
    file: Path
    key: str  # the name as stored in the file
    shape: tuple[int, ...]
    dtype: torch.dtype
    record: safetensors_io.TensorRecord | None = None  # byte range, for safetensors files

    def where(self) -> str:
        return f"{self.file}: tensor {self.key!r}"


class TensorSource:
    def __init__(self, tensors: dict[str, SourceTensor]):
        self.tensors = tensors  # canonical name -> where it lives

    def load(self, name: str) -> torch.Tensor:
        entry = self.tensors[name]
        if entry.record is not None:
            return safetensors_io.read_tensor(entry.file, entry.record)
        return _load_bin(entry.file)[entry.key]


def open_source(info: SourceInfo) -> TensorSource:
    """Index the source's tensors and check them against the spec: every expected tensor present with
    its exact shape and a float dtype, nothing unexpected."""
    tensors: dict[str, SourceTensor] = {}
    for file in info.weight_files:
        for entry in _index_file(file):
            name = canonical_name(entry.key)
            if name in tensors:
                raise ConvertError(f"{entry.where()} duplicates {tensors[name].where()}; remove one copy")
            tensors[name] = entry
    _check_against_spec(info, tensors)
    return TensorSource(tensors)


def _check_against_spec(info: SourceInfo, tensors: dict[str, SourceTensor]) -> None:
    expected = expected_source_shapes(info.spec)
    where = ", ".join(str(f) for f in info.weight_files)
    for name, shape in expected.items():
        if name not in tensors:
            if name == LM_HEAD and info.spec.tie_embeddings:
                continue  # a tied head is the embedding; HF omits it
            key = source_key(name, _backbone_prefix(info, tensors), info.format in (HF_MAMBA, HF_MAMBA2))
            raise ConvertError(f"{where}: missing tensor {key!r} (expected shape {list(shape)} from "
                               f"{info.config_file.name}); the checkpoint is incomplete or not this model")
        entry = tensors[name]
        if entry.shape != shape:
            raise ConvertError(f"{entry.where()} has shape {list(entry.shape)}, expected {list(shape)} from "
                               f"{info.config_file.name}; the weights do not match the config")
        if entry.dtype not in _FLOAT_DTYPES:
            raise ConvertError(f"{entry.where()} has dtype {entry.dtype}; expected a floating-point tensor")
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        first = tensors[unexpected[0]]
        raise ConvertError(f"{first.where()} is unexpected for this {info.spec.mamba_version} config "
                           f"({len(unexpected)} unexpected in all); the weights do not match the config")


def _backbone_prefix(info: SourceInfo, tensors: dict[str, SourceTensor]) -> str:
    """What the source writes before a backbone tensor's canonical name, read off one it holds, so that a missing
    tensor is named as the user's files spell their keys; the layout's usual prefix when it holds none."""
    for name, entry in tensors.items():
        if name.startswith("layers.") or name == "norm_f.weight":  # stored as prefix + canonical name
            return entry.key.removesuffix(name)
    return "model.backbone." if info.format == MISTRAL else "backbone."


def _index_file(file: Path) -> list[SourceTensor]:
    if file.suffix == ".safetensors":
        return [SourceTensor(file, r.key, r.shape, r.dtype, r) for r in safetensors_io.read_header(file).values()]
    return [SourceTensor(file, key, tuple(t.shape), t.dtype) for key, t in _load_bin(file).items()]


def _load_bin(file: Path) -> dict[str, torch.Tensor]:
    """A memory-mapped, weights-only state dict. Callers drop it after taking one tensor, which unmaps it."""
    if not zipfile.is_zipfile(file):  # torch.save's format since 1.6 is a zip; only it can be memory-mapped
        raise _not_mappable(file)
    try:
        state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
    except OSError as e:
        raise UnreadableError(file, e.strerror or str(e)) from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise DamagedFileError(file, f"not a loadable weights-only PyTorch state dict ({_load_problem(e)})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ConvertError(f"{file}: holds a {type(state).__name__}, not a state dict of named tensors; "
                           "save the model's state_dict()")
    return state


def _not_mappable(file: Path) -> ConvertError:
    """A legacy torch.save file (read whole for every tensor it would be, once per tensor) or no torch file at all;
    this error path alone loads it once, to tell which."""
    try:
        torch.load(file, map_location="cpu", weights_only=True)
    except OSError as e:
        return UnreadableError(file, e.strerror or str(e))
    except Exception as e:  # anything torch.load raises on a file that is no checkpoint
        return DamagedFileError(file, f"not a loadable weights-only PyTorch state dict ({_load_problem(e)})")
    return ConvertError(f"{file}: a legacy (pre-zip) torch.save file, which cannot be memory-mapped; re-save it with "
                        f"torch.save(torch.load(path), path) or as safetensors")


def _load_problem(error: Exception) -> str:
    """What torch.load found wrong, in one line: its weights-only refusal carries advice and terminal escapes
    around the finding, which follows 'WeightsUnpickler error:'."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    _, marker, finding = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (finding if marker else text).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:200]
