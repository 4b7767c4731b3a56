"""The batch-1 in_proj (RMS norm + product + conv update) with each program's whole weight slice loaded
before the PDL wait, for the shapes in TILES.

A batch-1 decode step is a chain of kernels, each streaming one weight. Timed with plain read kernels in the
step's order on the H200 (`benchmarks/gpu_decode_bound.py`, GPU_NOTES.md v24, device call 171), mamba2-2.7b's
bytes took 1.53 ms a step when each kernel waited for the one before and then loaded, 1.20 when each issued all
its loads first and then waited, 1.17 in a single kernel: a kernel boundary costs little when the next kernel's
programs already have their loads in flight while the previous kernel finishes. `gemv._norm_gemv_kernel`
loads one tile before the wait and the rest in its K loop after it, since the loop needs the input row.

Here a program owns BLOCK_N whole rows: it loads its (BLOCK_N, K) weight slice into registers (K as one
power-of-two piece, or two: 2560 = 2048 + 512), the norm weight and its conv channels' state, then waits for
the kernel before, then reads the residual row, norms it and finishes its rows as `_norm_gemv_kernel` does
(the normed input in fp32, its 1/rms applied to the finished sums, then the conv update of conv rows).
Measured in the decode step (GPU_NOTES.md v24, calls 172-175, and v35), it is faster for the big models'
in_projs and mamba2-130m's (TILES): mamba-2.8b's at 4 rows and 2 warps a program, which v24 did not try (its
tiles were 1-1.5 % slower a step than the tiled kernel). The out_projs on the same structure, whose programs each
read a 5120- or 8192-column input (y and z) after the wait, made every model's step slower than with the in_proj
alone on it (mamba2-2.7b by 11-13 %, at three tiles), so they keep the tiled kernel.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from mambapipe.engine.kernels import fastmath, pdl
from mambapipe.engine.kernels.conv import conv_inputs, conv_step

# (BLOCK_N, warps) of the in_proj shapes (N, K) that take the slice kernel at batch 1. In the decode step on the
# H200 (S1 ms a step, 2 rounds, against the tiled kernel in the same rounds): mamba2-2.7b 1.777-1.785 against
# 1.806-1.813 (calls 173, 174), Codestral 3.773-3.786 against 3.867-3.877 (call 174). Slower: (2, 4) tiles,
# +1.5 to +14 % on the three big models, and (4, 8), +0.5 to +8 % (calls 174, 175). Fewer warps (v35, calls
# 293-297, 3 rounds): at (4, 2) mamba2-2.7b 1.7137-1.7181 against 1.7585-1.7603 at (4, 4), and mamba-2.8b
# 1.7723-1.7731 against 1.8393-1.8414 on the tiled kernel (1.8593-1.8614 at (4, 4)); (2, 1), (2, 2), (8, 4) and
# (4, 1) were slower than (4, 2) for both (and (8, 2) for mamba-2.8b), every tile tried for Codestral than its
# (4, 4). The 130m models, against the tiled kernel: mamba2-130m at (2, 1) 0.1943-0.1962 against 0.2075-0.2102,
# its other six tiles slower than (2, 1); mamba-130m slower at all four tried (+2.8 to +5.1 %): the tiled kernel.
# Reading the residual stream's copy in the model dtype (decode.ROUNDED_INPUT, v37, call 311, 3 rounds): mamba2-2.7b
# at (2, 1) 1.6973-1.7033 against 1.7065-1.7105 at (4, 2), (8, 4) and (4, 1) slower; mamba-2.8b's (4, 2) and
# Codestral's (4, 4) still the fastest of (8, 4), (4, 1) / (4, 2), (2, 1) / (2, 2).
TILES: dict[tuple[int, int], tuple[int, int]] = {(10576, 2560): (2, 1), (10240, 2560): (4, 2), (18560, 4096): (4, 4),
                                                 (3352, 768): (2, 1)}


def applies(weight: Tensor, M: int) -> bool:
    """The slice kernel runs the in_proj of M rows with `weight`: batch 1, a half-precision weight in TILES."""
    return M == 1 and tuple(weight.shape) in TILES and weight.dtype in (torch.float16, torch.bfloat16)


def pieces(K: int) -> tuple[int, int]:
    """K as a power-of-two piece and the rest padded to a power of two (0 when none): tl.arange needs powers
    of two, and padding all of K (2560 -> 4096) would hold 60 % more registers."""
    main = 1 << (K.bit_length() - 1)
    rest = K - main
    return main, triton.next_power_of_2(rest) if rest else 0


@triton.jit
def _vector(ptr, ks, K):
    """Columns ks of a vector in fp32, zero past K."""
    return fastmath.widen(tl.load(ptr + ks, mask=ks < K, other=0.0))


@triton.jit
def _slice_kernel(res_ptr, norm_w_ptr, w_ptr, bias_ptr, out_ptr, cs_ptr, cw_ptr, cb_ptr,
                  N, conv_lo, conv_hi, stride_csc, eps,
                  K: tl.constexpr, K_MAIN: tl.constexpr, K_REST: tl.constexpr, HAS_BIAS: tl.constexpr,
                  CONV: tl.constexpr, CONV_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, PDL: tl.constexpr):
    """Every load that does not depend on the kernel before (weights, norm weight, conv state) is issued
    before the PDL wait, and both residual pieces right after it, ahead of the first reduction (whose barrier
    would hold back loads written after it)."""
    dtype = w_ptr.dtype.element_ty
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,) output rows
    n_ok = n < N
    rows = w_ptr + n[:, None] * K
    ka = tl.arange(0, K_MAIN)
    kb = K_MAIN + tl.arange(0, K_REST if K_REST > 0 else 1)
    pdl.allow_next(PDL)
    w_main = tl.load(rows + ka[None, :], mask=n_ok[:, None], other=0.0)  # (BN, K_MAIN)
    if K_REST > 0:
        w_rest = tl.load(rows + kb[None, :], mask=n_ok[:, None] & (kb < K)[None, :], other=0.0)  # (BN, K_REST)
    v_main, v_rest = _vector(norm_w_ptr, ka, K), _vector(norm_w_ptr, kb, K)
    if CONV:  # rows [conv_lo, conv_hi) are conv channels; only this kernel touches their state (kernels/conv.py)
        c = n - conv_lo  # (BN,)
        conv_mask = n_ok & (n >= conv_lo) & (n < conv_hi)
        state_row = cs_ptr + c * stride_csc
        s0, s1, s2, t0, t1, t2, t3, conv_bias = conv_inputs(state_row, cw_ptr + c * 4, cb_ptr + c, conv_mask,
                                                            CONV_BIAS)
    pdl.wait_previous(PDL)
    # the torch path norms residual.to(dtype) (the stream's copy, decode.ROUNDED_INPUT, is that already)
    x_main = fastmath.widen_rounded(tl.load(res_ptr + ka, mask=ka < K, other=0.0), dtype)  # (K_MAIN,)
    x_rest = fastmath.widen_rounded(tl.load(res_ptr + kb, mask=kb < K, other=0.0), dtype)  # (K_REST,)
    sq = tl.sum(x_main * x_main, axis=0) + tl.sum(x_rest * x_rest, axis=0)
    acc = tl.sum(fastmath.widen(w_main) * (x_main * v_main)[None, :], axis=1)  # (BN,)
    if K_REST > 0:
        acc += tl.sum(fastmath.widen(w_rest) * (x_rest * v_rest)[None, :], axis=1)
    acc = acc / tl.sqrt(sq / K + eps)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + n, mask=n_ok, other=0.0).to(tl.float32)
    out = acc.to(dtype)  # F.linear's output rounding
    if CONV:  # silu(conv) of the new input, the state shifted
        y = conv_step(out.to(tl.float32), s0, s1, s2, t0, t1, t2, t3, conv_bias, state_row, conv_mask,
                      WRITE_STATE=True)
        out = tl.where(conv_mask, y.to(dtype), out)
    tl.store(out_ptr + n, out.to(out_ptr.dtype.element_ty), mask=n_ok)


def norm_gemv(residual: Tensor, norm_weight: Tensor, weight: Tensor, bias: Optional[Tensor], eps: float,
              out: Tensor, conv: Optional[tuple[Tensor, Tensor, Optional[Tensor], int]] = None) -> Tensor:
    """`gemv.norm_gemv` for one row (where `applies`), into `out` (1, N)."""
    N, K = weight.shape
    k_main, k_rest = pieces(K)
    block_n, warps = TILES[(N, K)]
    state, conv_w, conv_b, lo = conv if conv is not None else (out, weight, None, 0)
    hi = lo + (conv_w.shape[0] if conv is not None else 0)
    options = pdl.launch_options(weight)
    _slice_kernel[(triton.cdiv(N, block_n),)](
        residual, norm_weight, weight, bias if bias is not None else weight, out, state, conv_w,
        conv_b if conv_b is not None else conv_w, N, lo, hi, state.stride(1) if conv is not None else 0, eps,
        K=K, K_MAIN=k_main, K_REST=k_rest, HAS_BIAS=bias is not None, CONV=conv is not None,
        CONV_BIAS=conv_b is not None, BLOCK_N=block_n, PDL=bool(options), num_warps=warps, **options)
    return out
