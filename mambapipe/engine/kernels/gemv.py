"""Small-batch projections of the decode step with their neighbours fused in, so a Mamba2 layer is three
kernels (norm + in_proj + conv, SSM update, gated norm + out_proj + residual) and a Mamba1 layer four
(norm + in_proj + conv, x_proj, SSM update, out_proj + residual).

At batch 1 a decode layer is a handful of matrix-vector products and tiny elementwise kernels; on the H200
the tiny kernels and the gaps between them cost a large share of the step (GPU_NOTES.md, v6 profile).
Each program owns BLOCK_N output rows for every batch row, so it can also:
- normalize the input vector itself: it reads the whole (few-KB, L2-resident) input anyway, sums its
  squares on the way, and scales its finished dot products by 1/rms (one pass, no norm kernel);
- run the causal-conv update on the in_proj rows that are conv channels, since each channel's output is
  produced by exactly one program (no race on its conv state);
- add its rows of out_proj into the fp32 residual stream in place (again one owner per element).
Mamba1's x_proj (a few hundred output rows) runs on the same kernel without the extras.
The out_proj and x_proj kernel can also split K over SPLIT programs a row block (the fifth TILES entry),
for a weight of few rows whose grid is otherwise a wave or two of programs. Each program writes its fp32
partial sums, and the last of a row block to finish (an atomic counter, which it resets) adds them in split
order, so the result does not depend on which program finishes first. On the H200 it won only for
mamba-2.8b's out_proj (GPU_NOTES.md v9), until 8 warps a program beat it there (v13): no tile of the table
splits now; the GEMV sweep (`gpu_gemv.py`, `gpu_bench.py --tune-gemv-split`) still tries it.
A product of a few rows is memory-bound, so the weights stream through plain fp32 FMAs into register
accumulators (no tensor-core tiles). Each run of LANE_SUM adjacent columns is summed first, so the accumulators
carried through the K loop are an eighth of the tile: registers that were holding partial products now let a
program hold twice the weight columns a tile (fewer trips to memory a row) or let more programs share an SM
(GPU_NOTES.md v14). The products take the layout of the fp32 input row: where that gives a thread 4 columns (the
in_proj's (16, 512) tiles at 4 warps), a run lies in two neighbour lanes, and a tile loaded 8 columns a thread is
converted to that layout through shared memory every K step (GPU_NOTES.md twelfth session; the big models'
in_projs, where 8-byte loads avoided it, take gemv_slice's kernel since v24 and v35). Against the torch path
(`ops.rms_norm` on `residual.to(dtype)`, F.linear, `residual += out.float()`) only the rounding of the normed input
to the model dtype is skipped (it stays fp32), so the fused engine stays within fp16/bf16 rounding of the plain one.
Only the large lm_heads stream their weights through TMA into a tensor-core dot (`_lm_head_tma_kernel`): the
one way Triton pipelines the loads many tiles ahead.
At batch 1 the in_projs listed in `gemv_slice.TILES` (the big models' and mamba2-130m's) take that module's kernel,
whose programs load their whole weight slice before the PDL wait.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor
from triton.tools.tensor_descriptor import TensorDescriptor

from mambapipe.engine import ops
from mambapipe.engine.kernels import fastmath, gemv_slice, pdl
from mambapipe.engine.kernels.conv import WIDTH, conv_inputs, conv_step

MAX_BATCH = 8  # batch rows one program multiplies at once
LANE_SUM = tl.constexpr(8)  # adjacent columns a thread sums before accumulating: one 16-byte load of fp16
# (BLOCK_N, BLOCK_K, warps, stages[, split]) by (N, K, BLOCK_M) of a weight (N, K), and by (N, K, BLOCK_M,
# "gated") for the out_proj with the gated norm inside (another kernel body: same shape, other best tiles).
# split (default 1): programs sharing a row block over K, for `gemv` and `gemv_residual` only. The fastest
# tiles measured on the H200 for the five models' weights at batch 1 (`benchmarks/gpu_gemv.py`, GPU_NOTES.md
# v6, v7, v9); other shapes take `default_tiles`. The benchmark sweeps candidates through this table, each
# kernel alone. Timed in the decode step instead (v13, device calls 58-64), where the weights' loads overlap
# the kernel before (PDL), other tiles won: the 130m models' out_proj and x_proj slices are one K tile each,
# loaded whole before the wait, and their in_proj takes two; the 2.7b / 2.8b out_proj run 8 warps a program
# (mamba-2.8b's no longer splits K), and mamba-2.8b's x_proj takes 4096-column tiles. With the lane sums
# (v14, device calls 71-73, in the step) the big models' in_proj tiles are 512 columns wide and their out_proj
# tiles 2048 (at the old tiles the lane-sum kernels were 13-25 % slower a step); mamba-130m's in_proj is one
# 1024-column tile of 8 rows and mamba2-130m's gated out_proj takes 8 rows (call 75). A tp=2 Codestral rank's
# in_proj (9280, 4096) and out_proj (4096, 4096) (its partial sums, then the all-reduce) were timed in the step of
# a one-GPU model of those shapes (GPU_NOTES.md, eleventh session, device calls 103-104): 4.35 ms a step at the
# old default tiles, 2.15 at these, 2.20 with the out_proj at (4, 2048, 8), 2.63 at (16, 512, 4, 3).
TILES: dict[tuple, tuple[int, ...]] = {
    (9280, 4096, 1): (16, 512, 4, 3), (4096, 4096, 1): (8, 2048, 8, 1),
    (3072, 768, 1): (8, 1024, 4, 1), (768, 1536, 1): (4, 2048, 8, 1), (50280, 768, 1): (32, 128, 4, 3),
    (80, 1536, 1): (2, 2048, 4, 1), (10240, 2560, 1): (16, 512, 4, 3), (2560, 5120, 1): (4, 2048, 8, 1),
    (50280, 2560, 1): (32, 128, 4, 3), (192, 5120, 1): (4, 4096, 8, 1), (3352, 768, 1): (16, 512, 4, 1),
    (768, 1536, 1, "gated"): (8, 2048, 8, 1), (50288, 768, 1): (16, 128, 4, 3), (10576, 2560, 1): (16, 512, 4, 3),
    (2560, 5120, 1, "gated"): (8, 2048, 8, 1), (50288, 2560, 1): (8, 512, 4, 3), (18560, 4096, 1): (16, 512, 4, 3),
    (4096, 8192, 1): (8, 2048, 8, 1), (32768, 4096, 1): (16, 128, 4, 3)}


# Weights up to this size are read one tile ahead: each loop iteration issues the next tile's loads before
# using the current one (Triton does not pipeline these plain loads). Measured at batch 1 on the H200
# (GPU_NOTES.md v7, device call 18): mamba2-130m 0.358 -> 0.306 ms a step, mamba-130m 0.349 -> 0.344; for every
# weight it took the big models 16-30 % longer (2.7b 2.165 -> 2.823 ms; the out_proj tile's registers 160 ->
# 233, fewer programs an SM). `gpu_bench.py --gemv-load-ahead-max-mb` changes the size.
LOAD_AHEAD_MAX_BYTES = 16 * 2**20
# The kernels ("norm_gemv", "gemv") whose weights, when not read ahead, still load their first tile before
# the PDL wait for the kernel before, and use it up before the loop (so it holds no registers through it).
# Measured on the H200 (GPU_NOTES.md v9, device call 22): mamba-2.8b 2.35 -> 2.23 ms a step, mamba2-2.7b
# 2.17 -> 2.13, the others within noise. `gpu_bench.py --first-tile-early` changes the set.
FIRST_TILE_EARLY = frozenset({"norm_gemv", "gemv"})
# In_proj weights up to this size have their conv channels' state, taps and bias read before the PDL wait (safe:
# kernels/conv.py), taking that memory round trip off the latency-bound small kernels' critical path. Measured on
# the H200 (GPU_NOTES.md v11, device call 45, S1 decode ms a step, two runs each): mamba-130m 0.328 -> 0.306 /
# 0.303, mamba2-130m 0.293 / 0.297 -> 0.283; for every weight it took the big models 12-19 % longer (2.7b 2.07
# -> 2.47): the values live through the K loop, 80 -> 96 registers for the (16, 256) tile, one program fewer an SM.
CONV_EARLY_MAX_BYTES = 16 * 2**20


# lm_head weights over this size take `_lm_head_tma_kernel` (TMA-fed tensor-core dots, pipelined). Measured
# on the H200 at batch 1: alone (device call 53, CUDA graphs, weight copies rotated past L2) Codestral's lm_head
# 68.9 -> 62.7 us; in the decode step (calls 54, 55, S1 ms a step, two runs each) mamba-130m 0.297, 0.298 ->
# 0.291, 0.294 and mamba2-130m 0.284-0.287 -> 0.274-0.282, the big models within noise (Codestral 4.043, 4.048
# -> 4.038, 4.046). The in_proj on the same kernel was faster alone without its conv rows (Codestral 39.5 ->
# 37.8 us, mamba2-2.7b 17.3 -> 15.1) but made every big model's step slower (call 54: Codestral 3.99 -> 5.68
# ms, 2.7b 2.07 -> 2.23), and with its conv rows it was slower alone too, at each of 8 tiles (v13, calls 56-57:
# Codestral 39.7 -> 45.7-103 us), so the in_proj keeps `_norm_gemv_kernel`.
TMA_MIN_BYTES = 16 * 2**20
# (BLOCK_N, BLOCK_K, stages, warps) of the TMA kernel by weight shape: Codestral's lm_head the fastest of 8 in
# call 53; the others TMA_DEFAULT_TILES, the fastest at the 2.7b / 2.8b in_proj shapes there.
TMA_TILES = {(32768, 4096): (128, 128, 3, 4)}
TMA_DEFAULT_TILES = (64, 128, 4, 4)


def default_tiles(N: int, K: int, block_m: int) -> tuple[int, int, int, int]:
    """At batch 1 a large weight takes the table's tiles for its kind: a tall one (an in_proj: N > K) 16 x 512
    at 4 warps, a wide one (an out_proj or x_proj: K >= 2048) 4 x 2048 at 8 warps. On a tp=2 mamba-2.8b rank's
    shapes (one GPU, device call 104) the step took 1.44 ms with these against 3.07 with the rule below, which
    gives other shapes about 4096 products in flight a program, wide K tiles."""
    if block_m == 1 and K >= 512 and N > K:
        return 16, 512, 4, 3
    if block_m == 1 and K >= 2048:
        return 4, 2048, 8, 1
    block_k = max(LANE_SUM.value, min(256, triton.next_power_of_2(K)))
    return max(2, 4096 // (block_k * block_m)), block_k, 4, 2


def tiles_key(weight: Tensor, M: int, gated: bool = False) -> tuple:
    """The TILES key of a product of M rows with `weight` (gated: the out_proj kernel with the gated norm)."""
    return (*weight.shape, triton.next_power_of_2(M)) + (("gated",) if gated else ())


def _launch_shape(weight: Tensor, M: int, gated: bool = False) -> tuple[int, tuple[int, int, int, int, int]]:
    """BLOCK_M and (BLOCK_N, BLOCK_K, warps, stages, split) of a product of M rows with `weight`."""
    (N, K), block_m = weight.shape, triton.next_power_of_2(M)
    block_n, block_k, warps, stages, *split = TILES.get(tiles_key(weight, M, gated)) or default_tiles(N, K, block_m)
    if block_k < LANE_SUM.value:  # a set tile (gpu_bench --gemv-tiles, a sweep); default_tiles never is
        raise ValueError(f"gemv.TILES{tiles_key(weight, M, gated)} has BLOCK_K {block_k}: the lane sums need tiles "
                         f"of at least {LANE_SUM.value} columns")
    if weight.dtype == torch.float32:  # tests and reference runs: no staged copies of 4-byte tiles
        stages = 1
    return block_m, (block_n, block_k, warps, stages, split[0] if split else 1)


def _at_most(weight: Tensor, max_bytes: int) -> bool:
    return weight.numel() * weight.element_size() <= max_bytes


def _load_ahead(weight: Tensor, block_k: int, columns: int) -> bool:
    """LOAD_AHEAD for programs reading `columns` of each weight row in BLOCK_K tiles: a small weight whose
    slice spans several tiles (a one-tile slice has no next tile: FIRST_EARLY loads it before the wait)."""
    return _at_most(weight, LOAD_AHEAD_MAX_BYTES) and block_k < columns


def _first_early(weight: Tensor, kernel: str, block_k: int, columns: int) -> bool:
    """FIRST_EARLY of `kernel`: a weight not read ahead still has its first tile loaded before the PDL wait
    (the loads that read ahead do so anyway). Without PDL the order is the same, there is no wait."""
    return kernel in FIRST_TILE_EARLY and not _load_ahead(weight, block_k, columns)


def _prefetch_lines(weight: Tensor, launch: dict, block_k: int, columns: int) -> int:
    """PREFETCH_LINES of `_weights_first` for programs reading `columns` of each row in BLOCK_K tiles: 0
    without PDL, so those launches share one compiled variant, and 0 for a slice of one tile, whose load
    before the wait fetches it all anyway."""
    if not launch or block_k >= columns:
        return 0
    return pdl.prefetch_lines_per_row(weight.numel() * weight.element_size(), columns * weight.element_size())


@triton.jit
def _weight_tile(w_ptr, n, n_ok, k0, K, k_end, BLOCK_K: tl.constexpr):
    """Rows n, columns [k0, k0 + BLOCK_K) of the row-major (N, K) weight, zero from k_end on: (BN, BK)."""
    ks = k0 + tl.arange(0, BLOCK_K)
    return tl.load(w_ptr + n[:, None] * K + ks[None, :], mask=n_ok[:, None] & (ks < k_end)[None, :], other=0.0)


@triton.jit
def _weights_first(w_ptr, n, n_ok, N, K, k_lo, k_end, BLOCK_K: tl.constexpr, PDL: tl.constexpr,
                   PREFETCH_LINES: tl.constexpr):
    """Under PDL (kernels/pdl.py): let the next kernel launch, ask L2 for this program's columns [k_lo, k_end)
    of its weight rows (PREFETCH_LINES 128-byte lines a row; 0: none) and load their first tile while the
    previous kernel finishes, then wait for it. Returns that first (BN, BK) tile (a loop that does not read
    ahead leaves it unused, and the compiler drops the load)."""
    pdl.allow_next(PDL)
    if PDL and PREFETCH_LINES > 0:
        rows = tl.minimum(n, N - 1)  # (BN,) clamped: valid addresses
        per_line = 128 // (w_ptr.dtype.element_ty.primitive_bitwidth // 8)  # elements in one 128-byte line
        cols = tl.minimum(k_lo + tl.arange(0, PREFETCH_LINES) * per_line, k_end - 1)  # (LINES,)
        pdl.prefetch_l2(w_ptr + rows[:, None] * K + cols[None, :])
    first = _weight_tile(w_ptr, n, n_ok, k_lo, K, k_end, BLOCK_K)
    pdl.wait_previous(PDL)
    return first


@triton.jit
def _next_weights(w_ptr, n, n_ok, k0, K, k_end, ahead, BLOCK_K: tl.constexpr, LOAD_AHEAD: tl.constexpr):
    """The tile for columns k0 and the one the next iteration takes. LOAD_AHEAD: the tile loaded one iteration
    earlier (`ahead`) now, and the next one's loads issued here, in flight during this tile's products;
    otherwise loaded here and used at once (Triton does not pipeline these plain loads, GPU_NOTES.md v7)."""
    if LOAD_AHEAD:
        return ahead, _weight_tile(w_ptr, n, n_ok, k0 + BLOCK_K, K, k_end, BLOCK_K)
    return _weight_tile(w_ptr, n, n_ok, k0, K, k_end, BLOCK_K), ahead


@triton.jit
def _products(x, w):
    """x (BM, BK) fp32 times the weight tile w (BN, BK), each run of LANE_SUM adjacent columns summed:
    (BM, BN, BK / LANE_SUM) fp32 (a run is summed in its thread, or in two neighbour lanes where the products lie
    4 columns a thread), and the accumulators the loop carries are LANE_SUM times fewer than the tile's elements."""
    runs: tl.constexpr = w.shape[1] // LANE_SUM
    w3 = tl.reshape(fastmath.widen(w), (1, w.shape[0], runs, LANE_SUM))
    x3 = tl.reshape(x, (x.shape[0], 1, runs, LANE_SUM))
    return tl.sum(x3 * w3, axis=3)


