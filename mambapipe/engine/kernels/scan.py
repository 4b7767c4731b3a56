"""Mamba1 prefill: the selective scan with each channel block's state held in registers, twin of
`ops.selective_scan`.

A program walks its tokens for BLOCK_D channels of one sequence, T tokens at a time: the T tokens' inputs
arrive in one coalesced 2-D load (issued one chunk ahead, so the memory round trip overlaps the previous
chunk's math), their decays and inputs are formed in parallel, and the first-order recurrence
h_t = a_t h_{t-1} + b_t runs as a parallel prefix scan over the T tokens (tl.associative_scan), seeded with
the carried state. A token-by-token loop instead waits one global-memory round trip per token (measured
1.17 ms per mamba-2.8b layer at 2048 tokens on the H200, GPU_NOTES.md v1).

Why segments: occupancy. One program per (row, channel block) walking the whole prompt gives a GPU only
rows x Di / BLOCK_D programs; v2's 16-channel tiles gave mamba-2.8b at batch 1 320 programs of 4 warps, whose
~250 registers a thread let 2 onto an SM: 264 ran, then 56 on a mostly idle GPU. Cutting the prompt into
segments of SEGMENT_TOKENS tokens scanned in parallel multiplies the programs, in three launches:
1. `_segment_state_kernel`: each segment from a zero state (u, delta, B only); its end state and its Σ dt
   per channel (the decay across the whole segment is exp(A Σdt)).
2. `_segment_carry_kernel`: the short sequential pass over segments: the state entering each one,
   h_in[s] = exp(A Σdt[s-1]) h_in[s-1] + end[s-1], and the final state.
3. `_scan_kernel`: each segment again from its h_in, writing y.
The price: u, delta and B read twice and every exp taken twice (pass 1 is ~40 % of pass 3's instructions),
so segments pay only where rows x channel blocks leave SMs short of warps; smaller channel blocks are the
other way to more programs, without that price.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from mambapipe.engine.kernels import pdl

TOKENS_PER_CHUNK = 16
# Segments scanned in parallel (a multiple of TOKENS_PER_CHUNK). A prompt of at most one segment takes the
# single pass (no passes 1-2). Both paths exist because which wins depends on how many programs the rows'
# channel blocks already give (the GPU A/B times both, gpu_micro.scan_variants). The default is one segment up
# to 2048 tokens: with 8-channel blocks mamba-2.8b's 640 programs at batch 1 all fit on the H200 at once
# (88 registers a thread: 5 of 4 warps an SM), so segments would only add pass 1's work.
SEGMENT_TOKENS = 2048
BLOCK_D = 8  # 16 of a (16, 8, 16) tile's elements a thread: few registers, so every program is resident
NUM_WARPS = 4
CARRY_BLOCK_D = 32  # channels a program of the carry pass: (32, N) fp32 states, a few elements a thread
CARRY_WARPS = 4
# exp(x) as exp2(x log2(e)) with A scaled once a program: tl.exp2 is one MUFU.EX2 (ex2.approx.ftz), while
# tl.exp costs a multiply, a compare and two predicated multiplies more for every (token, channel, state).
LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _linear_recurrence(a1, b1, a2, b2):
    """Compose h -> a1 h + b1 then h -> a2 h + b2."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _load_tokens(ptr, stride_l, t, cols, mask):
    """Rows t, columns cols of a (L, cols) matrix with unit column stride, as fp32."""
    return tl.load(ptr + t[:, None] * stride_l + cols[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _load_chunk(u_ptr, dt_ptr, B_ptr, stride_ul, stride_dl, stride_bl, t0, stop, d, dmask, n, T: tl.constexpr):
    """u, dt (T, BD) and B (T, N) of the T tokens from t0, fp32, zeros from `stop` on."""
    t = t0 + tl.arange(0, T)  # (T,)
    m2 = (t < stop)[:, None] & dmask[None, :]  # (T, BD)
    u = _load_tokens(u_ptr, stride_ul, t, d, m2)  # (T, BD)
    dt = _load_tokens(dt_ptr, stride_dl, t, d, m2)  # (T, BD)
    return u, dt, _load_tokens(B_ptr, stride_bl, t, n, (t < stop)[:, None])  # (T, N)


@triton.jit
def _load_output_chunk(z_ptr, C_ptr, stride_zl, stride_cl, t0, stop, d, dmask, n, T: tl.constexpr):
    """z (T, BD) and C (T, N) of the T tokens from t0, fp32, zeros from `stop` on: what y needs besides."""
    t = t0 + tl.arange(0, T)  # (T,)
    z = _load_tokens(z_ptr, stride_zl, t, d, (t < stop)[:, None] & dmask[None, :])  # (T, BD)
    return z, _load_tokens(C_ptr, stride_cl, t, n, (t < stop)[:, None])  # (T, N)


@triton.jit
def _chunk_states(h, u, dt, B, A2):
    """States after each of a chunk's tokens, from h: u, dt (T, BD), B (T, N), A2 = A log2(e), h (BD, N)
    -> (T, BD, N)."""
    a = tl.exp2(dt[:, :, None] * A2[None, :, :])  # (T, BD, N); 1 past the end (dt = 0): state kept
    b = (dt * u)[:, :, None] * B[:, None, :]  # (T, BD, N)
    a_cum, b_cum = tl.associative_scan((a, b), 0, _linear_recurrence)
    return a_cum * h[None, :, :] + b_cum


@triton.jit
def _segment_state_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, end_ptr, dtsum_ptr, L, Di, seg_len, n_seg,
                          stride_ub, stride_ul, stride_db, stride_dl, stride_bb, stride_bl,
                          N: tl.constexpr, T: tl.constexpr, BLOCK_D: tl.constexpr, PDL: tl.constexpr):
    pdl.allow_next_then_wait(PDL)
    d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)  # (BD,)
    seg, row = tl.program_id(1), tl.program_id(2)
    n = tl.arange(0, N)
    dmask = d < Di
    A2 = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=dmask[:, None], other=0.0) * LOG2E  # (BD, N) fp32
    start = seg * seg_len
    stop = tl.minimum(start + seg_len, L)
    h = tl.zeros((BLOCK_D, N), dtype=tl.float32)
    dt_sum = tl.zeros((BLOCK_D,), dtype=tl.float32)
    last = (tl.arange(0, T) == T - 1)[:, None, None]  # (T, 1, 1): picks the chunk's final state
    u_ptr, delta_ptr, B_ptr = u_ptr + row * stride_ub, delta_ptr + row * stride_db, B_ptr + row * stride_bb
    u_next, dt_next, B_next = _load_chunk(u_ptr, delta_ptr, B_ptr, stride_ul, stride_dl, stride_bl, start, stop,
                                          d, dmask, n, T)
    for t0 in range(start, stop, T):
        u, dt, B = u_next, dt_next, B_next
        # loads for the next chunk go out before this chunk's math (see _scan_kernel)
        u_next, dt_next, B_next = _load_chunk(u_ptr, delta_ptr, B_ptr, stride_ul, stride_dl, stride_bl, t0 + T,
                                              stop, d, dmask, n, T)
        h = tl.sum(tl.where(last, _chunk_states(h, u, dt, B, A2), 0.0), axis=0)  # (BD, N)
        dt_sum += tl.sum(dt, axis=0)
    at = (row * n_seg + seg) * Di + d  # (BD,): row-major (B, n_seg, Di)
    tl.store(end_ptr + at[:, None] * N + n[None, :], h, mask=dmask[:, None])
    tl.store(dtsum_ptr + at, dt_sum, mask=dmask)


