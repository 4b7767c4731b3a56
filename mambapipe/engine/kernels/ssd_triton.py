"""Mamba2 prefill as Triton kernels: the chunked SSD of `ops.ssd_chunk_scan` (same contract, same math),
split the way mamba_ssm's `mamba_chunk_scan_combined` is (the known-good structure):

1. `_chunk_cumsum`  cum[b, h, c, t] = sum_{s <= t} dt_s A within each chunk (fp32); given the raw projection
                    and dt_bias, it first forms dt = softplus(dt + dt_bias), zero past each row's length,
                    and stores it for the kernels below (one pass fewer than a separate softplus kernel).
2. `_bmm_chunk`     CB[b, c, g] = C Bᵀ per chunk and group, once for all heads of the group (tensor cores).
3. `_chunk_state`   each chunk's own end state, Σ_l x_l dt_l exp(cum_end - cum_l) B_lᵀ (tensor cores).
4. `_state_passing` the short sequential pass over chunks: the state entering each chunk, and the final one.
5. `_chunk_scan`    y_l = exp(cum_l) C_l h_in + Σ_{s<=l} CB_ls exp(cum_l - cum_s) dt_s x_s + D x_l (tensor cores).
                    Below the diagonal tile the decay factors into a row and a column scale (see there).
                    Half-precision prompts of whole chunks run ssd_cuda.py's CUDA C twin of it instead (faster on
                    the H200: GPU_NOTES.md v30).

Products accumulate in fp32 from operands in the input dtype, so fp16/bf16 inputs run on tensor cores; fp32
inputs use exact fp32 dots (not tf32), which keeps the fp32 path a tight twin of the reference. What passes
between the kernels in volume (C.Bᵀ, the state entering each chunk, y) is stored in the input dtype, as
mamba_ssm does for the states and y: the chunk scan rounds C.Bᵀ-times-decay and the state to that dtype for
its dots anyway, and in fp16 these are half the bytes the chunk scan reads from L2 (GPU_NOTES.md v9). Each
chunk's own end state and the final state stay fp32: the state pass adds them up.
Padding convention as in `ops`: dt is zero at padded positions, which leaves the state untouched.
Offsets grow from the batch (or batch x chunk) program id cast to int64: at batch 128 x 2048 tokens a Codestral
y or chunk-state tensor passes 2^31 elements.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from mambapipe.engine.kernels import pdl, ssd_cuda
from mambapipe.engine.kernels.ssm import softplus
from mambapipe.engine.state import Into

# Tile sizes for headdim 64 / d_state 128 / chunk 256 on the H200 (`gpu_micro.ssd_triton_variants` sweeps
# them, timing the SSD as a CUDA graph). The chunk scan: (BLOCK_L x 64) @ (64 x 64) tensor-core dots into a
# (BLOCK_L x 64) fp32 accumulator; one program covers a whole 64-channel head and BLOCK_L rows of a chunk.
# C.Bᵀ is formed in the same square (BLOCK_L x BLOCK_L) tiles, so a row tile's diagonal tile is one tile.
# Its 64 rows and 4 warps were the fastest of 6 settings (GPU_NOTES.md v10), though ptxas gives them 166
# registers a thread (two or three programs an SM); 8 warps or 32 rows fit more programs and ran slower. One
# stage: its loops are 0-3 tiles long, too short for staged copies to pay; a layer's SSD 89.3 -> 85.8 us
# (mamba2-2.7b), 140.6 -> 132.4 (Codestral) against 3 stages (GPU_NOTES.md v15). Head-dim tiles of 32,
# 128-row tiles, and the tiles through TMA descriptors were all slower.
BLOCK_L, BLOCK_P, BLOCK_N = 64, 64, 64  # chunk-scan rows, head-dim columns, d_state step of C.Bᵀ
CHUNK_SCAN_WARPS, CHUNK_SCAN_STAGES = 4, 1
# The chunk scan's d_state step of C.h_in: the whole d_state (128) in one dot, so its loads are not split over two
# dependent rounds; the diagonal tile is formed first for the same reason. Against a step of 64 and the diagonal
# tile last, a layer's SSD as a CUDA graph took 130.5 -> 127.2 us (Codestral), 84.3 -> 82.3 (mamba2-2.7b), 41.5
# either way (mamba2-130m) (GPU_NOTES.md v23). Unrolled loops over masked tiles, 8 warps, and launching the
# heaviest row tiles first were slower on Codestral.
CHUNK_SCAN_BLOCK_N = 128
# The chunk state's (64 x BLOCK_N) accumulator over CHUNK_STATE_BLOCK_L positions a step: with the whole
# d_state in one program x is read once; the fastest of 5 settings on the H200 (GPU_NOTES.md v10): a
# mamba2-2.7b / Codestral layer's SSD 0.110 -> 0.104 / 0.172 -> 0.165 ms against (64, 64, 4, 3).
CHUNK_STATE_BLOCK_L, CHUNK_STATE_BLOCK_N, CHUNK_STATE_WARPS, CHUNK_STATE_STAGES = 32, 128, 4, 3
BLOCK_HEADS = 2  # heads per cumsum program: a tiny latency-bound pass, so many programs (16 measured 1 us slower)
STATE_BLOCK = 1024  # state entries per state-passing program: 8 programs per 64 x 128 head state
NUM_WARPS = 4  # C.Bᵀ


@triton.jit
def _chunk_cumsum(dt_ptr, A_ptr, cum_ptr, bias_ptr, len_ptr, dt_out_ptr, L, H, T, s_dt_b, s_dt_l, s_dt_h,
                  BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, SOFTPLUS: tl.constexpr,
                  PDL: tl.constexpr):
    """SOFTPLUS: dt is the raw projection; dt = softplus(dt + bias) at t < len[b], 0 after, stored (B, L, H)."""
    pdl.allow_next_then_wait(PDL)
    b, c, hb = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    t = tl.arange(0, BLOCK_T)  # (BT,)
    h = hb * BLOCK_H + tl.arange(0, BLOCK_H)  # (BH,)
    pos = c * T + t  # (BT,) positions in the sequence
    mask = ((t < T) & (pos < L))[:, None] & (h < H)[None, :]
    dt = tl.load(dt_ptr + b * s_dt_b + pos[:, None] * s_dt_l + h[None, :] * s_dt_h, mask=mask,
                 other=0.0).to(tl.float32)  # (BT, BH)
    if SOFTPLUS:
        dt = softplus(dt + tl.load(bias_ptr + h, mask=h < H, other=0.0)[None, :])
        dt = tl.where(mask & (pos < tl.load(len_ptr + b))[:, None], dt, 0.0)  # padding leaves the state as is
        tl.store(dt_out_ptr + (b * L + pos[:, None]) * H + h[None, :], dt, mask=mask)
    A = tl.load(A_ptr + h, mask=h < H, other=0.0)  # (BH,)
    cum = tl.cumsum(dt * A[None, :], axis=0)  # (BT, BH); constant past the sequence end (dt = 0 there)
    out = cum_ptr + ((b * H + h[None, :]) * tl.num_programs(1) + c) * T + t[:, None]  # cum is (B, H, c, T)
    tl.store(out, cum, mask=(t < T)[:, None] & (h < H)[None, :])


@triton.jit
def _bmm_chunk(C_ptr, B_ptr, cb_ptr, L, G, N, T, s_cb, s_cl, s_cg, s_cn, s_bb, s_bl, s_bg, s_bn,
               BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr, PDL: tl.constexpr):
    pdl.allow_next_then_wait(PDL)
    tile, cg, b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    c, g = cg // G, cg % G
    lb, sb = tile // tl.cdiv(T, BLOCK_L), tile % tl.cdiv(T, BLOCK_L)
    if sb > lb:  # wholly above the diagonal: causal, never read
        return
    l = lb * BLOCK_L + tl.arange(0, BLOCK_L)  # (BL,) positions within the chunk
    s = sb * BLOCK_L + tl.arange(0, BLOCK_L)  # (BL,)
    l_ok, s_ok = (l < T) & (c * T + l < L), (s < T) & (c * T + s < L)
    c_rows = C_ptr + b * s_cb + (c * T + l)[:, None] * s_cl + g * s_cg  # (BL, 1)
    b_cols = B_ptr + b * s_bb + (c * T + s)[None, :] * s_bl + g * s_bg  # (1, BL)
    acc = tl.zeros((BLOCK_L, BLOCK_L), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        Cl = tl.load(c_rows + n[None, :] * s_cn, mask=l_ok[:, None] & (n < N)[None, :], other=0.0)  # (BL, BN)
        Bs = tl.load(b_cols + n[:, None] * s_bn, mask=s_ok[None, :] & (n < N)[:, None], other=0.0)  # (BN, BL)
        acc += tl.dot(Cl, Bs, input_precision=PRECISION)
    out = cb_ptr + ((b * tl.num_programs(1) + cg) * T + l[:, None]) * T + s[None, :]  # CB is (B, c, G, T, T)
    tl.store(out, acc.to(cb_ptr.dtype.element_ty), mask=(l < T)[:, None] & (s < T)[None, :])


@triton.jit
def _chunk_state(x_ptr, dt_ptr, B_ptr, cum_ptr, states_ptr, L, H, P, N, T, n_chunks, heads_per_group,
                 s_xb, s_xl, s_xh, s_xp, s_dt_b, s_dt_l, s_dt_h, s_bb, s_bl, s_bg, s_bn,
                 BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr, PRECISION: tl.constexpr,
                 EVEN: tl.constexpr, PDL: tl.constexpr):
    """EVEN as `_chunk_scan`'s: every bound check `| True`, folded away."""
    pdl.allow_next_then_wait(PDL)
    pn, bc, h = tl.program_id(0), tl.program_id(1).to(tl.int64), tl.program_id(2)
    b, c = bc // n_chunks, bc % n_chunks
    pb, nb = pn // tl.cdiv(N, BLOCK_N), pn % tl.cdiv(N, BLOCK_N)
    p = pb * BLOCK_P + tl.arange(0, BLOCK_P)  # (BP,)
    n = nb * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,)
    p_ok, n_ok = (p < P) | EVEN, (n < N) | EVEN  # (BP,), (BN,)
    cum_chunk = cum_ptr + ((b * H + h) * n_chunks + c) * T
    cum_end = tl.load(cum_chunk + T - 1)
    x_cols = x_ptr + b * s_xb + h * s_xh + p[:, None] * s_xp  # (BP, 1)
    b_cols = B_ptr + b * s_bb + (h // heads_per_group) * s_bg + n[None, :] * s_bn  # (1, BN)
    acc = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
    for l0 in range(0, T, BLOCK_L):
        l = l0 + tl.arange(0, BLOCK_L)  # (BL,) positions within the chunk
        pos, in_chunk = c * T + l, (l < T) | EVEN
        ok = in_chunk & ((pos < L) | EVEN)  # (BL,)
        xT = tl.load(x_cols + pos[None, :] * s_xl, mask=p_ok[:, None] & ok[None, :], other=0.0)  # (BP, BL)
        dt = tl.load(dt_ptr + b * s_dt_b + pos * s_dt_l + h * s_dt_h, mask=ok, other=0.0)  # (BL,)
        cum = tl.load(cum_chunk + l, mask=in_chunk, other=0.0)  # (BL,)
        Bl = tl.load(b_cols + pos[:, None] * s_bl, mask=ok[:, None] & n_ok[None, :], other=0.0)  # (BL, BN)
        weight = tl.exp(cum_end - cum) * dt  # (BL,): decay from l to the chunk's end, times the step
        # weighted on the x side: (BP, BL) is the smaller tile when BLOCK_N > BLOCK_P
        acc += tl.dot((xT.to(tl.float32) * weight[None, :]).to(xT.dtype), Bl, input_precision=PRECISION)
    out = states_ptr + ((bc * H + h) * P + p[:, None]) * N + n[None, :]  # states is (B, c, H, P, N)
    tl.store(out, acc, mask=p_ok[:, None] & n_ok[None, :])


@triton.jit
def _state_passing(states_ptr, carried_ptr, cum_ptr, final_ptr, slot_ptr, H, T, n_chunks, PN, s_final,
                   BLOCK: tl.constexpr, SLOTS: tl.constexpr, PDL: tl.constexpr):
    """From each chunk's own end state (fp32) the state entering that chunk (carried, in the input dtype), and
    the final state into row b of final (or its row slots[b]: SLOTS), in final's dtype."""
    pdl.allow_next_then_wait(PDL)
    i, b, h = tl.program_id(0), tl.program_id(1).to(tl.int64), tl.program_id(2)
    e = i * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,) flat (P, N) entries
    mask = e < PN
    state = tl.zeros((BLOCK,), dtype=tl.float32)
    for c in range(n_chunks):  # few chunks (L / 256): sequential, the state stays in registers
        at = ((b * n_chunks + c) * H + h) * PN + e
        own = tl.load(states_ptr + at, mask=mask, other=0.0)
        tl.store(carried_ptr + at, state.to(carried_ptr.dtype.element_ty), mask=mask)
        decay = tl.exp(tl.load(cum_ptr + ((b * H + h) * n_chunks + c) * T + T - 1))
        state = state * decay + own
    dst = tl.load(slot_ptr + b).to(tl.int64) if SLOTS else b
    tl.store(final_ptr + dst * s_final + h * PN + e, state.to(final_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _carried_in(c_rows, l_ok, state_ptr, p, P, N, s_cn, BLOCK_L: tl.constexpr, BLOCK_P: tl.constexpr,
                BLOCK_N: tl.constexpr, PRECISION: tl.constexpr, EVEN: tl.constexpr):
    """C_l . h_in for a (BL, BP) tile: the state entering the chunk, read out at each row."""
    acc = tl.zeros((BLOCK_L, BLOCK_P), dtype=tl.float32)
    p_ok = (p < P) | EVEN  # (BP,)
    for n0 in range(0, N, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        n_ok = (n < N) | EVEN  # (BN,)
        Cl = tl.load(c_rows + n[None, :] * s_cn, mask=l_ok[:, None] & n_ok[None, :], other=0.0)  # (BL, BN)
        h_in = tl.load(state_ptr + p[None, :] * N + n[:, None], mask=n_ok[:, None] & p_ok[None, :],
                       other=0.0)  # (BN, BP)
        acc += tl.dot(Cl, h_in.to(Cl.dtype), input_precision=PRECISION)
    return acc


@triton.jit
def _chunk_scan(x_ptr, dt_ptr, C_ptr, D_ptr, cum_ptr, cb_ptr, states_ptr, y_ptr,
                L, H, G, P, N, T, n_chunks, heads_per_group,
                s_xb, s_xl, s_xh, s_xp, s_dt_b, s_dt_l, s_dt_h, s_cb, s_cl, s_cg, s_cn,
                BLOCK_L: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
                EVEN: tl.constexpr, PDL: tl.constexpr):
    """EVEN: every chunk full and every tile whole (L a multiple of T, the blocks dividing T, P and N), so
    each bound check below is `| True` and folds away at compile time: fewer integer instructions."""
    pdl.allow_next_then_wait(PDL)
    lp, bc, h = tl.program_id(0), tl.program_id(1).to(tl.int64), tl.program_id(2)
    b, c, g = bc // n_chunks, bc % n_chunks, h // heads_per_group
    lb, pb = lp // tl.cdiv(P, BLOCK_P), lp % tl.cdiv(P, BLOCK_P)
    l0 = lb * BLOCK_L
    l = l0 + tl.arange(0, BLOCK_L)  # (BL,) positions within the chunk
    p = pb * BLOCK_P + tl.arange(0, BLOCK_P)  # (BP,)
    in_chunk = (l < T) | EVEN  # (BL,)
    l_ok = in_chunk & ((c * T + l < L) | EVEN)
    p_ok = (p < P) | EVEN  # (BP,)
    cum_chunk = cum_ptr + ((b * H + h) * n_chunks + c) * T
    cum_l = tl.load(cum_chunk + l, mask=in_chunk, other=0.0)  # (BL,)
    # cum never increases (dt >= 0, A < 0), so cum_l <= cum_ref <= cum_s for every row l of this tile and every
    # s of an earlier tile: exp(cum_l - cum_s) = exp(cum_l - cum_ref) * exp(cum_ref - cum_s), both factors in
    # (0, 1]. Those tiles then need a column scale (BL exps) instead of a (BL x BL) decay matrix, and the row
    # scale is applied once at the end; the carried-in term exp(cum_l) C_l h_in rides along the same way.
    cum_ref = tl.load(cum_chunk + l0)
    x_head = x_ptr + b * s_xb + h * s_xh + p[None, :] * s_xp  # (1, BP)
    cb_rows = cb_ptr + ((bc * G + g) * T + l[:, None]) * T  # (BL, 1)
    dt_head = dt_ptr + b * s_dt_b + h * s_dt_h
    # the diagonal tile first (its loads depend on no loop): the full decay matrix, masked to s <= l; its x tile
    # is this tile's rows, for the D skip too
    cb = tl.load(cb_rows + l[None, :], mask=in_chunk[:, None] & l_ok[None, :], other=0.0).to(tl.float32)
    dt_l = tl.load(dt_head + (c * T + l) * s_dt_l, mask=l_ok, other=0.0)
    xl = tl.load(x_head + (c * T + l)[:, None] * s_xl, mask=l_ok[:, None] & p_ok[None, :], other=0.0)  # (BL, BP)
    # above the diagonal cum_l - cum_s > 0 and its exp may overflow: clamped (below it the difference is <= 0)
    decay = tl.where(l[None, :] <= l[:, None], tl.exp(tl.minimum(cum_l[:, None] - cum_l[None, :], 0.0)), 0.0)
    diagonal = tl.dot((cb * decay * dt_l[None, :]).to(xl.dtype), xl, input_precision=PRECISION)  # (BL, BP)
    diagonal += xl.to(tl.float32) * tl.load(D_ptr + h)  # the D skip
    c_rows = C_ptr + b * s_cb + (c * T + l)[:, None] * s_cl + g * s_cg  # (BL, 1)
    acc = _carried_in(c_rows, l_ok, states_ptr + (bc * H + h) * P * N, p, P, N, s_cn,
                      BLOCK_L, BLOCK_P, BLOCK_N, PRECISION, EVEN) * tl.exp(cum_ref)  # (BL, BP)
    for s0 in range(0, l0, BLOCK_L):  # the tiles below the diagonal tile
        s = s0 + tl.arange(0, BLOCK_L)  # (BL,)
        s_ok = (c * T + s < L) | EVEN
        cb = tl.load(cb_rows + s[None, :], mask=in_chunk[:, None], other=0.0).to(tl.float32)  # (BL, BL)
        cum_s = tl.load(cum_chunk + s)
        dt_s = tl.load(dt_head + (c * T + s) * s_dt_l, mask=s_ok, other=0.0)
        xs = tl.load(x_head + (c * T + s)[:, None] * s_xl, mask=s_ok[:, None] & p_ok[None, :],
                     other=0.0)  # (BL, BP)
        column = tl.exp(cum_ref - cum_s) * dt_s  # (BL,)
        acc += tl.dot((cb * column[None, :]).to(xs.dtype), xs, input_precision=PRECISION)
    acc *= tl.exp(tl.minimum(cum_l - cum_ref, 0.0))[:, None]  # the row scale (rows past T: clamped, unused)
    acc += diagonal
    out = y_ptr + (((b * L + c * T + l[:, None]) * H + h) * P + p[None, :])  # y is (B, L, H, P)
    tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=l_ok[:, None] & p_ok[None, :])


def _fit(block: int, size: int) -> int:
    """The block size, shrunk to the problem's (tiny test shapes); tl.dot needs at least 16."""
    return max(16, min(block, triton.next_power_of_2(size)))


def ssd_chunk_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, chunk_size: int,
                   into: Optional[Into] = None, dt_bias: Optional[Tensor] = None,
                   lengths: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
    """x (Bt, L, Hh, P); dt (Bt, L, Hh) softplus'd (zero at padding); A, D (Hh,) fp32; B, C (Bt, L, G, N).
    Returns y = SSM(x) + D x as (Bt, L, Hh, P) in x's dtype and the final state (Bt, Hh, P, N) fp32, as
    `ops.ssd_chunk_scan` (whose y is fp32). Any strides; B and C are read in x's dtype.
    into = (states (S, Hh, P, N), contiguous past the first dim; slots (Bt,)): row b's final state goes to
    states[slots[b]] instead (in states' dtype: the inference state's layer, no copy after), and None is
    returned for it.
    dt_bias (Hh,) fp32 with lengths (Bt,): dt is the raw projection instead (any float dtype and strides), and
    the step sizes are softplus(dt + dt_bias) at t < lengths[b], 0 after (as `prefill.dt_proj_softplus`)."""
    batch, length, heads, P = x.shape
    N = B.shape[3]
    T = min(chunk_size, length)
    n_chunks = triton.cdiv(length, T)
    f32 = dict(device=x.device, dtype=torch.float32)
    cum = torch.empty(batch, heads, n_chunks, T, **f32)
    A = A.float().contiguous()
    launch = pdl.launch_options(x)
    steps = torch.empty(batch, length, heads, **f32) if dt_bias is not None else dt.float()
    raw = dt if dt_bias is not None else steps  # what the cumsum reads
    # without dt_bias the bias and lengths arguments are never read: A and cum stand in for them
    _chunk_cumsum[(batch, n_chunks, triton.cdiv(heads, BLOCK_HEADS))](
        raw, A, cum, dt_bias if dt_bias is not None else A, lengths if lengths is not None else cum, steps,
        length, heads, T, *raw.stride(), BLOCK_T=triton.next_power_of_2(T), BLOCK_H=BLOCK_HEADS,
        SOFTPLUS=dt_bias is not None, PDL=bool(launch), **launch)
    # without `into`: a new final-state tensor, row b for row b (SLOTS off, so `cum` stands in for no slots)
    final, slots = into if into is not None else (torch.empty(batch, heads, P, N, **f32), cum)
    if final[0].stride()[-3:] != (P * N, N, 1):
        raise ValueError(f"final states need contiguous (Hh, P, N) rows, got strides {final.stride()}")
    y = _chunked_ssd(x, steps, cum, B.to(x.dtype), C.to(x.dtype), D.float().contiguous(), final, slots,
                     slotted=into is not None, launch=launch)
    return y, (None if into is not None else final)


def _whole_tiles(length: int, T: int, block_l: int, *sizes_and_blocks: tuple[int, int]) -> bool:
    """EVEN: every chunk full, every row tile inside its chunk, every other block dividing its size."""
    return length % T == 0 and T % block_l == 0 and all(size % block == 0 for size, block in sizes_and_blocks)


def _chunked_ssd(x: Tensor, dt: Tensor, cum: Tensor, B: Tensor, C: Tensor, D: Tensor, final: Tensor,
                 slots: Tensor, slotted: bool, launch: dict) -> Tensor:
    """Kernels 2-5 from the step sizes dt (Bt, L, Hh) fp32 and their chunk cumsums (Bt, Hh, c, T); `launch`:
    `pdl.launch_options` for x."""
    batch, length, heads, P = x.shape
    G, N = B.shape[2:]
    n_chunks, T = cum.shape[2:]
    half = dict(device=x.device, dtype=x.dtype)  # the input dtype (fp32 in the fp32 twin tests)
    cb = torch.empty(batch, n_chunks, G, T, T, **half)  # tiles above the diagonal stay unwritten, unread
    states = torch.empty(batch, n_chunks, heads, P, N, device=x.device, dtype=torch.float32)  # chunks' own
    carried = torch.empty(batch, n_chunks, heads, P, N, **half)  # the state entering each chunk
    y = torch.empty(batch, length, heads, P, **half)
    bl, bp, bn, scan_bn = _fit(BLOCK_L, T), _fit(BLOCK_P, P), _fit(BLOCK_N, N), _fit(CHUNK_SCAN_BLOCK_N, N)
    state_bl, state_bn = _fit(CHUNK_STATE_BLOCK_L, T), _fit(CHUNK_STATE_BLOCK_N, N)
    precision = "ieee" if x.dtype == torch.float32 else "tf32"  # half inputs: tensor cores either way
    _bmm_chunk[(triton.cdiv(T, bl) ** 2, n_chunks * G, batch)](
        C, B, cb, length, G, N, T, *C.stride(), *B.stride(), BLOCK_L=bl, BLOCK_N=bn, PRECISION=precision,
        num_warps=NUM_WARPS, PDL=bool(launch), **launch)
    _chunk_state[(triton.cdiv(P, bp) * triton.cdiv(N, state_bn), batch * n_chunks, heads)](
        x, dt, B, cum, states, length, heads, P, N, T, n_chunks, heads // G, *x.stride(), *dt.stride(),
        *B.stride(), BLOCK_P=bp, BLOCK_N=state_bn, BLOCK_L=state_bl, PRECISION=precision,
        EVEN=_whole_tiles(length, T, state_bl, (P, bp), (N, state_bn)),
        num_warps=CHUNK_STATE_WARPS, num_stages=CHUNK_STATE_STAGES, PDL=bool(launch), **launch)
    _state_passing[(triton.cdiv(P * N, STATE_BLOCK), batch, heads)](
        states, carried, cum, final, slots, heads, T, n_chunks, P * N, final.stride(0), BLOCK=STATE_BLOCK,
        SLOTS=slotted, PDL=bool(launch), **launch)
    if ssd_cuda.usable(x, C, T):
        ssd_cuda.chunk_scan(x, dt, C, D, cum, cb, carried, y)
        return y
    _chunk_scan[(triton.cdiv(T, bl) * triton.cdiv(P, bp), batch * n_chunks, heads)](
        x, dt, C, D, cum, cb, carried, y, length, heads, G, P, N, T, n_chunks, heads // G,
        *x.stride(), *dt.stride(), *C.stride(), BLOCK_L=bl, BLOCK_P=bp, BLOCK_N=scan_bn, PRECISION=precision,
        EVEN=_whole_tiles(length, T, bl, (P, bp), (N, scan_bn)),
        num_warps=CHUNK_SCAN_WARPS, num_stages=CHUNK_SCAN_STAGES, PDL=bool(launch), **launch)
    return y
