"""Mamba1 prefill: the selective scan with each channel block's state held in registers, twin of
`ops.selective_scan`. One program walks the prompt (or one time segment of it, below) for BLOCK_D channels of
one sequence, T tokens (a chunk) at a time, each chunk's inputs in one coalesced 2-D load.

The (BLOCK_D, N) state tile is spread 4 states a lane, 4 lanes a channel, and each token is one unrolled step
h = exp2(dt A log2 e) h + (dt u) B, an in-thread FMA per (channel, state) element: no shuffles for the
recurrence and none to pick a chunk's last state (it is h). The chunk's (T, .) input tiles are reshaped to
(., 2, ..., 2) so that every thread holds all T tokens of its channels and states (one trip through shared
memory a chunk, placed by Triton), then halved with tl.split down to single tokens; the per-token y_t = C_t.h_t
(the only sum that crosses lanes, 2 shuffles) are gathered back with tl.join and stored with the D skip and the
silu(z) gate as one (T, BLOCK_D) tile. Nothing waits on memory per token (the v1 token loop did: 1.17 ms per
mamba-2.8b layer at 2048 tokens on the H200, GPU_NOTES.md v1), and the next chunk's loads are issued before this
chunk's arithmetic, so their latency overlaps it. Compiled for sm_90 its chunk loop is ~9-11 SASS instructions
per (token, channel, state) element. (A second kernel, a parallel prefix scan over each chunk with
tl.associative_scan at ~22-25 instructions an element, ran the narrow models until the narrow launch shape
below beat it, GPU_NOTES.md v13.) Half-precision prompts on a GPU run the CUDA C twin of these kernels instead
(`scan_cuda.py`, 9-35 % faster on the H200, GPU_NOTES.md v29) where its inputs allow; these run everything else.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from mambapipe.engine.kernels import fastmath, multiprocessors, pdl, scan_cuda, time_segments
from mambapipe.engine.state import Into

# Launch shapes (tokens per chunk, channel block, warps), measured on the H200. "standard": 32-channel blocks,
# fp16 B and C, three programs an SM (160 registers); once its grid fills the SMs it does the most work a
# program slot of the shapes measured (GPU_NOTES.md v26, device calls 190-191, one layer: 8 rows x 1024 tokens
# at mamba-2.8b's width 486 -> 384 us, at mamba-130m's 194 -> 113, 64 rows x 128 tokens 506 -> 365 and 157 ->
# 114, against the 64-channel, 8-warp shape that ran batches before, v10, which it replaced). "narrow":
# 16-channel blocks, fp32 B and C, for grids too small for the standard shape to fill the SMs in one pass (v13).
# "segment_end": `_segment_end_kernel`'s, below.
SHAPES = {"standard": (16, 32, 4), "narrow": (16, 16, 4), "segment_end": (16, 16, 2)}
# Programs of the standard or narrow shape an SM holds with fp32 step sizes: 146 and 160 registers a thread at 4
# warps, so three share an SM's 64K registers. The narrow shape runs a one-pass grid while it is one wave of these:
# on the H200's 132 SMs, 396 programs (v26: 4 rows x 1024 tokens at mamba-130m's width, 384 narrow programs, 85 us
# against the standard shape's 109; 5 rows, 480, 147 against 111). Other GPUs get the same bound per SM, not
# measured there.
PROGRAMS_PER_SM = 3
# With fp16 step sizes (`wants_half_step_sizes`) the standard scan kernel compiles to 128 registers (Triton 3.6,
# sm_90), so four programs share an SM. That pays for a grid of more programs than three an SM hold; within that
# many it loses (not profiled: the grid may land on fewer SMs, or each program run slower in 128 registers). One
# layer, us, fp32 / fp16 step sizes (GPU_NOTES.md v27, device call 195): mamba-2.8b's width, 1 row x 2048 tokens in
# 8 segments (1280 programs) 162.4 / 150.2, 8 x 1024 (1280) 387.7 / 344.8, 64 x 128 (10240) 367.3 / 327.8;
# mamba-130m's 64 x 128 (3072) 114.6 / 103.6; but mamba-130m's 1 x 2048 in 8 segments (384) 50.1 / 56.7, 8 x 1024
# (384) 113.5 / 142.3, and mamba-2.8b's 2 x 2048 (320) 221.7 / 281.3. In the model under this rule (call 196,
# prefill ms, three rounds, fp32 step sizes / the rule): mamba-2.8b S3 29.76-29.81 / 28.71-28.75, S4 88.2-89.9 /
# 85.9-86.0, S2 82.2-82.8 / 80.1-81.0; mamba-130m's within noise (S3 fp16 step sizes throughout: 3.24-3.31 against
# 3.03-3.22).
# The narrow shape reads B and C in fp32, widened by the prefill's dt_proj + softplus kernel (`wants_fp32_bc`):
# fp16 ones cost every thread 8 conversions a token (Triton 3.6 converts them after the chunk's trip through
# shared memory; the chunk loop 711 -> 599 SASS instructions), and one mamba-2.8b row's scan took 0.169 ms a
# layer against the 64-channel shape's 0.186 (v21). They take the kernel from 121 to 150 registers (3 programs an
# SM, not 4); capped at 128 it compiled without spills but made mamba-2.8b's 2048-token prefill 30.5 -> 33.9 ms
# (v21).
# Where the rows hold at most SEGMENT_MAX_CHANNELS channels in all, a prompt of two SEGMENT_MIN_TOKENS or more is
# cut into up to MAX_SEGMENTS time segments: a first kernel runs every segment but the last from a zero state to
# its end state, then each segment's program folds the end states before it into its start state and scans its
# tokens. That is more arithmetic than one pass (the state twice over most of the prompt) in ~8x the programs,
# which pays where one pass leaves the SMs short of warps to hide its latency (v20). One 2048-token layer, us
# (v25, device calls 178-179): mamba-130m's width, one row 160 -> 50, two rows 191 -> 99; mamba-2.8b's, one row
# 167 -> 163. Once the rows fill the SMs, one pass is faster (v26: 2 rows at mamba-2.8b's width 221 us in one
# pass, 275-304 in 2-8 segments). The bound is the H200's, somewhere between 160 and 320 standard programs (1.2 and
# 2.4 an SM), so it is not scaled by a GPU's SM count as the narrow bound is.
# The segment-end kernel runs on programs of two warps and 16 channels: 95 registers with fp16 step sizes (ten
# programs an SM, 20 warps) and 158 with fp32 ones (six, 12 warps), against the standard shape's 160 (three, 12
# warps). One row of 2048 tokens in 8 segments, that kernel alone, us, standard shape / its own (GPU_NOTES.md v28,
# device call 208): mamba-2.8b's width 58.8 / 52.0 (fp16 step sizes), 61.2 / 59.0 (fp32); mamba-130m's 20.6 /
# 19.0, 21.1 / 20.2. mamba-2.8b's 2048-token prefill, three rounds (call 209): 28.20-28.37 -> 27.81-27.95 ms.
SEGMENT_MAX_CHANNELS, SEGMENT_MIN_TOKENS, MAX_SEGMENTS = 5120, 256, 8
LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x log2 e): the exp2 saves a multiply an element


@triton.jit
def _channel_block(A_ptr, Di, N: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's row and channels (grid: rows x channel blocks), and their A log2 e (BD, N) fp32."""
    row = tl.program_id(0)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # (BD,)
    n = tl.arange(0, N)
    dmask = d < Di
    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=dmask[:, None], other=0.0)  # (BD, N) fp32
    return row, d, n, dmask, A * LOG2E


