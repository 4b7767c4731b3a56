"""One decode step of the depthwise causal conv + SiLU, twin of `ops.causal_conv1d_update`.

`conv_step` is the per-channel body, shared with the matrix-vector in_proj + conv kernel (kernels/gemv.py).
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from mambapipe.engine.kernels import pdl

WIDTH = 4  # d_conv of every Mamba/Mamba2 model we serve


@triton.jit
def conv_step(x, state_row, w_row, b_row, mask, HAS_BIAS: tl.constexpr, WRITE_STATE: tl.constexpr):
    """silu(conv) of new inputs x (fp32) for channels whose 3 state columns start at `state_row`;
    optionally shifts x into the state. Each channel's loads and stores come from the same thread, so
    reading all three columns before writing any makes the in-place shift safe."""
    s0 = tl.load(state_row, mask=mask, other=0.0)
    s1 = tl.load(state_row + 1, mask=mask, other=0.0)
    s2 = tl.load(state_row + 2, mask=mask, other=0.0)
    acc = (s0.to(tl.float32) * tl.load(w_row, mask=mask, other=0.0).to(tl.float32)
           + s1.to(tl.float32) * tl.load(w_row + 1, mask=mask, other=0.0).to(tl.float32)
           + s2.to(tl.float32) * tl.load(w_row + 2, mask=mask, other=0.0).to(tl.float32)
           + x * tl.load(w_row + 3, mask=mask, other=0.0).to(tl.float32))
    if HAS_BIAS:
        acc += tl.load(b_row, mask=mask, other=0.0).to(tl.float32)
    if WRITE_STATE:
        tl.store(state_row, s1, mask=mask)
        tl.store(state_row + 1, s2, mask=mask)
        tl.store(state_row + 2, x.to(state_row.dtype.element_ty), mask=mask)
    return acc * tl.sigmoid(acc)


@triton.jit
def _conv_update_kernel(x_ptr, state_ptr, w_ptr, b_ptr, out_ptr, C, stride_x, stride_sb, stride_sc,
                        stride_out, HAS_BIAS: tl.constexpr, BLOCK_C: tl.constexpr, PDL: tl.constexpr):
    row = tl.program_id(0)
    ch = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = ch < C
    pdl.allow_next(PDL)
    pdl.wait_previous(PDL)
    x = tl.load(x_ptr + row * stride_x + ch, mask=mask, other=0.0)
    y = conv_step(x.to(tl.float32), state_ptr + row * stride_sb + ch * stride_sc, w_ptr + ch * 4, b_ptr + ch,
                  mask, HAS_BIAS=HAS_BIAS, WRITE_STATE=True)
    tl.store(out_ptr + row * stride_out + ch, y.to(out_ptr.dtype.element_ty), mask=mask)


def causal_conv1d_update(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """x (B, C) with a unit inner stride (may be a column slice of the in_proj output); conv_state
    (B, C, K-1) with a unit last stride, shifted in place; weight (C, K) contiguous; bias (C,) or None.
    Returns silu(conv) as a new contiguous (B, C) in x's dtype."""
    batch, channels = x.shape
    if weight.shape[1] != WIDTH:
        raise ValueError(f"fused conv update supports d_conv={WIDTH}, got {weight.shape[1]}")
    out = torch.empty(batch, channels, dtype=x.dtype, device=x.device)
    block = 256
    grid = (batch, triton.cdiv(channels, block))
    launch = pdl.launch_options(x)
    _conv_update_kernel[grid](x, conv_state, weight, bias if bias is not None else weight, out, channels,
                              x.stride(0), conv_state.stride(0), conv_state.stride(1), out.stride(0),
                              HAS_BIAS=bias is not None, BLOCK_C=block, PDL=bool(launch), num_warps=2, **launch)
    return out
