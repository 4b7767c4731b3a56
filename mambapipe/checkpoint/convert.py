"""Convert any supported Mamba checkpoint into the TensorRT-LLM checkpoint: `config.json` plus one
`rank{r}.safetensors` per tensor-parallel rank, streamed tensor by tensor.

Failure leaves nothing that looks complete: rank files are written under a `.partial` name and renamed
only when all of them are finished, and `config.json` is written last.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mambapipe.checkpoint.detect import SourceInfo, detect_source
from mambapipe.checkpoint.errors import ConvertError, DamagedFileError
from mambapipe.checkpoint.safetensors_io import PlannedTensor, StreamingSafetensorsWriter
from mambapipe.checkpoint.sources import TensorSource, open_source
from mambapipe.checkpoint.tp import shard, shard_shape
from mambapipe.checkpoint.trtllm import TrtTensor, trtllm_tensors
from mambapipe.dtypes import TORCH_DTYPES
from mambapipe.models import TRTLLM_NORM_EPSILON, unknown_dtype
from mambapipe.pipeline.store import write_atomic

log = logging.getLogger(__name__)

_FINITE_CHECK_CHUNK = 1 << 22  # elements per finiteness pass, so the check never doubles a big tensor
_EXPONENT_BITS = {torch.float16: (torch.int16, 0x7C00), torch.bfloat16: (torch.int16, 0x7F80),
                  torch.float32: (torch.int32, 0x7F800000)}


def convert_checkpoint(model_dir: str | Path, out_dir: str | Path, dtype: str, tp_size: int = 1,
                       progress: bool = True) -> dict[str, Any]:
    """Returns the manifest facts: source format and files, spec, dtype, tp_size and each output's sha256. Paths may
    start with ~, as on the command line."""
    model_dir = Path(model_dir).expanduser()
    out_dir = _clear_outputs(model_dir, Path(out_dir).expanduser())
    model_dtype = parse_dtype(dtype)
    info = detect_source(model_dir)
    _say_if_norm_epsilon_dropped(info)
    problems = info.spec.tp_problems(tp_size)
    if problems:
        raise ConvertError(f"{info.config_file}: cannot split this model {tp_size} ways: {'; '.join(problems)}")
    source = open_source(info)
    out_dir.mkdir(parents=True, exist_ok=True)
    digests = _write_ranks(source, trtllm_tensors(info.spec), out_dir, model_dtype, tp_size, progress)
    config = json.dumps(info.spec.to_trtllm_config(dtype, tp_size), indent=2).encode()
    write_atomic(out_dir / "config.json", config)
    digests["config.json"] = hashlib.sha256(config).hexdigest()
    return {"source_format": info.format, "source_files": [f.name for f in info.weight_files],
            "spec": dataclasses.asdict(info.spec), "dtype": dtype, "tp_size": tp_size, "sha256": digests}


def _say_if_norm_epsilon_dropped(info: SourceInfo) -> None:
    """TensorRT-LLM's format holds its own norm_epsilon and its converter drops HF's layer_norm_epsilon; this
    converter does the same (TensorRT-LLM parity), and says so where that changes the model's outputs."""
    if info.norm_epsilon is not None and info.norm_epsilon != TRTLLM_NORM_EPSILON:
        log.warning("%s: layer_norm_epsilon=%s is not carried over: TensorRT-LLM's Mamba checkpoint normalizes with "
                    "%s, so logits differ slightly from transformers' on this checkpoint", info.config_file,
                    info.norm_epsilon, TRTLLM_NORM_EPSILON)


def _clear_outputs(model_dir: Path, out_dir: Path) -> Path:
    """Remove an earlier run's checkpoint first, so a failure now cannot leave it looking like this run's."""
    if out_dir.resolve() == model_dir.resolve():
        raise ConvertError(f"{out_dir}: the output directory is the source checkpoint; choose another one")
    if out_dir.is_dir():
        for stale in [out_dir / "config.json", *out_dir.glob("rank*.safetensors"), *out_dir.glob("*.partial")]:
            stale.unlink(missing_ok=True)
    return out_dir


def parse_dtype(dtype: str) -> torch.dtype:
    problem = unknown_dtype(dtype)
    if problem:
        raise ConvertError(problem)
    return TORCH_DTYPES[dtype]


def _write_ranks(source: TensorSource, tensors: list[TrtTensor], out_dir: Path, model_dtype: torch.dtype,
                 tp_size: int, progress: bool) -> dict[str, str]:
    """Each full tensor is produced once and its shards go to every rank file, so the source is read once."""
    finals = [out_dir / f"rank{r}.safetensors" for r in range(tp_size)]
    plan = _rank_plan(tensors, model_dtype, tp_size)
    writers: list[StreamingSafetensorsWriter] = []
    try:  # writers open inside: one that fails to open must not leave the earlier ones' files behind
        for final in finals:
            writers.append(StreamingSafetensorsWriter(final.with_name(final.name + ".partial"), plan))
        for tensor in tqdm(tensors, desc=f"convert tp{tp_size}", unit="tensor", disable=not progress):
            full = produce(source, tensor, model_dtype)
            for rank, writer in enumerate(writers):
                writer.write(tensor.name, shard(full, tensor.split, tp_size, rank))
            del full
        digests = [w.close() for w in writers]
    except BaseException:
        for w in writers:
            w.abort()
        raise
    for writer, final in zip(writers, finals):
        os.replace(writer.path, final)
    return {f.name: d for f, d in zip(finals, digests)}


def _rank_plan(tensors: list[TrtTensor], model_dtype: torch.dtype, tp_size: int) -> list[PlannedTensor]:
    return [PlannedTensor(t.name, shard_shape(t.shape, t.split, tp_size), torch.float32 if t.fp32 else model_dtype)
            for t in tensors]


def produce(source: TensorSource, tensor: TrtTensor, model_dtype: torch.dtype) -> torch.Tensor:
    """The full (unsharded) TensorRT-LLM tensor: sources rounded to the model dtype, then transformed."""
    inputs = [_load_rounded(source, name, model_dtype) for name in tensor.sources]
    out = tensor.transform(*inputs)
    return out.float() if tensor.fp32 else out


def _load_rounded(source: TensorSource, name: str, model_dtype: torch.dtype) -> torch.Tensor:
    raw = source.load(name)
    rounded = raw.to(model_dtype)
    if not _all_finite(rounded):
        entry = source.tensors[name]
        if not _all_finite(raw):
            raise DamagedFileError(entry.file, f"tensor {entry.key!r} contains NaN or inf")
        peak = float(raw.abs().max())
        raise ConvertError(f"{entry.where()} has values up to {peak:.4g}, beyond {model_dtype} "
                           f"(they would become inf); convert with dtype=bfloat16 or float32")
    return rounded


def _all_finite(t: torch.Tensor) -> bool:
    """inf and NaN are exactly the floats whose exponent bits are all ones; testing those bits is about 3x
    faster than isfinite() on CPU, and chunking keeps the temporary small."""
    int_dtype, mask = _EXPONENT_BITS.get(t.dtype, (None, 0))
    flat = t.reshape(-1)
    for start in range(0, flat.numel(), _FINITE_CHECK_CHUNK):
        chunk = flat[start:start + _FINITE_CHECK_CHUNK]
        if int_dtype is None:
            bad = not bool(torch.isfinite(chunk).all())
        else:
            bad = bool(((chunk.view(int_dtype) & mask) == mask).any())
        if bad:
            return False
    return True