@triton.jit
def _normed_columns(res_ptr, norm_w_ptr, rows, row_ok, k0, K, stride_res, sq, dtype: tl.constexpr,
                    BLOCK_K: tl.constexpr):
    """Columns [k0, k0 + BLOCK_K) of the batch rows' residual.to(dtype) (the torch path norms that) in fp32,
    zero past K: their squares added to sq (BM, BK), and the columns times the norm weight, the input before
    its 1/rms."""
    ks = k0 + tl.arange(0, BLOCK_K)
    k_ok = ks < K
    r = fastmath.widen_rounded(tl.load(res_ptr + rows[:, None] * stride_res + ks[None, :],
                                       mask=row_ok[:, None] & k_ok[None, :], other=0.0), dtype)  # (BM, BK)
    sq += r * r
    return sq, r * fastmath.widen(tl.load(norm_w_ptr + ks, mask=k_ok, other=0.0))[None, :]


@triton.jit
def _norm_gemv_tile(w, k0, acc, sq, res_ptr, norm_w_ptr, rows, row_ok, K, stride_res, BLOCK_K: tl.constexpr):
    """One K tile of `_norm_gemv_kernel`: the squares of the residual's columns, and the normed columns'
    products with the weight tile w (BN, BK)."""
    sq, x = _normed_columns(res_ptr, norm_w_ptr, rows, row_ok, k0, K, stride_res, sq, w.dtype, BLOCK_K)
    acc += _products(x, w)
    return acc, sq