@triton.jit
def _segment_carry_kernel(end_ptr, dtsum_ptr, A_ptr, h_in_ptr, state_ptr, Di, n_seg,
                          N: tl.constexpr, BLOCK_D: tl.constexpr, PDL: tl.constexpr):
    pdl.allow_next_then_wait(PDL)
    d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)  # (BD,)
    row = tl.program_id(1)
    n = tl.arange(0, N)
    dmask = d[:, None] < Di  # (BD, 1)
    A2 = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=dmask, other=0.0) * LOG2E  # (BD, N) fp32
    h = tl.zeros((BLOCK_D, N), dtype=tl.float32)
    for seg in range(0, n_seg):
        at = ((row * n_seg + seg) * Di + d)[:, None] * N + n[None, :]  # (BD, N) offsets into (B, n_seg, Di, N)
        tl.store(h_in_ptr + at, h, mask=dmask)
        end = tl.load(end_ptr + at, mask=dmask, other=0.0)  # (BD, N)
        dt_sum = tl.load(dtsum_ptr + (row * n_seg + seg) * Di + d[:, None], mask=dmask, other=0.0)  # (BD, 1)
        h = tl.exp2(dt_sum * A2) * h + end
    tl.store(state_ptr + row * Di * N + d[:, None] * N + n[None, :], h, mask=dmask)