@triton.jit
def _advance(h, A2, u, dt, B, COUNT: tl.constexpr):
    """The state h (BD, N) after COUNT tokens (`_tokens`' layout), without their outputs: a segment's end state."""
    if COUNT == 1:
        h = tl.exp2(dt[:, None] * A2) * h + (dt * u)[:, None] * B[None, :]  # (BD, N)
    else:
        u_lo, u_hi = tl.split(u)
        dt_lo, dt_hi = tl.split(dt)
        B_lo, B_hi = tl.split(B)
        h = _advance(_advance(h, A2, u_lo, dt_lo, B_lo, COUNT // 2), A2, u_hi, dt_hi, B_hi, COUNT // 2)
    return h


@triton.jit
def _tokens(h, A2, u, dt, B, C, COUNT: tl.constexpr):
    """Advance the state h (BD, N) over COUNT tokens (unrolled). u, dt (BD, 2, ..., 2) and B, C (N, 2, ..., 2)
    hold the tokens in-thread, token Σ_k bit_k 2^k at [:, bit_0, bit_1, ...]: tl.split of the last dim halves
    them. Returns h and the tokens' C.h, (BD, 2, ..., 2) in the same order."""
    if COUNT == 1:
        h = _advance(h, A2, u, dt, B, 1)  # (BD, N)
        y = tl.sum(h * C[None, :], axis=1)  # (BD,)
    else:
        u_lo, u_hi = tl.split(u)
        dt_lo, dt_hi = tl.split(dt)
        B_lo, B_hi = tl.split(B)
        C_lo, C_hi = tl.split(C)
        h, y_lo = _tokens(h, A2, u_lo, dt_lo, B_lo, C_lo, COUNT // 2)
        h, y_hi = _tokens(h, A2, u_hi, dt_hi, B_hi, C_hi, COUNT // 2)
        y = tl.join(y_lo, y_hi)  # (BD, 2, ..., 2)
    return h, y


@triton.jit
def _reverse_bits(x, LOG2_T: tl.constexpr):
    """Reverse the order of x's 2-sized dims 1..LOG2_T (its own inverse)."""
    if LOG2_T == 1:
        r = x
    elif LOG2_T == 2:
        r = tl.permute(x, (0, 2, 1))
    elif LOG2_T == 3:
        r = tl.permute(x, (0, 3, 2, 1))
    elif LOG2_T == 4:
        r = tl.permute(x, (0, 4, 3, 2, 1))
    else:
        tl.static_assert(LOG2_T == 5, "tokens per chunk: 2 to 32")
        r = tl.permute(x, (0, 5, 4, 3, 2, 1))
    return r


@triton.jit
def _token_bits(x, T: tl.constexpr, LOG2_T: tl.constexpr):
    """(T, K) in token order -> (K, 2, ..., 2) with token Σ_k bit_k 2^k at [:, bit_0, bit_1, ...]."""
    K: tl.constexpr = x.shape[1]
    return _reverse_bits(tl.reshape(tl.trans(x), (K,) + (2,) * LOG2_T), LOG2_T)


@triton.jit
def _load_state_inputs(u_ptr, delta_ptr, B_ptr, t0, L, d, n, dmask, stride_ul, stride_dl, stride_bl,
                       T: tl.constexpr):
    """Tokens t0 .. t0+T-1 of what the state reads (pointers at the row's start): u, dt (T, BD), B (T, N), zero
    past the end (dt = 0 there: a = 1 and b = 0 keep the state)."""
    t = t0 + tl.arange(0, T)
    m2 = (t < L)[:, None] & dmask[None, :]  # (T, BD)
    u = tl.load(u_ptr + t[:, None] * stride_ul + d[None, :], mask=m2, other=0.0)
    dt = tl.load(delta_ptr + t[:, None] * stride_dl + d[None, :], mask=m2, other=0.0)
    B = tl.load(B_ptr + t[:, None] * stride_bl + n[None, :], mask=(t < L)[:, None], other=0.0)
    return u, dt, B


@triton.jit
def _load_chunk(u_ptr, delta_ptr, z_ptr, B_ptr, C_ptr, t0, L, d, n, dmask, stride_ul, stride_dl, stride_zl,
                stride_bl, stride_cl, T: tl.constexpr):
    """`_load_state_inputs` and what the output reads as well: u, dt, z (T, BD), B, C (T, N)."""
    u, dt, B = _load_state_inputs(u_ptr, delta_ptr, B_ptr, t0, L, d, n, dmask, stride_ul, stride_dl, stride_bl, T)
    t = t0 + tl.arange(0, T)
    z = tl.load(z_ptr + t[:, None] * stride_zl + d[None, :], mask=(t < L)[:, None] & dmask[None, :], other=0.0)
    C = tl.load(C_ptr + t[:, None] * stride_cl + n[None, :], mask=(t < L)[:, None], other=0.0)
    return u, dt, z, B, C


@triton.jit
def _chunk(h, A2, Dskip, u, dt, z, B, C, y_ptr, t0, L, d, dmask, stride_yl, T: tl.constexpr, BLOCK_D: tl.constexpr):
    """One chunk from `_load_chunk`'s tiles: returns the state after it and stores its y (pointer at the row's
    start)."""
    LOG2_T: tl.constexpr = T.bit_length() - 1
    u, dt, z, B, C = u.to(tl.float32), dt.to(tl.float32), z.to(tl.float32), B.to(tl.float32), C.to(tl.float32)
    h, y = _tokens(h, A2, _token_bits(u, T, LOG2_T), _token_bits(dt, T, LOG2_T), _token_bits(B, T, LOG2_T),
                   _token_bits(C, T, LOG2_T), T)
    y = tl.trans(tl.reshape(_reverse_bits(y, LOG2_T), (BLOCK_D, T)))  # (T, BD): C.h per token
    gate = fastmath.silu(z, HALF=y_ptr.dtype.element_ty != tl.float32)
    y = (y + Dskip[None, :] * u) * gate  # D skip and gate once per chunk on a (T, BD) tile
    t = t0 + tl.arange(0, T)
    tl.store(y_ptr + t[:, None] * stride_yl + d[None, :], y.to(y_ptr.dtype.element_ty),
             mask=(t < L)[:, None] & dmask[None, :])
    return h


@triton.jit
def _segment_end_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, end_ptr, dt_sum_ptr, L, Di, seg_len,
                        stride_ub, stride_ul, stride_db, stride_dl, stride_bb, stride_bl,
                        N: tl.constexpr, T: tl.constexpr, BLOCK_D: tl.constexpr, PDL: tl.constexpr):
    """Grid (rows, channel blocks, segments but the last): each segment's end state from a zero start, and its
    summed dt (the segment's decay is exp(A sum dt) per state), for `_scan_kernel` to fold."""
    pdl.allow_next_then_wait(PDL)
    row, d, n, dmask, A2 = _channel_block(A_ptr, Di, N, BLOCK_D)
    seg = tl.program_id(2)
    LOG2_T: tl.constexpr = T.bit_length() - 1
    u_ptr, delta_ptr, B_ptr = u_ptr + row * stride_ub, delta_ptr + row * stride_db, B_ptr + row * stride_bb
    h = tl.zeros((BLOCK_D, N), dtype=tl.float32)
    dt_sum = tl.zeros((BLOCK_D,), dtype=tl.float32)
    t_start = seg * seg_len
    u, dt, B = _load_state_inputs(u_ptr, delta_ptr, B_ptr, t_start, L, d, n, dmask, stride_ul, stride_dl,
                                  stride_bl, T)
    for t0 in range(t_start, t_start + seg_len, T):
        u_next, dt_next, B_next = _load_state_inputs(u_ptr, delta_ptr, B_ptr, t0 + T, L, d, n, dmask, stride_ul,
                                                     stride_dl, stride_bl, T)
        u, dt, B = u.to(tl.float32), dt.to(tl.float32), B.to(tl.float32)
        dt_sum += tl.sum(dt, axis=0)
        h = _advance(h, A2, _token_bits(u, T, LOG2_T), _token_bits(dt, T, LOG2_T), _token_bits(B, T, LOG2_T), T)
        u, dt, B = u_next, dt_next, B_next
    at = (row * tl.num_programs(2) + seg) * Di + d  # (BD,): this (row, segment)'s channels
    tl.store(end_ptr + at[:, None] * N + n[None, :], h, mask=dmask[:, None])
    tl.store(dt_sum_ptr + at, dt_sum, mask=dmask)


@triton.jit
def _state_entering(end_ptr, dt_sum_ptr, A2, row, seg, segments_before_last, Di, d, n, dmask,
                    N: tl.constexpr, BLOCK_D: tl.constexpr):
    """The state entering segment `seg`: the end states of the segments before it, each carried through the
    later ones' decay, in order (`_segment_end_kernel`'s outputs)."""
    h = tl.zeros((BLOCK_D, N), dtype=tl.float32)
    for j in range(0, seg):
        at = (row * segments_before_last + j) * Di + d  # (BD,)
        decay = tl.exp2(tl.load(dt_sum_ptr + at, mask=dmask, other=0.0)[:, None] * A2)  # (BD, N)
        h = decay * h + tl.load(end_ptr + at[:, None] * N + n[None, :], mask=dmask[:, None], other=0.0)
    return h


@triton.jit
def _scan_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, y_ptr, state_ptr, slot_ptr, end_ptr, dt_sum_ptr,
                 L, Di, seg_len, stride_ub, stride_ul, stride_db, stride_dl, stride_bb, stride_bl, stride_cb, stride_cl,
                 stride_zb, stride_zl, stride_yb, stride_yl, stride_state,
                 N: tl.constexpr, T: tl.constexpr, BLOCK_D: tl.constexpr, SLOTS: tl.constexpr, PDL: tl.constexpr):
    """Grid (rows, channel blocks, segments): y over one segment of the prompt; the last segment's program
    stores the final state into row `row` of the states, or row slots[row] (SLOTS), in their dtype."""
    pdl.allow_next_then_wait(PDL)
    row, d, n, dmask, A2 = _channel_block(A_ptr, Di, N, BLOCK_D)
    Dskip = tl.load(D_ptr + d, mask=dmask, other=0.0)  # (BD,)
    seg, segments = tl.program_id(2), tl.num_programs(2)
    u_ptr, delta_ptr, z_ptr = u_ptr + row * stride_ub, delta_ptr + row * stride_db, z_ptr + row * stride_zb
    y_ptr, B_ptr, C_ptr = y_ptr + row * stride_yb, B_ptr + row * stride_bb, C_ptr + row * stride_cb  # row's start
    h = _state_entering(end_ptr, dt_sum_ptr, A2, row, seg, segments - 1, Di, d, n, dmask, N, BLOCK_D)
    t_start = seg * seg_len
    # the next chunk's loads are issued before this chunk's arithmetic, which hides their latency
    u, dt, z, B, C = _load_chunk(u_ptr, delta_ptr, z_ptr, B_ptr, C_ptr, t_start, L, d, n, dmask, stride_ul,
                                 stride_dl, stride_zl, stride_bl, stride_cl, T)
    for t0 in range(t_start, tl.minimum(t_start + seg_len, L), T):
        u_next, dt_next, z_next, B_next, C_next = _load_chunk(u_ptr, delta_ptr, z_ptr, B_ptr, C_ptr, t0 + T, L, d, n,
                                                              dmask, stride_ul, stride_dl, stride_zl, stride_bl,
                                                              stride_cl, T)
        h = _chunk(h, A2, Dskip, u, dt, z, B, C, y_ptr, t0, L, d, dmask, stride_yl, T, BLOCK_D)
        u, dt, z, B, C = u_next, dt_next, z_next, B_next, C_next
    if seg == segments - 1:
        dst = tl.load(slot_ptr + row).to(tl.int64) if SLOTS else row
        tl.store(state_ptr + dst * stride_state + d[:, None] * N + n[None, :], h.to(state_ptr.dtype.element_ty),
                 mask=dmask[:, None])


def launch_for(batch: int, d_inner: int, length: int, device: torch.device) -> tuple[str, int]:
    """The launch shape's name in SHAPES and the number of time segments for a scan of this size on `device`."""
    segments = min(MAX_SEGMENTS, length // SEGMENT_MIN_TOKENS)
    if batch * d_inner <= SEGMENT_MAX_CHANNELS and segments > 1:
        return "standard", segments
    if batch * triton.cdiv(d_inner, SHAPES["narrow"][1]) <= PROGRAMS_PER_SM * multiprocessors(device):
        return "narrow", 1
    return "standard", 1


def wants_fp32_bc(batch: int, d_inner: int, length: int, device: torch.device,
                  dtype: torch.dtype = torch.float32) -> bool:
    """Whether the scan of `batch` rows at this width and length in this model dtype should get B and C in fp32
    (the narrow shape's launch); the standard one keeps the projection's dtype (within 0.5 % either way in time
    segments, v25; the 64-channel shape before it ran 2-3 % slower with fp32 ones, v21), and so does the CUDA
    kernel, which keeps them as halves in shared memory and widens them there or as it reads them (v33)."""
    return launch_for(batch, d_inner, length, device)[0] == "narrow" and not scan_cuda.takes(dtype, device)


def wants_half_step_sizes(batch: int, d_inner: int, length: int, device: torch.device) -> bool:
    """Whether the scan of `batch` rows at this width and length should get its step sizes (delta) in fp16 (from a
    half model): where its grid has more programs than PROGRAMS_PER_SM an SM hold, so the kernel's fourth program
    an SM finds work. The one rounding costs y ~3e-4 relative against fp32 step sizes (v27)."""
    shape, segments = launch_for(batch, d_inner, length, device)
    programs = batch * triton.cdiv(d_inner, SHAPES[shape][1]) * segments
    return programs > PROGRAMS_PER_SM * multiprocessors(device)


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, z: Tensor,
                   into: Optional[Into] = None) -> tuple[Tensor, Optional[Tensor]]:
    """Same contract as `ops.selective_scan`: u, delta (softplus'd, zero at padding; fp32, or fp16 where
    `wants_half_step_sizes`), z (Bt, L, Di);
    A (Di, N) fp32; B, C (Bt, L, N), fp32 where `wants_fp32_bc`; D (Di,). Inner strides must be 1 (slices of
    x_proj output are fine).
    Returns y (Bt, L, Di) in u's dtype and the final state (Bt, Di, N) fp32; with `into` = (states, slots) the
    final states go to states[slots[b]] instead, rounded once to the states' dtype, and None is returned for them."""
    # Channel loads are coalesced only with a unit channel stride (the conv output arrives transposed).
    u, delta, z = (t if t.stride(-1) == 1 else t.contiguous() for t in (u, delta, z))
    batch, length, d_inner = u.shape
    N = A.shape[1]
    y = torch.empty(batch, length, d_inner, dtype=u.dtype, device=u.device)
    # without `into`: a new final-state tensor, row b for row b
    state, slots = into if into is not None else (torch.empty(batch, d_inner, N, dtype=torch.float32,
                                                              device=u.device), None)
    if state[0].stride() != (N, 1):
        raise ValueError(f"final states need contiguous (Di, N) rows, got strides {state.stride()}")
    shape, segments = launch_for(batch, d_inner, length, u.device)
    if scan_cuda.usable(u, delta, A, B, C, D, z, state, slots):
        scan_cuda.selective_scan(u, delta, A, B, C, D, z, y, state, slots, segments)
        return y, (None if into is not None else state)
    tokens, block_d, warps = SHAPES[shape]
    end_tokens, end_block_d, end_warps = SHAPES["segment_end"]
    # both powers of two: a segment is whole chunks of either kernel
    seg_len, segments = time_segments(length, segments, max(tokens, end_tokens))
    launch = pdl.launch_options(u)
    if segments > 1:
        end = torch.empty(batch, segments - 1, d_inner, N, dtype=torch.float32, device=u.device)
        dt_sum = torch.empty(batch, segments - 1, d_inner, dtype=torch.float32, device=u.device)
        _segment_end_kernel[(batch, triton.cdiv(d_inner, end_block_d), segments - 1)](
            u, delta, A, B, end, dt_sum, length, d_inner, seg_len,
            u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), B.stride(0), B.stride(1),
            N=N, T=end_tokens, BLOCK_D=end_block_d, num_warps=end_warps, PDL=bool(launch), **launch)
    else:
        end = dt_sum = A  # not read: one segment folds no earlier ones
    _scan_kernel[(batch, triton.cdiv(d_inner, block_d), segments)](
        u, delta, A, B, C, D, z, y, state, slots if slots is not None else A, end, dt_sum, length, d_inner, seg_len,
        u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), B.stride(0), B.stride(1),
        C.stride(0), C.stride(1), z.stride(0), z.stride(1), y.stride(0), y.stride(1), state.stride(0),
        N=N, T=tokens, BLOCK_D=block_d, SLOTS=slots is not None, num_warps=warps, PDL=bool(launch), **launch)
    return y, (None if into is not None else state)