@triton.jit
def _norm_gemv_kernel(res_ptr, norm_w_ptr, w_ptr, bias_ptr, out_ptr, cs_ptr, cw_ptr, cb_ptr,
                      M, N, K, conv_lo, conv_hi, stride_res, stride_out, stride_csb, stride_csc, eps,
                      HAS_BIAS: tl.constexpr, CONV: tl.constexpr, CONV_BIAS: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                      PDL: tl.constexpr, PREFETCH_LINES: tl.constexpr, LOAD_AHEAD: tl.constexpr,
                      FIRST_EARLY: tl.constexpr, CONV_EARLY: tl.constexpr):
    dtype = w_ptr.dtype.element_ty
    rows = tl.arange(0, BLOCK_M)  # (BM,) batch rows
    row_ok = rows < M
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,) output rows
    n_ok = n < N
    if CONV:  # rows [conv_lo, conv_hi) are conv channels
        c = n - conv_lo  # (BN,) channel of each row
        is_conv = (n >= conv_lo) & (n < conv_hi)
        conv_mask = row_ok[:, None] & (n_ok & is_conv)[None, :]  # (BM, BN)
        zero = rows[:, None] * 0  # broadcasts the per-channel pointers over the batch rows
        state_rows = cs_ptr + rows[:, None] * stride_csb + c[None, :] * stride_csc
        conv_w, conv_b = cw_ptr + c[None, :] * 4 + zero, cb_ptr + c[None, :] + zero
        if CONV_EARLY:  # their state, taps and bias before the PDL wait (CONV_EARLY_MAX_BYTES)
            s0, s1, s2, w0, w1, w2, w3, conv_bias = conv_inputs(state_rows, conv_w, conv_b, conv_mask, CONV_BIAS)
    ahead = _weights_first(w_ptr, n, n_ok, N, K, 0, K, BLOCK_K, PDL, PREFETCH_LINES)
    acc = tl.zeros((BLOCK_M, BLOCK_N, BLOCK_K // LANE_SUM), tl.float32)  # summed over K once, after the loop
    sq = tl.zeros((BLOCK_M, BLOCK_K), tl.float32)
    k_start = 0
    if FIRST_EARLY:  # the tile loaded before the PDL wait, used up before the loop (not live through it)
        acc, sq = _norm_gemv_tile(ahead, 0, acc, sq, res_ptr, norm_w_ptr, rows, row_ok, K, stride_res, BLOCK_K)
        k_start = BLOCK_K
    for k0 in range(k_start, K, BLOCK_K):  # one pass: the 1/rms factor is applied to the finished sums
        w, ahead = _next_weights(w_ptr, n, n_ok, k0, K, K, ahead, BLOCK_K, LOAD_AHEAD)  # (BN, BK)
        acc, sq = _norm_gemv_tile(w, k0, acc, sq, res_ptr, norm_w_ptr, rows, row_ok, K, stride_res, BLOCK_K)
    rstd = 1.0 / tl.sqrt(tl.sum(sq, axis=1) / K + eps)  # (BM,)
    out = tl.sum(acc, axis=2) * rstd[:, None]  # (BM, BN)
    if HAS_BIAS:
        out += tl.load(bias_ptr + n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    out = out.to(dtype)  # F.linear's output rounding
    if CONV:  # the conv channels: silu(conv) of the new input, state shifted
        if not CONV_EARLY:
            s0, s1, s2, w0, w1, w2, w3, conv_bias = conv_inputs(state_rows, conv_w, conv_b, conv_mask, CONV_BIAS)
        y = conv_step(out.to(tl.float32), s0, s1, s2, w0, w1, w2, w3, conv_bias, state_rows, conv_mask,
                      WRITE_STATE=True)
        out = tl.where(is_conv[None, :], y.to(dtype), out)
    tl.store(out_ptr + rows[:, None] * stride_out + n[None, :], out.to(out_ptr.dtype.element_ty),
             mask=row_ok[:, None] & n_ok[None, :])


@triton.jit
def _lm_head_tma_kernel(res_ptr, norm_w_ptr, w_desc, out_ptr, M, N, K, stride_res, stride_out, eps,
                        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr):
    """`_norm_gemv_kernel` without bias or conv rows (the final norm + lm_head) for large weights: the (BN, BK)
    weight tiles come through TMA, pipelined over num_stages by the compiler because they feed a tensor-core
    dot with the normed input, padded to 16 batch rows as the dot's N side (plain loads are not pipelined,
    GPU_NOTES.md v7). The dot's input is residual.to(dtype) * norm weight rounded to the model dtype, its 1/rms
    applied to the finished sums (the torch path rounds once, after both factors)."""
    dtype = norm_w_ptr.dtype.element_ty  # the weight's (the launcher checks)
    rows = tl.arange(0, 16)  # (16,) batch rows, the dot's N side
    row_ok = rows < M
    n0 = tl.program_id(0) * BLOCK_N
    n = n0 + tl.arange(0, BLOCK_N)  # (BN,) output rows
    pdl.allow_next(PDL)
    pdl.wait_previous(PDL)  # before the loop: its pipelined prologue would otherwise read the residual early
    acc = tl.zeros((BLOCK_N, 16), tl.float32)
    sq = tl.zeros((16, BLOCK_K), tl.float32)
    for k0 in range(0, K, BLOCK_K):  # one pass: the 1/rms factor is applied to the finished sums
        sq, x = _normed_columns(res_ptr, norm_w_ptr, rows, row_ok, k0, K, stride_res, sq, dtype, BLOCK_K)  # (16, BK)
        x = x.to(dtype)  # the dot's operand
        acc = tl.dot(w_desc.load([n0, k0]), tl.trans(x), acc)  # (BN, 16); past N or K TMA reads zeros
    rstd = 1.0 / tl.sqrt(tl.sum(sq, axis=1) / K + eps)  # (16,)
    out = (tl.trans(acc) * rstd[:, None]).to(dtype)  # (16, BN): F.linear's output rounding
    tl.store(out_ptr + rows[:, None] * stride_out + n[None, :], out.to(out_ptr.dtype.element_ty),
             mask=row_ok[:, None] & (n < N)[None, :])


def norm_gemv(residual: Tensor, norm_weight: Tensor, weight: Tensor, bias: Optional[Tensor], eps: float,
              conv: Optional[tuple[Tensor, Tensor, Optional[Tensor], int]] = None,
              out_dtype: Optional[torch.dtype] = None) -> Tensor:
    """F.linear(RMSNorm(residual.to(dtype)) * norm_weight, weight, bias) for residual (M, H) fp32, or already
    in weight's dtype (half the bytes for every program to read), with M <= MAX_BATCH, weight (N, H) contiguous.
    Returns (M, N) in out_dtype (default: weight's dtype; values are rounded to weight's dtype first, as
    F.linear's output).

    conv = (conv_state (M, C, K-1), conv_weight (C, K) contiguous, conv_bias (C,) or None, first row): output
    rows [first, first + C) are replaced by the causal-conv update of those channels (`ops.causal_conv1d_update`
    on F.linear's output), and conv_state (unit last stride) is shifted in place."""
    M, K = residual.shape
    N = weight.shape[0]
    out = torch.empty(M, N, dtype=out_dtype or weight.dtype, device=residual.device)
    state, conv_w, conv_b, lo = conv if conv is not None else (out, weight, None, 0)
    if conv is not None and conv_w.shape[1] != WIDTH:
        raise ValueError(f"fused conv update supports d_conv={WIDTH}, got {conv_w.shape[1]}")
    hi = lo + (conv_w.shape[0] if conv is not None else 0)
    launch = pdl.launch_options(weight)
    if conv is None and bias is None and _use_tma(weight, norm_weight, M):
        block_n, block_k, stages, warps = TMA_TILES.get(tuple(weight.shape), TMA_DEFAULT_TILES)
        _lm_head_tma_kernel[(triton.cdiv(N, block_n),)](
            residual, norm_weight, _descriptor(weight, block_n, block_k), out, M, N, K, residual.stride(0),
            out.stride(0), eps, BLOCK_N=block_n, BLOCK_K=block_k, PDL=bool(launch), num_warps=warps,
            num_stages=stages, **launch)
        return out
    if gemv_slice.applies(weight, M):
        return gemv_slice.norm_gemv(residual, norm_weight, weight, bias, eps, out, conv=conv)
    block_m, (block_n, block_k, warps, stages, split) = _launch_shape(weight, M)
    if split != 1:
        raise ValueError(f"norm_gemv does not split K (its conv rows need whole sums); TILES gives {split} for "
                         f"{tiles_key(weight, M)}")
    _norm_gemv_kernel[(triton.cdiv(N, block_n),)](
        residual, norm_weight, weight, bias if bias is not None else weight, out, state, conv_w,
        conv_b if conv_b is not None else conv_w, M, N, K, lo, hi, residual.stride(0), out.stride(0),
        state.stride(0), state.stride(1), eps, HAS_BIAS=bias is not None, CONV=conv is not None,
        CONV_BIAS=conv_b is not None, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, PDL=bool(launch),
        PREFETCH_LINES=_prefetch_lines(weight, launch, block_k, K), LOAD_AHEAD=_load_ahead(weight, block_k, K),
        FIRST_EARLY=_first_early(weight, "norm_gemv", block_k, K), CONV_EARLY=_at_most(weight, CONV_EARLY_MAX_BYTES),
        num_warps=warps, num_stages=stages, **launch)
    return out


def _use_tma(weight: Tensor, norm_weight: Tensor, M: int) -> bool:
    """The TMA kernel: a half-precision weight over TMA_MIN_BYTES whose rows TMA can address (16-byte
    multiples), a norm weight of its dtype, at most 16 batch rows (its dot's N side)."""
    half = weight.dtype in (torch.float16, torch.bfloat16) and norm_weight.dtype == weight.dtype
    rows_addressable = (weight.shape[1] * weight.element_size()) % 16 == 0
    return half and rows_addressable and not _at_most(weight, TMA_MIN_BYTES) and M <= 16


_DESCRIPTORS: dict[tuple, TensorDescriptor] = {}


def _descriptor(weight: Tensor, block_n: int, block_k: int) -> TensorDescriptor:
    """The weight's TMA descriptor for (block_n, block_k) tiles, made once per weight (weights never move)."""
    key = (weight.data_ptr(), tuple(weight.shape), block_n, block_k)
    if key not in _DESCRIPTORS:
        _DESCRIPTORS[key] = TensorDescriptor.from_tensor(weight, [block_n, block_k])
    return _DESCRIPTORS[key]


def norm_gemv_ref(residual: Tensor, norm_weight: Tensor, weight: Tensor, bias: Optional[Tensor], eps: float,
                  conv: Optional[tuple[Tensor, Tensor, Optional[Tensor], int]] = None,
                  out_dtype: Optional[torch.dtype] = None) -> Tensor:
    """The torch twin: the model's rms_norm, F.linear and `ops.causal_conv1d_update` on the conv rows."""
    out = F.linear(ops.rms_norm(residual.to(weight.dtype), norm_weight, eps), weight, bias)  # (M, N)
    if conv is not None:
        state, conv_w, conv_b, lo = conv
        hi = lo + conv_w.shape[0]
        out[:, lo:hi] = ops.causal_conv1d_update(out[:, lo:hi], state, conv_w, conv_b)
    return out.to(out_dtype or weight.dtype)


@triton.jit
def _store_sums(acc, out_ptr, bias_ptr, rounded_ptr, rows, row_ok, n, n_ok, stride_out, stride_rounded,
                dtype: tl.constexpr, HAS_BIAS: tl.constexpr, ACCUMULATE: tl.constexpr, ROUNDED: tl.constexpr):
    """The finished (BM, BN) fp32 sums: rounded to the model dtype (F.linear's output), bias added in that
    dtype, then stored, or added into the fp32 residual stream (ACCUMULATE), whose new values also go to
    rounded_ptr in the model dtype (ROUNDED)."""
    out = acc.to(dtype)
    if HAS_BIAS:
        out = (out.to(tl.float32) + tl.load(bias_ptr + n, mask=n_ok, other=0.0).to(tl.float32)[None, :]).to(dtype)
    dst = out_ptr + rows[:, None] * stride_out + n[None, :]
    mask = row_ok[:, None] & n_ok[None, :]
    if ACCUMULATE:
        total = tl.load(dst, mask=mask, other=0.0) + out.to(tl.float32)
        tl.store(dst, total, mask=mask)
        if ROUNDED:
            tl.store(rounded_ptr + rows[:, None] * stride_rounded + n[None, :], total.to(dtype), mask=mask)
    else:
        tl.store(dst, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gemv_tile(w, k0, k_end, acc, part, sq, y_ptr, z_ptr, g_ptr, rows, row_ok, stride_y, stride_z, G, eps,
               GATED: tl.constexpr, NORM_AT_REDUCE: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """One K tile of `_gemv_kernel`: the input columns (gated and normed on the way) times the weight tile
    w (BN, BK) into `part`. One flat loop over the tiles (it pipelines; a loop per group would restart at
    every group): BLOCK_K divides the group size G, and the last tile of each group scales the group's
    finished sums by its 1/rms into `acc`, unless there is one group (NORM_AT_REDUCE: its 1/rms is applied
    to the finished sums, by the program or, split over K, by the reduce; BLOCK_K may then exceed G)."""
    ks = k0 + tl.arange(0, BLOCK_K)
    k_ok = ks < k_end
    mask = row_ok[:, None] & k_ok[None, :]
    x = fastmath.widen(tl.load(y_ptr + rows[:, None] * stride_y + ks[None, :], mask=mask, other=0.0))
    if GATED:  # y * silu(z) * gate_norm, normed per group (`norms.gated_rms_norm`)
        z = fastmath.widen(tl.load(z_ptr + rows[:, None] * stride_z + ks[None, :], mask=mask, other=0.0))
        x = x * z * tl.sigmoid(z)
        sq += x * x
        x = x * fastmath.widen(tl.load(g_ptr + ks, mask=k_ok, other=0.0))[None, :]
    part += _products(x, w)
    if GATED and not NORM_AT_REDUCE:
        if (k0 + BLOCK_K) % G == 0:
            acc += tl.sum(part, axis=2) / tl.sqrt(tl.sum(sq, axis=1) / G + eps)[:, None]
            part = tl.zeros((BLOCK_M, BLOCK_N, BLOCK_K // LANE_SUM), tl.float32)
            sq = tl.zeros((BLOCK_M, BLOCK_K), tl.float32)
    return acc, part, sq


@triton.jit
def _gemv_kernel(y_ptr, z_ptr, g_ptr, w_ptr, bias_ptr, out_ptr, rounded_ptr, part_ptr, sq_ptr, count_ptr,
                 M, N, K, G, K_SPLIT, stride_y, stride_z, stride_out, stride_rounded, eps,
                 GATED: tl.constexpr, NORM_AT_REDUCE: tl.constexpr, HAS_BIAS: tl.constexpr,
                 ACCUMULATE: tl.constexpr, ROUNDED: tl.constexpr, SPLIT: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 PDL: tl.constexpr, PREFETCH_LINES: tl.constexpr, LOAD_AHEAD: tl.constexpr,
                 FIRST_EARLY: tl.constexpr):
    dtype = w_ptr.dtype.element_ty
    rows = tl.arange(0, BLOCK_M)
    row_ok = rows < M
    block, split = tl.program_id(0), tl.program_id(1)
    n = block * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = n < N
    k_lo = split * K_SPLIT  # this program's columns [k_lo, k_end)
    k_end = tl.minimum(k_lo + K_SPLIT, K)
    ahead = _weights_first(w_ptr, n, n_ok, N, K, k_lo, k_end, BLOCK_K, PDL, PREFETCH_LINES)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    part = tl.zeros((BLOCK_M, BLOCK_N, BLOCK_K // LANE_SUM), tl.float32)  # the current norm group's products
    sq = tl.zeros((BLOCK_M, BLOCK_K), tl.float32)
    k_start = k_lo
    if FIRST_EARLY:  # the tile loaded before the PDL wait, used up before the loop (not live through it)
        acc, part, sq = _gemv_tile(ahead, k_lo, k_end, acc, part, sq, y_ptr, z_ptr, g_ptr, rows, row_ok,
                                   stride_y, stride_z, G, eps, GATED, NORM_AT_REDUCE, BLOCK_M, BLOCK_N, BLOCK_K)
        k_start = k_lo + BLOCK_K
    for k0 in range(k_start, k_end, BLOCK_K):
        w, ahead = _next_weights(w_ptr, n, n_ok, k0, K, k_end, ahead, BLOCK_K, LOAD_AHEAD)  # (BN, BK)
        acc, part, sq = _gemv_tile(w, k0, k_end, acc, part, sq, y_ptr, z_ptr, g_ptr, rows, row_ok,
                                   stride_y, stride_z, G, eps, GATED, NORM_AT_REDUCE, BLOCK_M, BLOCK_N, BLOCK_K)
    if NORM_AT_REDUCE or not GATED:
        acc = tl.sum(part, axis=2)  # (BM, BN)
    if SPLIT == 1:
        if NORM_AT_REDUCE:  # the one norm group's 1/rms
            acc = acc / tl.sqrt(tl.sum(sq, axis=1) / K + eps)[:, None]
        _store_sums(acc, out_ptr, bias_ptr, rounded_ptr, rows, row_ok, n, n_ok, stride_out, stride_rounded, dtype,
                    HAS_BIAS, ACCUMULATE, ROUNDED)
    else:  # partial sums (SPLIT, M, N); the last program of the row block to finish adds them in split order
        sums = rows[:, None] * N + n[None, :]  # (BM, BN) offsets into one split's partials
        mask = row_ok[:, None] & n_ok[None, :]
        sq_at = block * BLOCK_M + rows  # (BM,) into one split's (row blocks, BM) sums of squares
        tl.store(part_ptr + split * M * N + sums, acc, mask=mask)
        if NORM_AT_REDUCE:
            tl.store(sq_ptr + split * tl.num_programs(0) * BLOCK_M + sq_at, tl.sum(sq, axis=1))
        tl.debug_barrier()  # all of this program's partials are written before the counter says so
        if tl.atomic_add(count_ptr + block, 1, sem="acq_rel") == SPLIT - 1:
            total = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
            sumsq = tl.zeros((BLOCK_M,), tl.float32)
            for s in tl.static_range(SPLIT):  # .cg: from L2, where the other SMs' writes are
                total += tl.load(part_ptr + s * M * N + sums, mask=mask, other=0.0, cache_modifier=".cg")
                if NORM_AT_REDUCE:
                    sumsq += tl.load(sq_ptr + s * tl.num_programs(0) * BLOCK_M + sq_at, cache_modifier=".cg")
            if NORM_AT_REDUCE:
                total = total / tl.sqrt(sumsq / K + eps)[:, None]
            _store_sums(total, out_ptr, bias_ptr, rounded_ptr, rows, row_ok, n, n_ok, stride_out, stride_rounded,
                        dtype, HAS_BIAS, ACCUMULATE, ROUNDED)
            tl.store(count_ptr + block, 0)  # ready for the next launch


def gemv_residual(residual: Tensor, y: Tensor, weight: Tensor, bias: Optional[Tensor],
                  gate: Optional[tuple[Tensor, Tensor, int]] = None, eps: float = 0.0,
                  rounded: Optional[Tensor] = None) -> None:
    """residual (M, H) fp32 += F.linear(x, weight) (+ bias, in weight's dtype), in place, for weight
    (H, D) contiguous and M <= MAX_BATCH. x = y (M, D) (unit inner stride), or with gate = (z (M, D) with a
    unit inner stride, gate_norm (D,), group size): x = RMSNorm_per_group(y * silu(z)) * gate_norm
    (`ops.gated_rms_norm`), kept in fp32 (the torch path rounds it to weight's dtype). With `rounded` (M, H) in
    weight's dtype (unit inner stride), the new residual.to(weight.dtype) is stored there too."""
    _launch_gemv(y, weight, bias, residual, gate, eps, accumulate=True, rounded=rounded)


def gemv(y: Tensor, weight: Tensor) -> Tensor:
    """F.linear(y, weight) for y (M, D) with a unit inner stride, M <= MAX_BATCH, weight (N, D) contiguous;
    returns (M, N) in weight's dtype (Mamba1's x_proj, whose few output rows cuBLAS splits over K)."""
    out = torch.empty(y.shape[0], weight.shape[0], dtype=weight.dtype, device=y.device)
    _launch_gemv(y, weight, None, out, None, 0.0, accumulate=False)
    return out


def k_split(K: int, block_k: int, split: int, group: Optional[int]) -> int:
    """Columns each of a row block's programs sums when `split` are asked for: whole BLOCK_K tiles, and with
    the gated norm either whole norm groups or (one group, `group` = K) any tiles, the reduce then applying
    its 1/rms. cdiv(K, result) programs share a row block, at most `split`."""
    unit = group if group is not None and group < K else block_k
    return triton.cdiv(triton.cdiv(K, split), unit) * unit


_COUNTERS: dict[tuple[str, int], Tensor] = {}


def _counters(device: torch.device, blocks: int) -> Tensor:
    """Zeroed arrival counters, one per row block, kept for the process: each split launch leaves them zero
    again, so a CUDA graph replays them as captured."""
    key = (str(device), blocks)
    if key not in _COUNTERS:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("split-K GEMV counters are made on the first eager call; run the step once "
                               "before capturing it in a CUDA graph")
        _COUNTERS[key] = torch.zeros(blocks, dtype=torch.int32, device=device)
    return _COUNTERS[key]


def _launch_gemv(y: Tensor, weight: Tensor, bias: Optional[Tensor], out: Tensor,
                 gate: Optional[tuple[Tensor, Tensor, int]], eps: float, accumulate: bool,
                 rounded: Optional[Tensor] = None) -> None:
    M, K = y.shape
    N = weight.shape[0]
    z, gate_w, group = gate if gate is not None else (y, weight, K)
    block_m, (block_n, block_k, warps, stages, split) = _launch_shape(weight, M, gated=gate is not None)
    norm_at_reduce = gate is not None and group == K  # one norm group: normed once its sums are complete
    if gate is not None and not norm_at_reduce:  # group & -group: the largest power of two dividing the group
        block_k = min(block_k, group & -group)  # size, so no tile straddles two groups
        if block_k < LANE_SUM.value:
            raise ValueError(f"the gated out_proj kernel needs norm groups of a multiple of {LANE_SUM.value} columns, "
                             f"got {group}: take the gated-norm kernel first (decode.FUSED_GATE_MAX_GROUPS)")
    columns = k_split(K, block_k, split, group if gate is not None else None)
    grid = (triton.cdiv(N, block_n), triton.cdiv(K, columns))
    part = sq = count = out  # unused without a split
    if grid[1] > 1:
        part = torch.empty(grid[1], M, N, dtype=torch.float32, device=y.device)  # (SPLIT, M, N)
        if norm_at_reduce:
            sq = torch.empty(grid[1], grid[0], block_m, dtype=torch.float32, device=y.device)
        count = _counters(y.device, grid[0])
    launch = pdl.launch_options(weight)
    _gemv_kernel[grid](
        y, z, gate_w, weight, bias if bias is not None else weight, out, rounded if rounded is not None else out,
        part, sq, count, M, N, K, group, columns, y.stride(0), z.stride(0), out.stride(0),
        rounded.stride(0) if rounded is not None else 0, eps, GATED=gate is not None,
        NORM_AT_REDUCE=norm_at_reduce, HAS_BIAS=bias is not None,
        ACCUMULATE=accumulate, ROUNDED=rounded is not None, SPLIT=grid[1], BLOCK_M=block_m, BLOCK_N=block_n,
        BLOCK_K=block_k, PDL=bool(launch),
        PREFETCH_LINES=_prefetch_lines(weight, launch, block_k, columns),
        LOAD_AHEAD=_load_ahead(weight, block_k, columns), FIRST_EARLY=_first_early(weight, "gemv", block_k, columns),
        num_warps=warps, num_stages=stages, **launch)


def gemv_residual_ref(residual: Tensor, y: Tensor, weight: Tensor, bias: Optional[Tensor],
                      gate: Optional[tuple[Tensor, Tensor, int]] = None, eps: float = 0.0) -> None:
    """The torch twin: the model's gated norm (Mamba2), out_proj, bias and fp32 residual add."""
    if gate is not None:
        z, gate_w, group = gate
        y = ops.gated_rms_norm(y, z, gate_w, group, eps)
    out = F.linear(y.to(weight.dtype), weight)
    residual += (out + bias if bias is not None else out).float()
