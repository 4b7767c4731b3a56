"""Fused residual-add + RMSNorm, and Mamba2's gated group RMSNorm.

Both reproduce the rounding of the torch path (`ops.rms_norm` on `residual.to(dtype)`, `ops.gated_rms_norm`)
so the fused engine stays within fp16/bf16 rounding of the plain one.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from mambapipe.engine import ops
from mambapipe.engine.kernels import fastmath, pdl


@triton.jit
def _add_rms_norm_kernel(res_ptr, delta_ptr, w_ptr, out_ptr, H, stride_res, stride_delta, stride_out, eps,
                         HAS_DELTA: tl.constexpr, BLOCK_H: tl.constexpr, PDL: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK_H)
    mask = cols < H
    pdl.allow_next(PDL)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0)
    pdl.wait_previous(PDL)
    r = tl.load(res_ptr + row * stride_res + cols, mask=mask, other=0.0)
    if HAS_DELTA:
        r += tl.load(delta_ptr + row * stride_delta + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(res_ptr + row * stride_res + cols, r, mask=mask)
    x = r.to(out_ptr.dtype.element_ty).to(tl.float32)  # the torch path norms residual.to(dtype)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / H + eps)
    normed = (x * rstd).to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + row * stride_out + cols, (normed * w).to(out_ptr.dtype.element_ty), mask=mask)


def add_rms_norm(residual: Tensor, delta: Optional[Tensor], weight: Tensor, eps: float) -> Tensor:
    """residual (M, H) fp32 += delta (M, H) in place (skipped when None); returns
    RMSNorm(residual.to(weight.dtype)) * weight as (M, H) in weight's dtype."""
    M, H = residual.shape
    out = torch.empty(M, H, dtype=weight.dtype, device=residual.device)
    block = triton.next_power_of_2(H)
    launch = pdl.launch_options(residual)
    _add_rms_norm_kernel[(M,)](residual, delta if delta is not None else residual, weight, out, H,
                               residual.stride(0), (delta if delta is not None else residual).stride(0),
                               out.stride(0), eps, HAS_DELTA=delta is not None, BLOCK_H=block, PDL=bool(launch),
                               num_warps=min(16, max(1, block // 256)), **launch)
    return out


def add_rms_norm_ref(residual: Tensor, delta: Optional[Tensor], weight: Tensor, eps: float) -> Tensor:
    """The torch twin: the model's `residual += delta.float(); rms_norm(residual.to(dtype))`."""
    if delta is not None:
        residual += delta.float()
    return ops.rms_norm(residual.to(weight.dtype), weight, eps)


@triton.jit
def _gated_rms_norm_kernel(y_ptr, z_ptr, w_ptr, out_ptr, D, G, stride_y, stride_z, stride_out, eps,
                           BLOCK: tl.constexpr, WEIGHT_EARLY: tl.constexpr, PDL: tl.constexpr):
    """One group of one row: RMSNorm(y * silu(z)) * w over its G columns. WEIGHT_EARLY: w is read before the
    PDL wait (a weight: kernels/pdl.py), off the critical path of a one-row launch."""
    row, group = tl.program_id(0), tl.program_id(1)
    cols = group * G + tl.arange(0, BLOCK)
    mask = tl.arange(0, BLOCK) < G
    pdl.allow_next(PDL)
    if WEIGHT_EARLY:
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    pdl.wait_previous(PDL)
    y = tl.load(y_ptr + row * stride_y + cols, mask=mask, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + row * stride_z + cols, mask=mask, other=0.0).to(tl.float32)
    x = y * fastmath.silu(z, HALF=out_ptr.dtype.element_ty != tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / G + eps)
    if not WEIGHT_EARLY:
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_out + cols, (x * rstd * w).to(out_ptr.dtype.element_ty), mask=mask)


def gated_rms_norm(y: Tensor, z: Tensor, weight: Tensor, group_size: int, eps: float) -> Tensor:
    """Twin of `ops.gated_rms_norm(y, z, weight, group_size, eps).to(weight.dtype)` for y, z (M, D) with a
    unit inner stride (z may be a column slice of the in_proj output). Returns (M, D) in weight's dtype."""
    M, D = y.shape
    out = torch.empty(M, D, dtype=weight.dtype, device=y.device)
    block = triton.next_power_of_2(group_size)
    launch = pdl.launch_options(y)
    # The weight before the wait at batch 1 only: Codestral's batch-1 step 4.018 -> 3.985 ms on the H200, while
    # at batch 64 both Mamba2 models' steps were ~0.3 % slower with it (GPU_NOTES.md v12, device call 48).
    _gated_rms_norm_kernel[(M, D // group_size)](y, z, weight, out, D, group_size, y.stride(0), z.stride(0),
                                                 out.stride(0), eps, BLOCK=block, WEIGHT_EARLY=M == 1,
                                                 PDL=bool(launch),
                                                 num_warps=min(16, max(1, block // 256)), **launch)
    return out
