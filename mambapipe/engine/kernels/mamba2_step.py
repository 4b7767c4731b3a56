"""The Mamba2 decode step between in_proj and out_proj in two kernels instead of three: conv update +
SSM update in one (each program convolves its own x channels and, redundantly, its group's B and C
channels), then the gated norm, which also shifts the B/C conv state. The B/C columns are shared by every
head of a group, so no program of the first kernel may shift them while others still read them; the
second kernel starts after all of the first have finished (same stream), which makes the shift safe.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from mambapipe.engine import ops
from mambapipe.engine.kernels.conv import conv_step
from mambapipe.engine.kernels.norms import gated_norm_group
from mambapipe.engine.kernels.ssm import softplus, mamba2_state_update_ref


@triton.jit
def _conv_ssm_kernel(in_ptr, cs_ptr, cw_ptr, cb_ptr, state_ptr, dt_bias_ptr, A_ptr, D_ptr, y_ptr,
                     stride_in, stride_csb, stride_csc, stride_sb, stride_sh, stride_sp, stride_y,
                     xbc_off, dt_off, Di, BC, P, heads_per_group,
                     N: tl.constexpr, BLOCK_P: tl.constexpr, HAS_BIAS: tl.constexpr):
    row, head, pblock = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    p = pblock * BLOCK_P + tl.arange(0, BLOCK_P)  # (BP,)
    n = tl.arange(0, N)
    pmask, nmask = p < P, n < N
    group = head // heads_per_group
    in_row, cs_row = in_ptr + row * stride_in, cs_ptr + row * stride_csb
    ch = head * P + p  # x channels: owned by this program, so it shifts their state
    x = tl.load(in_row + xbc_off + ch, mask=pmask, other=0.0).to(tl.float32)
    x = conv_step(x, cs_row + ch * stride_csc, cw_ptr + ch * 4, cb_ptr + ch, pmask, HAS_BIAS, True)
    ch = Di + group * N + n  # B channels, then C: read-only here
    B = conv_step(tl.load(in_row + xbc_off + ch).to(tl.float32), cs_row + ch * stride_csc, cw_ptr + ch * 4,
                  cb_ptr + ch, nmask, HAS_BIAS, False)
    ch += BC
    C = conv_step(tl.load(in_row + xbc_off + ch).to(tl.float32), cs_row + ch * stride_csc, cw_ptr + ch * 4,
                  cb_ptr + ch, nmask, HAS_BIAS, False)
    dt = softplus(tl.load(in_row + dt_off + head).to(tl.float32) + tl.load(dt_bias_ptr + head))
    s_ptrs = state_ptr + row * stride_sb + head * stride_sh + p[:, None] * stride_sp + n[None, :]  # (BP, N)
    s = tl.load(s_ptrs, mask=pmask[:, None], other=0.0).to(tl.float32)
    s = s * tl.exp(dt * tl.load(A_ptr + head)) + (x * dt)[:, None] * B[None, :]
    tl.store(s_ptrs, s.to(state_ptr.dtype.element_ty), mask=pmask[:, None])
    y = tl.sum(s * C[None, :], axis=1) + x * tl.load(D_ptr + head)
    tl.store(y_ptr + row * stride_y + head * P + p, y, mask=pmask)


@triton.jit
def _shift_in(state_row, x, mask):
    s1 = tl.load(state_row + 1, mask=mask, other=0.0)
    s2 = tl.load(state_row + 2, mask=mask, other=0.0)
    tl.store(state_row, s1, mask=mask)
    tl.store(state_row + 1, s2, mask=mask)
    tl.store(state_row + 2, x.to(state_row.dtype.element_ty), mask=mask)


@triton.jit
def _gate_norm_shift_kernel(y_ptr, in_ptr, w_ptr, out_ptr, cs_ptr, stride_y, stride_in, stride_out, stride_csb,
                            stride_csc, xbc_off, Di, BC, G, eps, N: tl.constexpr, BLOCK: tl.constexpr):
    row, group = tl.program_id(0), tl.program_id(1)
    in_row = in_ptr + row * stride_in
    gated_norm_group(y_ptr + row * stride_y, in_row, w_ptr, out_ptr + row * stride_out, group, G, eps, BLOCK=BLOCK)
    n = tl.arange(0, N)
    nmask = n < N
    for part in tl.static_range(2):  # this group's B channels, then its C channels
        ch = Di + part * BC + group * N + n
        _shift_in(cs_ptr + row * stride_csb + ch * stride_csc, tl.load(in_row + xbc_off + ch), nmask)


def mamba2_step(zxbcdt: Tensor, conv_state: Tensor, conv_w: Tensor, conv_b, ssm_state: Tensor, dt_bias: Tensor,
                A: Tensor, D: Tensor, gate_w: Tensor, group_size: int, eps: float) -> Tensor:
    """zxbcdt (Bt, Di + C + Hh) = the in_proj output (z | x B C | dt), unit inner stride; conv_state
    (Bt, C, 3) and ssm_state (Bt, Hh, P, N) updated in place; conv_w (C, 4), conv_b (C,) or None; dt_bias,
    A, D (Hh,) fp32; gate_w (Di,). Returns RMSNorm_groups(y * silu(z)) * gate_w as (Bt, Di) in gate_w's dtype.
    Needs as many norm groups as B/C groups (true of Mamba2: both are ngroups)."""
    batch, heads, P, N = ssm_state.shape
    Di = heads * P
    BC = (conv_state.shape[1] - Di) // 2
    if Di // group_size != BC // N:
        raise ValueError(f"{Di // group_size} norm groups but {BC // N} B/C groups; use the unfused kernels")
    y = torch.empty(batch, Di, dtype=torch.float32, device=zxbcdt.device)
    block_p = min(16, triton.next_power_of_2(P))
    bias = conv_b if conv_b is not None else conv_w
    _conv_ssm_kernel[(batch, heads, triton.cdiv(P, block_p))](
        zxbcdt, conv_state, conv_w, bias, ssm_state, dt_bias, A, D, y, zxbcdt.stride(0), conv_state.stride(0),
        conv_state.stride(1), ssm_state.stride(0), ssm_state.stride(1), ssm_state.stride(2), y.stride(0),
        Di, Di + conv_state.shape[1], Di, BC, P, heads // (BC // N), N=N, BLOCK_P=block_p,
        HAS_BIAS=conv_b is not None, num_warps=4)
    out = torch.empty(batch, Di, dtype=gate_w.dtype, device=zxbcdt.device)
    block = triton.next_power_of_2(group_size)
    _gate_norm_shift_kernel[(batch, Di // group_size)](
        y, zxbcdt, gate_w, out, conv_state, y.stride(0), zxbcdt.stride(0), out.stride(0), conv_state.stride(0),
        conv_state.stride(1), Di, Di, BC, group_size, eps, N=N, BLOCK=block, num_warps=min(16, max(1, block // 256)))
    return out


def mamba2_step_ref(zxbcdt: Tensor, conv_state: Tensor, conv_w: Tensor, conv_b, ssm_state: Tensor,
                    dt_bias: Tensor, A: Tensor, D: Tensor, gate_w: Tensor, group_size: int, eps: float) -> Tensor:
    """The torch twin: `ops.causal_conv1d_update`, the SSM update and `ops.gated_rms_norm`, as the model does."""
    Di, C = gate_w.shape[0], conv_state.shape[1]
    z, xBC, dt = zxbcdt.split([Di, C, zxbcdt.shape[1] - Di - C], dim=-1)
    xBC = ops.causal_conv1d_update(xBC, conv_state, conv_w, conv_b)
    x, B, Cm = xBC.split([Di, (C - Di) // 2, (C - Di) // 2], dim=-1)
    y = mamba2_state_update_ref(ssm_state, x, dt, dt_bias, A, B, Cm, D)
    return ops.gated_rms_norm(y, z, gate_w, group_size, eps).to(gate_w.dtype)
