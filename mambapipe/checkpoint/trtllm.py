"""The TensorRT-LLM Mamba checkpoint tensors (reference §1.6 Mamba1, §1.7 Mamba2): names, full shapes,
dtypes, the canonical source tensors each is made from, the transform, and the tensor-parallel split.

Transforms receive source tensors already rounded to the model dtype: TensorRT-LLM's loader casts
every tensor to the model dtype first, so its fp32 tensors (A, D, dt_bias) are fp32 copies of fp16/bf16
values, e.g. A = -exp(float(fp16(A_log))). Doing the same keeps the output bit-faithful.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from mambapipe.checkpoint.naming import EMBEDDING, LM_HEAD
from mambapipe.checkpoint.tp import Split
from mambapipe.models import ModelSpec

Transform = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class TrtTensor:
    name: str
    shape: tuple[int, ...]  # full (tp_size=1) shape
    sources: tuple[str, ...]  # canonical source names, in the transform's argument order
    transform: Transform
    split: Split | None = None  # None: replicated on every rank
    fp32: bool = False  # stored as float32 whatever the model dtype


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _conv_weight(w: torch.Tensor) -> torch.Tensor:
    return w.unsqueeze(-1)  # (C, 1, K) -> (C, 1, K, 1)


def _to_fp32(t: torch.Tensor) -> torch.Tensor:
    return t.float()


def _a_mamba1(a_log: torch.Tensor) -> torch.Tensor:
    return -torch.exp(a_log.float()).t()  # (Di, N) -> (N, Di)


def _a_mamba2(a_log: torch.Tensor) -> torch.Tensor:
    return -torch.exp(a_log.float())  # (Hh,)


def _first_half(t: torch.Tensor) -> torch.Tensor:
    return t[: t.shape[0] // 2]  # in_proj rows are x then z


def _second_half(t: torch.Tensor) -> torch.Tensor:
    return t[t.shape[0] // 2:]


def trtllm_tensors(spec: ModelSpec) -> list[TrtTensor]:
    """Every tensor of the checkpoint, in a fixed order: fp32 tensors first so every tensor in the
    written file starts at an offset aligned to its element size."""
    V, H = spec.vocab_size, spec.hidden_size
    lm_head_source = EMBEDDING if spec.tie_embeddings else LM_HEAD
    tensors = [TrtTensor("backbone.vocab_embedding.weight", (V, H), (EMBEDDING,), _same)]
    layer = _mamba2_layer if spec.is_mamba2 else _mamba1_layer
    for i in range(spec.num_layers):
        tensors.append(TrtTensor(f"backbone.layers.{i}.input_layernorm.weight", (H,),
                                 (f"layers.{i}.norm.weight",), _same))
        tensors.extend(layer(spec, f"layers.{i}.mixer.", f"backbone.layers.{i}.ssm."))
    tensors.append(TrtTensor("backbone.ln_f.weight", (H,), ("norm_f.weight",), _same))
    tensors.append(TrtTensor("lm_head.weight", (V, H), (lm_head_source,), _same, Split(0)))
    return sorted(tensors, key=lambda t: not t.fp32)  # stable: keeps the order within each group


def _mamba1_layer(spec: ModelSpec, src: str, dst: str) -> list[TrtTensor]:
    H, Di, N, K, R = spec.hidden_size, spec.intermediate_size, spec.state_size, spec.conv_kernel, spec.dt_rank
    rows, cols = Split(0), Split(1)  # channel (d_inner) split: rows of producers, columns of consumers
    out = [
        TrtTensor(dst + "in_proj_x.weight", (Di, H), (src + "in_proj.weight",), _first_half, rows),
        TrtTensor(dst + "in_proj_z.weight", (Di, H), (src + "in_proj.weight",), _second_half, rows),
        TrtTensor(dst + "conv1d.weight", (Di, 1, K, 1), (src + "conv1d.weight",), _conv_weight, rows),
        TrtTensor(dst + "x_proj.weight", (R + 2 * N, Di), (src + "x_proj.weight",), _same, cols),
        TrtTensor(dst + "dt_proj.weight", (Di, R), (src + "dt_proj.weight",), _same, rows),
        TrtTensor(dst + "dt_bias", (Di,), (src + "dt_proj.bias",), _to_fp32, rows, fp32=True),
        TrtTensor(dst + "A", (N, Di), (src + "A_log",), _a_mamba1, cols, fp32=True),
        TrtTensor(dst + "D", (Di,), (src + "D",), _to_fp32, rows, fp32=True),
        TrtTensor(dst + "out_proj.weight", (H, Di), (src + "out_proj.weight",), _same, cols),
    ]
    if spec.use_conv_bias:
        out.append(TrtTensor(dst + "conv1d.bias", (Di,), (src + "conv1d.bias",), _same, rows))
    if spec.use_bias:  # TensorRT-LLM's converter writes both halves to in_proj_x.bias; we split them
        out.append(TrtTensor(dst + "in_proj_x.bias", (Di,), (src + "in_proj.bias",), _first_half, rows))
        out.append(TrtTensor(dst + "in_proj_z.bias", (Di,), (src + "in_proj.bias",), _second_half, rows))
        out.append(TrtTensor(dst + "out_proj.bias", (H,), (src + "out_proj.bias",), _same))
    return out


def _mamba2_layer(spec: ModelSpec, src: str, dst: str) -> list[TrtTensor]:
    H, Di, K, Hh = spec.hidden_size, spec.intermediate_size, spec.conv_kernel, spec.num_heads
    GN = spec.n_groups * spec.state_size
    zxbcdt, xbc, rows = Split(0, (Di, Di, GN, GN, Hh)), Split(0, (Di, GN, GN)), Split(0)
    out = [
        TrtTensor(dst + "in_proj.weight", (spec.in_proj_rows, H), (src + "in_proj.weight",), _same, zxbcdt),
        TrtTensor(dst + "conv1d.weight", (spec.conv_dim, 1, K, 1), (src + "conv1d.weight",), _conv_weight, xbc),
        TrtTensor(dst + "A", (Hh,), (src + "A_log",), _a_mamba2, rows, fp32=True),
        TrtTensor(dst + "D", (Hh,), (src + "D",), _to_fp32, rows, fp32=True),
        TrtTensor(dst + "dt_bias", (Hh,), (src + "dt_bias",), _to_fp32, rows, fp32=True),
        TrtTensor(dst + "norm.weight", (Di,), (src + "norm.weight",), _same, rows),
        TrtTensor(dst + "out_proj.weight", (H, Di), (src + "out_proj.weight",), _same, Split(1)),
    ]
    if spec.use_conv_bias:
        out.append(TrtTensor(dst + "conv1d.bias", (spec.conv_dim,), (src + "conv1d.bias",), _same, xbc))
    if spec.use_bias:  # out_proj is a RowLinear: its bias is added once, after the all-reduce
        out.append(TrtTensor(dst + "in_proj.bias", (spec.in_proj_rows,), (src + "in_proj.bias",), _same, zxbcdt))
        out.append(TrtTensor(dst + "out_proj.bias", (H,), (src + "out_proj.bias",), _same))
    return out
