"""Mamba1 prefill: the selective scan with each channel block's state held in registers, twin of
`ops.selective_scan`.

One program walks the whole prompt for BLOCK_D channels of one sequence, T tokens at a time: the T tokens'
inputs arrive in one coalesced 2-D load, their decays and inputs are formed in parallel, and the
first-order recurrence h_t = a_t h_{t-1} + b_t runs as a parallel prefix scan over the T tokens
(tl.associative_scan), seeded with the carried state. A token-by-token loop instead waits one global-memory
round trip per token (measured 1.17 ms per mamba-2.8b layer at 2048 tokens on the H200, GPU_NOTES.md v1).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from mambapipe.engine.kernels import pdl

TOKENS_PER_CHUNK = 32  # tuned on the H200 (GPU_NOTES.md v2): 0.233 ms per mamba-2.8b layer at 2048 tokens
BLOCK_D = 16
NUM_WARPS = 4


@triton.jit
def _linear_recurrence(a1, b1, a2, b2):
    """Compose h -> a1 h + b1 then h -> a2 h + b2."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _scan_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, y_ptr, state_ptr, L, Di,
                 stride_ub, stride_ul, stride_db, stride_dl, stride_bb, stride_bl, stride_cb, stride_cl,
                 stride_zb, stride_zl, stride_yb, stride_yl,
                 N: tl.constexpr, T: tl.constexpr, BLOCK_D: tl.constexpr, PDL: tl.constexpr):
    pdl.allow_next_then_wait(PDL)
    row = tl.program_id(0)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # (BD,)
    n = tl.arange(0, N)
    dmask = d < Di
    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=dmask[:, None], other=0.0)  # (BD, N) fp32
    Dskip = tl.load(D_ptr + d, mask=dmask, other=0.0)
    h = tl.zeros((BLOCK_D, N), dtype=tl.float32)
    last = (tl.arange(0, T) == T - 1)[:, None, None]  # (T, 1, 1): picks the chunk's final state
    for t0 in range(0, L, T):
        t = t0 + tl.arange(0, T)  # (T,)
        m2 = (t < L)[:, None] & dmask[None, :]  # (T, BD)
        u = tl.load(u_ptr + row * stride_ub + t[:, None] * stride_ul + d[None, :], mask=m2, other=0.0).to(tl.float32)
        dt = tl.load(delta_ptr + row * stride_db + t[:, None] * stride_dl + d[None, :], mask=m2, other=0.0)
        z = tl.load(z_ptr + row * stride_zb + t[:, None] * stride_zl + d[None, :], mask=m2, other=0.0).to(tl.float32)
        tn = (t < L)[:, None]
        B = tl.load(B_ptr + row * stride_bb + t[:, None] * stride_bl + n[None, :], mask=tn, other=0.0).to(tl.float32)
        C = tl.load(C_ptr + row * stride_cb + t[:, None] * stride_cl + n[None, :], mask=tn, other=0.0).to(tl.float32)
        dt = dt.to(tl.float32)
        a = tl.exp(dt[:, :, None] * A[None, :, :])  # (T, BD, N); 1 past the end: state kept
        b = (dt * u)[:, :, None] * B[:, None, :]  # (T, BD, N)
        a_cum, b_cum = tl.associative_scan((a, b), 0, _linear_recurrence)
        hs = a_cum * h[None, :, :] + b_cum  # (T, BD, N): the state after each token
        y = (tl.sum(hs * C[:, None, :], axis=2) + Dskip[None, :] * u) * (z * tl.sigmoid(z))  # (T, BD)
        tl.store(y_ptr + row * stride_yb + t[:, None] * stride_yl + d[None, :], y.to(y_ptr.dtype.element_ty), mask=m2)
        h = tl.sum(tl.where(last, hs, 0.0), axis=0)  # (BD, N)
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
    grid = (batch, triton.cdiv(d_inner, BLOCK_D))
    launch = pdl.launch_options(u)
    _scan_kernel[grid](u, delta, A, B, C, D, z, y, state, length, d_inner,
                       u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), B.stride(0), B.stride(1),
                       C.stride(0), C.stride(1), z.stride(0), z.stride(1), y.stride(0), y.stride(1),
                       N=N, T=TOKENS_PER_CHUNK, BLOCK_D=BLOCK_D, num_warps=NUM_WARPS, PDL=bool(launch), **launch)
    return y, state
