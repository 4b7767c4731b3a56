"""Mamba1 prefill: the selective scan with each channel block's state held in registers, twin of
`ops.selective_scan`. One program walks the whole prompt for BLOCK_D channels of one sequence; the
per-token loads do not depend on the carried state, so the compiler can issue them ahead (num_stages)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _scan_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, y_ptr, state_ptr, L, Di,
                 stride_ub, stride_ul, stride_db, stride_dl, stride_bb, stride_bl, stride_cb, stride_cl,
                 stride_zb, stride_zl, stride_yb, stride_yl,
                 N: tl.constexpr, BLOCK_D: tl.constexpr):
    row = tl.program_id(0)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # (BD,)
    n = tl.arange(0, N)
    dmask = d < Di
    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=dmask[:, None], other=0.0)  # (BD, N) fp32
    Dskip = tl.load(D_ptr + d, mask=dmask, other=0.0)
    h = tl.zeros((BLOCK_D, N), dtype=tl.float32)
    for t in range(L):
        u = tl.load(u_ptr + row * stride_ub + t * stride_ul + d, mask=dmask, other=0.0).to(tl.float32)
        dt = tl.load(delta_ptr + row * stride_db + t * stride_dl + d, mask=dmask, other=0.0).to(tl.float32)
        z = tl.load(z_ptr + row * stride_zb + t * stride_zl + d, mask=dmask, other=0.0).to(tl.float32)
        B = tl.load(B_ptr + row * stride_bb + t * stride_bl + n).to(tl.float32)  # (N,)
        C = tl.load(C_ptr + row * stride_cb + t * stride_cl + n).to(tl.float32)
        h = h * tl.exp(dt[:, None] * A) + (dt * u)[:, None] * B[None, :]
        y = (tl.sum(h * C[None, :], axis=1) + Dskip * u) * (z * tl.sigmoid(z))
        tl.store(y_ptr + row * stride_yb + t * stride_yl + d, y.to(y_ptr.dtype.element_ty), mask=dmask)
    tl.store(state_ptr + row * Di * N + d[:, None] * N + n[None, :], h, mask=dmask[:, None])


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                   z: Tensor) -> tuple[Tensor, Tensor]:
    """Same contract as `ops.selective_scan`: u, delta (softplus'd, zero at padding), z (Bt, L, Di);
    A (Di, N) fp32; B, C (Bt, L, N); D (Di,). Inner strides must be 1 (slices of x_proj output are fine).
    Returns y (Bt, L, Di) in u's dtype and the final state (Bt, Di, N) fp32."""
    # Channel loads are coalesced only with a unit channel stride (the conv output arrives transposed).
    u, delta, z = (t if t.stride(-1) == 1 else t.contiguous() for t in (u, delta, z))
    batch, length, d_inner = u.shape
    N = A.shape[1]
    y = torch.empty(batch, length, d_inner, dtype=u.dtype, device=u.device)
    state = torch.empty(batch, d_inner, N, dtype=torch.float32, device=u.device)
    block_d = 32
    grid = (batch, triton.cdiv(d_inner, block_d))
    _scan_kernel[grid](u, delta, A, B, C, D, z, y, state, length, d_inner,
                       u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), B.stride(0), B.stride(1),
                       C.stride(0), C.stride(1), z.stride(0), z.stride(1), y.stride(0), y.stride(1),
                       N=N, BLOCK_D=block_d, num_warps=4, num_stages=3)
    return y, state
