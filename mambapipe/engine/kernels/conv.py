"""One decode step of the depthwise causal conv + SiLU, twin of `ops.causal_conv1d_update`.

`conv_inputs` and `conv_step` are the per-channel body, shared with the matrix-vector in_proj + conv kernel
(kernels/gemv.py). Within a decode step a layer's conv state is read and written by that layer's conv kernel
alone, so `conv_inputs` (the state, taps and bias) may run before the PDL wait for the kernel before (the
argument is in kernels/pdl.py); gemv.py does so for small weights (`gemv.CONV_EARLY_MAX_BYTES`).
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from mambapipe.engine.kernels import CONV_WIDTH as WIDTH
from mambapipe.engine.kernels import pdl


@triton.jit
def conv_inputs(state_row, w_row, b_row, mask, HAS_BIAS: tl.constexpr):
    """For channels whose 3 state columns start at `state_row`: those columns (in the state's dtype), the 4
    taps and the bias (0 without one), the latter as fp32."""
    s0 = tl.load(state_row, mask=mask, other=0.0)
    s1 = tl.load(state_row + 1, mask=mask, other=0.0)
    s2 = tl.load(state_row + 2, mask=mask, other=0.0)
    w0 = tl.load(w_row, mask=mask, other=0.0).to(tl.float32)
    w1 = tl.load(w_row + 1, mask=mask, other=0.0).to(tl.float32)
    w2 = tl.load(w_row + 2, mask=mask, other=0.0).to(tl.float32)
    w3 = tl.load(w_row + 3, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(b_row, mask=mask, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros(w0.shape, tl.float32)
    return s0, s1, s2, w0, w1, w2, w3, bias


@triton.jit
def conv_step(x, s0, s1, s2, w0, w1, w2, w3, bias, state_row, mask, WRITE_STATE: tl.constexpr):
    """silu(conv) of new inputs x (fp32) from `conv_inputs`' values; optionally shifts x into the state.
    Each channel's loads and stores come from the same thread, so the in-place shift is safe."""
    acc = s0.to(tl.float32) * w0 + s1.to(tl.float32) * w1 + s2.to(tl.float32) * w2 + x * w3 + bias
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
    state_row = state_ptr + row * stride_sb + ch * stride_sc
    s0, s1, s2, w0, w1, w2, w3, bias = conv_inputs(state_row, w_ptr + ch * 4, b_ptr + ch, mask, HAS_BIAS)
    y = conv_step(x.to(tl.float32), s0, s1, s2, w0, w1, w2, w3, bias, state_row, mask, WRITE_STATE=True)
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
