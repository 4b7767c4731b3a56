"""The whole-model decode step on the fused kernels. Same contract and weights as `MambaModel.decode`,
which dispatches here on CUDA. No splits or copies of the projection outputs.

Batch 1 (GEMV_MAX_BATCH) takes the matrix-vector kernels of kernels/gemv.py, per layer: norm + in_proj +
conv update; Mamba1: x_proj, SSM update (dt_proj, D skip and z gate inside); Mamba2: SSM update; then
out_proj added into the residual (Mamba2: with the gated norm in front). A tensor-parallel rank's x_proj and
out_proj give partial sums over its slice of d_inner: they are all-reduced first, and the out_proj's then
added to the residual. Larger batches take cuBLAS GEMMs with one add+RMSNorm, then Mamba1: conv update,
x_proj, SSM update; Mamba2: conv update, SSM update and gated norm; then out_proj.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mambapipe.engine.kernels import gemv
from mambapipe.engine.kernels import tokens as token_kernels
from mambapipe.engine.kernels.conv import causal_conv1d_update
from mambapipe.engine.kernels.norms import add_rms_norm, gated_rms_norm
from mambapipe.engine.kernels.ssm import mamba1_state_update, mamba2_state_update
from mambapipe.engine.state import InferenceState
from mambapipe.engine.weights import LayerWeights
from mambapipe.models import TRTLLM_NORM_EPSILON as EPS

# Batch 1 only: there the matrix-vector kernels beat cuBLAS + the separate small kernels (S1 decode 2-25 %
# less time a step on the H200); at batch 8 their register-tile products reach a third of cuBLAS's
# bandwidth (GPU_NOTES.md, v6). The kernels accept up to gemv.MAX_BATCH rows (tested): a speed choice.
GEMV_MAX_BATCH = 1
# Models with up to this many gated-norm groups get the gate inside the out_proj kernel; more groups
# (Codestral's 8) take the gated-norm kernel first, then the plain product (GPU_NOTES.md v6: 28.3 -> 22.1 us;
# v7, under PDL: Codestral's step 5.055 ms with the gate fused, 4.199 split).
FUSED_GATE_MAX_GROUPS = 1
# Batch 1 keeps a copy of the residual stream rounded to the model dtype, written where the stream is (the
# embedding, each out_proj's add), for the norm + in_proj kernels (and the final norm + lm_head) to read: the
# torch path norms residual.to(dtype) anyway, and every program of those kernels reads the whole row, so half
# the bytes come through L2 after the PDL wait (GPU_NOTES.md v37). False: they read the fp32 stream.
ROUNDED_INPUT = True


def fused_decode(model, tokens: Tensor, state: InferenceState, lo: int) -> Tensor:
    """One token (B,) for slots [lo, lo+B) of `model` (a MambaModel); returns (B, V) fp32 logits."""
    if len(tokens) <= min(GEMV_MAX_BATCH, gemv.MAX_BATCH):
        return _gemv_decode(model, tokens, state, lo)
    residual = token_kernels.embed(tokens, model.glob["embedding"])  # (B, H) fp32
    step = _mamba2_step if model.spec.is_mamba2 else _mamba1_step
    delta = None  # the previous layer's output, added to the residual inside the next norm
    for i, w in enumerate(model.layers):
        h = add_rms_norm(residual, delta, w.norm, EPS)  # (B, H)
        conv, ssm = state.span(i, lo, lo + len(tokens))
        delta = step(model, w, h, conv, ssm)  # (B, H)
    h = add_rms_norm(residual, delta, model.glob["norm_f"], EPS)
    logits = F.linear(h, model.glob["lm_head"]).float()  # (B, V/tp)
    return model.comm.gather_last_dim(logits) if model.lm_head_split else logits


def _mamba1_step(model, w: LayerWeights, h: Tensor, conv: Tensor, ssm: Tensor) -> Tensor:
    N = model.spec.state_size
    xz = F.linear(h, w.in_proj, w.in_proj_bias)  # (B, 2Di/tp)
    x, z = xz.split(model.d_inner, dim=-1)
    x = causal_conv1d_update(x, conv, w.conv_weight, w.conv_bias)  # (B, Di/tp)
    x_dbl = model.comm.all_reduce(F.linear(x, w.x_proj))  # (B, R+2N)
    dt_low, B, C = x_dbl.split([x_dbl.shape[-1] - 2 * N, N, N], dim=-1)
    y = mamba1_state_update(ssm, x, dt_low, w.dt_proj, w.dt_bias, w.A, B, C, w.D, z)  # (B, Di/tp)
    return model._out_proj(w, y)


def _mamba2_step(model, w: LayerWeights, h: Tensor, conv: Tensor, ssm: Tensor) -> Tensor:
    zxbcdt = F.linear(h, w.in_proj, w.in_proj_bias)  # (B, rows/tp)
    group = model.spec.intermediate_size // model.spec.n_groups
    z, xBC, dt = zxbcdt.split([model.d_inner, model.d_inner + 2 * model.bc_size, model.heads], dim=-1)
    xBC = causal_conv1d_update(xBC, conv, w.conv_weight, w.conv_bias)  # (B, C/tp)
    x, B, C = xBC.split([model.d_inner, model.bc_size, model.bc_size], dim=-1)
    y = mamba2_state_update(ssm, x, dt, w.dt_bias, w.A, B, C, w.D)  # (B, Di/tp) fp32
    return model._out_proj(w, gated_rms_norm(y, z, w.gate_norm, group, EPS))


# ---- small batches: matrix-vector kernels with the norms, conv and residual add fused in ----------------

class _Stream:
    """The batch-1 residual stream: `fp32` (B, H), each layer adds into it, and where ROUNDED_INPUT its copy in the
    model dtype, `rounded`, which the norms read (`normed`). One rank only: a tensor-parallel rank adds its
    all-reduced out_proj in torch, where the copy would take a kernel of its own (not measured)."""

    def __init__(self, tokens: Tensor, table: Tensor, keep_rounded: bool):
        self.rounded = None
        if keep_rounded:
            self.rounded = torch.empty(len(tokens), table.shape[1], dtype=table.dtype, device=tokens.device)
        self.fp32 = token_kernels.embed(tokens, table, rows=self.rounded)

    @property
    def normed(self) -> Tensor:
        return self.rounded if self.rounded is not None else self.fp32


def _gemv_decode(model, tokens: Tensor, state: InferenceState, lo: int) -> Tensor:
    stream = _Stream(tokens, model.glob["embedding"], ROUNDED_INPUT and model.comm.world_size == 1)
    step = _mamba2_gemv_step if model.spec.is_mamba2 else _mamba1_gemv_step
    for i, w in enumerate(model.layers):
        conv, ssm = state.span(i, lo, lo + len(tokens))
        step(model, w, stream, conv, ssm)
    logits = gemv.norm_gemv(stream.normed, model.glob["norm_f"], model.glob["lm_head"], None, EPS,
                            out_dtype=torch.float32)  # (B, V/tp)
    return model.comm.gather_last_dim(logits) if model.lm_head_split else logits


def _mamba1_gemv_step(model, w: LayerWeights, stream: _Stream, conv: Tensor, ssm: Tensor) -> None:
    N = model.spec.state_size
    xz = gemv.norm_gemv(stream.normed, w.norm, w.in_proj, w.in_proj_bias, EPS,
                        conv=(conv, w.conv_weight, w.conv_bias, 0))  # (B, 2Di): x already conv'd
    x, z = xz.split(model.d_inner, dim=-1)
    x_dbl = model.comm.all_reduce(gemv.gemv(x, w.x_proj))  # (B, R+2N): d_inner-split partial sums
    dt_low, B, C = x_dbl.split([x_dbl.shape[-1] - 2 * N, N, N], dim=-1)
    y = mamba1_state_update(ssm, x, dt_low, w.dt_proj, w.dt_bias, w.A, B, C, w.D, z)  # (B, Di/tp)
    _add_out_proj(model, w, stream, y)


def _mamba2_gemv_step(model, w: LayerWeights, stream: _Stream, conv: Tensor, ssm: Tensor) -> None:
    zxbcdt = gemv.norm_gemv(stream.normed, w.norm, w.in_proj, w.in_proj_bias, EPS,
                            conv=(conv, w.conv_weight, w.conv_bias, model.d_inner))  # (B, rows): xBC conv'd
    z, x, B, C, dt = zxbcdt.split([model.d_inner, model.d_inner, model.bc_size, model.bc_size, model.heads], -1)
    y = mamba2_state_update(ssm, x, dt, w.dt_bias, w.A, B, C, w.D)  # (B, Di/tp) fp32
    group = model.spec.intermediate_size // model.spec.n_groups
    if model.spec.n_groups <= FUSED_GATE_MAX_GROUPS and model.comm.world_size == 1:
        gemv.gemv_residual(stream.fp32, y, w.out_proj, w.out_proj_bias, gate=(z, w.gate_norm, group), eps=EPS,
                           rounded=stream.rounded)
    else:
        _add_out_proj(model, w, stream, gated_rms_norm(y, z, w.gate_norm, group, EPS))


def _add_out_proj(model, w: LayerWeights, stream: _Stream, y: Tensor) -> None:
    """The stream += out_proj(y). One rank adds inside the matrix-vector kernel; a tensor-parallel rank's
    products are partial sums, all-reduced before the add (the torch path's order and roundings: F.linear's,
    the all-reduce in the model dtype, the bias, then the fp32 add)."""
    if model.comm.world_size == 1:
        gemv.gemv_residual(stream.fp32, y, w.out_proj, w.out_proj_bias, rounded=stream.rounded)
        return
    out = model.comm.all_reduce(gemv.gemv(y, w.out_proj))  # (B, H)
    stream.fp32 += (out + w.out_proj_bias if w.out_proj_bias is not None else out).float()