@triton.jit
def _scan_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, y_ptr, h_in_ptr, state_ptr, L, Di,
                 seg_len, n_seg, stride_ub, stride_ul, stride_db, stride_dl, stride_bb, stride_bl,
                 stride_cb, stride_cl, stride_zb, stride_zl, stride_yb, stride_yl,
                 N: tl.constexpr, T: tl.constexpr, BLOCK_D: tl.constexpr, SEGMENTED: tl.constexpr,
                 PDL: tl.constexpr):
    pdl.allow_next_then_wait(PDL)
    d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)  # (BD,)
    seg, row = tl.program_id(1), tl.program_id(2)
    n = tl.arange(0, N)
    dmask = d < Di
    A2 = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=dmask[:, None], other=0.0) * LOG2E  # (BD, N) fp32
    Dskip = tl.load(D_ptr + d, mask=dmask, other=0.0)
    if SEGMENTED:  # the state entering this segment, from the carry pass
        at = ((row * n_seg + seg) * Di + d)[:, None] * N + n[None, :]  # (BD, N)
        h = tl.load(h_in_ptr + at, mask=dmask[:, None], other=0.0)
    else:
        h = tl.zeros((BLOCK_D, N), dtype=tl.float32)
    start = seg * seg_len
    stop = tl.minimum(start + seg_len, L)
    last = (tl.arange(0, T) == T - 1)[:, None, None]  # (T, 1, 1): picks the chunk's final state
    u_ptr, delta_ptr, B_ptr = u_ptr + row * stride_ub, delta_ptr + row * stride_db, B_ptr + row * stride_bb
    z_ptr, C_ptr = z_ptr + row * stride_zb, C_ptr + row * stride_cb
    u_next, dt_next, B_next = _load_chunk(u_ptr, delta_ptr, B_ptr, stride_ul, stride_dl, stride_bl, start, stop,
                                          d, dmask, n, T)
    z_next, C_next = _load_output_chunk(z_ptr, C_ptr, stride_zl, stride_cl, start, stop, d, dmask, n, T)
    for t0 in range(start, stop, T):
        u, dt, B, z, C = u_next, dt_next, B_next, z_next, C_next
        # The next chunk's loads go out before this chunk's math, so their round trip to memory overlaps it:
        # loaded where used, every chunk waited one (v1's token loop: ~0.57 µs a step, GPU_NOTES.md).
        u_next, dt_next, B_next = _load_chunk(u_ptr, delta_ptr, B_ptr, stride_ul, stride_dl, stride_bl, t0 + T,
                                              stop, d, dmask, n, T)
        z_next, C_next = _load_output_chunk(z_ptr, C_ptr, stride_zl, stride_cl, t0 + T, stop, d, dmask, n, T)
        t = t0 + tl.arange(0, T)  # (T,)
        m2 = (t < stop)[:, None] & dmask[None, :]  # (T, BD)
        hs = _chunk_states(h, u, dt, B, A2)  # (T, BD, N): the state after each token
        y = (tl.sum(hs * C[:, None, :], axis=2) + Dskip[None, :] * u) * (z * tl.sigmoid(z))  # (T, BD)
        y_at = y_ptr + row * stride_yb + t[:, None] * stride_yl + d[None, :]  # (T, BD)
        tl.store(y_at, y.to(y_ptr.dtype.element_ty), mask=m2)
        h = tl.sum(tl.where(last, hs, 0.0), axis=0)  # (BD, N)
    if not SEGMENTED:  # segmented: the carry pass wrote the final state
        tl.store(state_ptr + row * Di * N + d[:, None] * N + n[None, :], h, mask=dmask[:, None])


def _segment_entry_states(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, state: Tensor, n_seg: int) -> Tensor:
    """Passes 1-2: the state entering each segment (B, n_seg, Di, N) fp32; writes the final state into `state`."""
    batch, length, d_inner = u.shape
    N = A.shape[1]
    end = torch.empty(batch, n_seg, d_inner, N, dtype=torch.float32, device=u.device)  # from a zero state
    dt_sum = torch.empty(batch, n_seg, d_inner, dtype=torch.float32, device=u.device)
    launch = pdl.launch_options(u)
    _segment_state_kernel[(triton.cdiv(d_inner, BLOCK_D), n_seg, batch)](
        u, delta, A, B, end, dt_sum, length, d_inner, SEGMENT_TOKENS, n_seg,
        u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), B.stride(0), B.stride(1),
        N=N, T=TOKENS_PER_CHUNK, BLOCK_D=BLOCK_D, num_warps=NUM_WARPS, PDL=bool(launch), **launch)
    h_in = torch.empty_like(end)  # (B, n_seg, Di, N)
    _segment_carry_kernel[(triton.cdiv(d_inner, CARRY_BLOCK_D), batch)](
        end, dt_sum, A, h_in, state, d_inner, n_seg, N=N, BLOCK_D=CARRY_BLOCK_D, num_warps=CARRY_WARPS,
        PDL=bool(launch), **launch)
    return h_in


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
    n_seg = max(1, triton.cdiv(length, SEGMENT_TOKENS))  # an empty prompt still writes its zero state
    segmented = n_seg > 1
    h_in = _segment_entry_states(u, delta, A, B, state, n_seg) if segmented else state  # h_in unread if not
    # Channel blocks on grid axis 0 (launched first): neighbouring programs share the tokens' 32-byte sectors.
    launch = pdl.launch_options(u)
    _scan_kernel[(triton.cdiv(d_inner, BLOCK_D), n_seg, batch)](
        u, delta, A, B, C, D, z, y, h_in, state, length, d_inner,
        SEGMENT_TOKENS if segmented else length, n_seg,
        u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), B.stride(0), B.stride(1),
        C.stride(0), C.stride(1), z.stride(0), z.stride(1), y.stride(0), y.stride(1),
        N=N, T=TOKENS_PER_CHUNK, BLOCK_D=BLOCK_D, SEGMENTED=segmented, num_warps=NUM_WARPS,
        PDL=bool(launch), **launch)
    return y, state
