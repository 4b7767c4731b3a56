"""Fused SSM decode steps: softplus(dt + bias), decay, state update, C-reduction, D skip (and Mamba1's
z gate) in one kernel that reads x, B, C, dt and z straight out of the projection outputs.

A arrives precomputed (= -exp(A_log), fp32, done at build time). The state may be fp32 or the model dtype:
the update runs in fp32 registers and is rounded once on store.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

from mambapipe.engine import ops
from mambapipe.engine.kernels import fastmath, multiprocessors, pdl

FUSED_DT_MAX_BATCH = 4
# (rows, channels, warps) of a Mamba1 program once dt_proj runs as a GEMM (batches over FUSED_DT_MAX_BATCH):
# the fastest of 12 at mamba-2.8b's width and batch 64 on the H200 (GPU_NOTES.md v11, device call 47, CUDA
# graphs with the dt_proj GEMM): 10.78 us a layer against 16.1 for one row of 32 channels a program.
BATCHED_SHAPE = (2, 64, 4)
# For a dt rank R up to DOT_DT_MAX_RANK, batches over FUSED_DT_MAX_BATCH compute dt_proj in-kernel after all,
# as a tensor-core dot (rows x R) @ (R x channels) in DOT_SHAPE programs, whose rows (a multiple of 16, the
# dot's least) share each weight load. In the batch-64 decode step on the H200 (GPU_NOTES.md v16, device call
# 93) mamba-130m (R 48) took 0.673-0.692 ms a step against 0.735-0.739 with the GEMM, while mamba-2.8b (R 160,
# padded to 256 in the dot) took 4.025-4.037 against 3.995-4.017: each of its programs reads 16 x 256 of
# weights and 16 x 256 of dt_low from L2 beside 8 KB of state.
DOT_DT_MAX_RANK, DOT_SHAPE = 64, (16, 16, 4)
# (rows, channels, warps) of a Mamba1 program with dt_proj in-kernel (batches up to FUSED_DT_MAX_BATCH). In the
# batch-1 decode step on the H200 five other shapes were no faster (GPU_NOTES.md v13, device call 64).
FUSED_SHAPE = (1, 32, 4)
# Head-dim rows per Mamba2 program: WIDE_BLOCK_P where that still gives every SM a program, else BLOCK_P.
# At batch 64 (mamba2-2.7b shape) tiles of 16-64 rows with 2-8 warps all took 0.049-0.054 ms a layer on the
# H200 (GPU_NOTES.md v2). At batch 1, 32 rows took mamba2-2.7b's decode step 1.962-1.977 -> 1.938 ms and
# Codestral's 3.967-4.008 -> 3.939-3.964 (v14, device call 75; 64 rows the same), while mamba2-130m (24 heads:
# 48 programs of 32 rows) was fastest at 16 (v13, call 64).
BLOCK_P, WIDE_BLOCK_P, MAMBA2_WARPS = 16, 32, 4


@triton.jit
def softplus(x, HALF: tl.constexpr = False):
    """torch's softplus (and its threshold) of fp32 x; HALF: the log approximated (kernels/fastmath.py)."""
    return tl.where(x > 20.0, x, fastmath.log(1.0 + tl.exp(x), HALF))


@triton.jit
def _mamba2_update_kernel(state_ptr, x_ptr, dt_ptr, dt_bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, y_ptr,
                          stride_sb, stride_sh, stride_sp, stride_xb, stride_dtb, stride_bb, stride_cb,
                          stride_yb, P, heads_per_group,
                          N: tl.constexpr, BLOCK_P: tl.constexpr, PDL: tl.constexpr):
    row, head, pblock = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    p = pblock * BLOCK_P + tl.arange(0, BLOCK_P)  # (BP,)
    n = tl.arange(0, N)  # (N,)
    pmask = p < P
    group = head // heads_per_group
    pdl.allow_next(PDL)
    # The state and the weights first: no earlier kernel of the step writes them (kernels/pdl.py), so under
    # PDL their loads overlap the kernel before, whose outputs (x, dt, B, C) are read after the wait.
    s_ptrs = state_ptr + row * stride_sb + head * stride_sh + p[:, None] * stride_sp + n[None, :]  # (BP, N)
    s = tl.load(s_ptrs, mask=pmask[:, None], other=0.0).to(tl.float32)
    A, D, dt_bias = tl.load(A_ptr + head), tl.load(D_ptr + head), tl.load(dt_bias_ptr + head)
    pdl.wait_previous(PDL)
    dt = softplus(tl.load(dt_ptr + row * stride_dtb + head).to(tl.float32) + dt_bias)
    dA = tl.exp(dt * A)
    x = tl.load(x_ptr + row * stride_xb + head * P + p, mask=pmask, other=0.0).to(tl.float32)  # (BP,)
    B = tl.load(B_ptr + row * stride_bb + group * N + n).to(tl.float32)  # (N,)
    C = tl.load(C_ptr + row * stride_cb + group * N + n).to(tl.float32)  # (N,)
    s = s * dA + (x * dt)[:, None] * B[None, :]
    tl.store(s_ptrs, s.to(state_ptr.dtype.element_ty), mask=pmask[:, None])
    y = tl.sum(s * C[None, :], axis=1) + x * D  # (BP,)
    tl.store(y_ptr + row * stride_yb + head * P + p, y, mask=pmask)


def mamba2_state_update(state: Tensor, x: Tensor, dt: Tensor, dt_bias: Tensor, A: Tensor, B: Tensor,
                        C: Tensor, D: Tensor) -> Tensor:
    """state (Bt, Hh, P, N) in place (unit last stride); x (Bt, Hh*P); dt (Bt, Hh) before softplus and
    bias; dt_bias, A, D (Hh,) fp32; B, C (Bt, G*N). x, dt, B, C may be column slices (unit inner stride).
    Returns y = C.h + D x as (Bt, Hh*P) fp32 (the gate is applied by the gated norm)."""
    batch, heads, P, N = state.shape
    groups = B.shape[1] // N
    y = torch.empty(batch, heads * P, dtype=torch.float32, device=x.device)
    block_p = rows_per_program(batch, heads, P, x.device)
    grid = (batch, heads, triton.cdiv(P, block_p))
    launch = pdl.launch_options(state)
    _mamba2_update_kernel[grid](state, x, dt, dt_bias, A, B, C, D, y, state.stride(0), state.stride(1),
                                state.stride(2), x.stride(0), dt.stride(0), B.stride(0), C.stride(0),
                                y.stride(0), P, heads // groups, N=N, BLOCK_P=block_p, PDL=bool(launch),
                                num_warps=MAMBA2_WARPS, **launch)
    return y


def rows_per_program(batch: int, heads: int, P: int, device: torch.device) -> int:
    """The Mamba2 update's head-dim rows a program: WIDE_BLOCK_P if the grid still has a program for each
    multiprocessor, else BLOCK_P (each at most the head dim, rounded up to a power of two)."""
    narrow, wide = (min(rows, triton.next_power_of_2(P)) for rows in (BLOCK_P, WIDE_BLOCK_P))
    return wide if batch * heads * triton.cdiv(P, wide) >= multiprocessors(device) else narrow


def mamba2_state_update_ref(state: Tensor, x: Tensor, dt: Tensor, dt_bias: Tensor, A: Tensor, B: Tensor,
                            C: Tensor, D: Tensor) -> Tensor:
    """The torch twin (the model's softplus + `ops.ssd_state_update`), updating `state` in place."""
    batch, heads, P, N = state.shape
    work = state.float()
    y = ops.ssd_state_update(work, x.reshape(batch, heads, P), F.softplus(dt.float() + dt_bias), A,
                             B.reshape(batch, -1, N), C.reshape(batch, -1, N), D)
    state.copy_(work)
    return y.flatten(1)


@triton.jit
def _mamba1_update_kernel(state_ptr, x_ptr, dtr_ptr, dtw_ptr, dt_bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr,
                          y_ptr, Bt, Di, R, stride_sb, stride_sd, stride_xb, stride_dtb, stride_bb, stride_cb,
                          stride_zb, stride_yb, N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr,
                          ROWS: tl.constexpr, FUSED_DT: tl.constexpr, DOT_DT: tl.constexpr, PDL: tl.constexpr):
    """FUSED_DT: dt_proj in-kernel, by broadcast products or (DOT_DT) a tensor-core dot; else dtr is dt."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)  # (RW,) batch rows, sharing A, D and dt_bias
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # (BD,)
    n = tl.arange(0, N)
    dmask = d < Di
    m2 = (rows < Bt)[:, None] & dmask[None, :]  # (RW, BD)
    r = tl.arange(0, BLOCK_R)
    rmask = r < R
    pdl.allow_next(PDL)
    # The state and the weights first, before the wait for the kernel before (see the Mamba2 kernel above)
    s_ptrs = state_ptr + rows[:, None, None] * stride_sb + d[None, :, None] * stride_sd + n[None, None, :]
    s = tl.load(s_ptrs, mask=m2[:, :, None], other=0.0).to(tl.float32)  # (RW, BD, N)
    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=dmask[:, None], other=0.0)  # (BD, N)
    Dskip = tl.load(D_ptr + d, mask=dmask, other=0.0)
    dt_bias = tl.load(dt_bias_ptr + d, mask=dmask, other=0.0)
    if FUSED_DT:
        W = tl.load(dtw_ptr + d[:, None] * R + r[None, :], mask=dmask[:, None] & rmask[None, :], other=0.0)
    pdl.wait_previous(PDL)
    if FUSED_DT:  # dt_proj in-kernel: delta = softplus(W[d, :] . dt_low + bias[d])
        dt_low = tl.load(dtr_ptr + rows[:, None] * stride_dtb + r[None, :], mask=(rows < Bt)[:, None] & rmask[None, :],
                         other=0.0)  # (RW, BR)
        if DOT_DT:  # fp32 operands (tests) multiply exactly, not in tf32
            dt = tl.dot(dt_low, tl.trans(W), input_precision="ieee" if W.dtype == tl.float32 else "tf32")  # (RW, BD)
        else:
            dt = tl.sum(W.to(tl.float32)[None, :, :] * dt_low.to(tl.float32)[:, None, :], axis=2)  # (RW, BD)
    else:  # dtr_ptr already holds dt_proj(dt_low), (Bt, Di)
        dt = tl.load(dtr_ptr + rows[:, None] * stride_dtb + d[None, :], mask=m2, other=0.0).to(tl.float32)
    delta = softplus(dt + dt_bias[None, :])  # (RW, BD)
    x = tl.load(x_ptr + rows[:, None] * stride_xb + d[None, :], mask=m2, other=0.0).to(tl.float32)
    B = tl.load(B_ptr + rows[:, None] * stride_bb + n[None, :], mask=(rows < Bt)[:, None], other=0.0)  # (RW, N)
    C = tl.load(C_ptr + rows[:, None] * stride_cb + n[None, :], mask=(rows < Bt)[:, None], other=0.0)
    s = s * tl.exp(delta[:, :, None] * A[None, :, :]) + (delta * x)[:, :, None] * B.to(tl.float32)[:, None, :]
    tl.store(s_ptrs, s.to(state_ptr.dtype.element_ty), mask=m2[:, :, None])
    y = tl.sum(s * C.to(tl.float32)[:, None, :], axis=2) + x * Dskip[None, :]  # (RW, BD)
    z = tl.load(z_ptr + rows[:, None] * stride_zb + d[None, :], mask=m2, other=0.0).to(tl.float32)
    tl.store(y_ptr + rows[:, None] * stride_yb + d[None, :], (y * z * tl.sigmoid(z)).to(y_ptr.dtype.element_ty),
             mask=m2)


def mamba1_state_update(state: Tensor, x: Tensor, dt_low: Tensor, dt_proj: Tensor, dt_bias: Tensor, A: Tensor,
                        B: Tensor, C: Tensor, D: Tensor, z: Tensor, fuse_dt_proj: Optional[bool] = None) -> Tensor:
    """state (Bt, Di, N) in place (unit last stride); x, z (Bt, Di); dt_low (Bt, R); dt_proj (Di, R)
    contiguous; dt_bias, D (Di,) and A (Di, N) fp32; B, C (Bt, N). Slices of x_proj / in_proj outputs are
    fine (unit inner stride). Returns (C.h + D x) * silu(z) as (Bt, Di) in x's dtype.

    dt_proj runs in-kernel at small batch (saves a launch); from FUSED_DT_MAX_BATCH rows on, a program of
    one row would re-read the whole dt_proj weight for each row, so either a tensor-core dot shares it among
    DOT_SHAPE's rows (a rank up to DOT_DT_MAX_RANK), or a GEMM computes it once first and each program then
    takes several rows (BATCHED_SHAPE), which share its A, D and dt_bias loads. `fuse_dt_proj` forces
    in-kernel (True, the dot at batches over FUSED_DT_MAX_BATCH) or the GEMM (False)."""
    batch, d_inner, N = state.shape
    R = dt_proj.shape[1]
    small = batch <= FUSED_DT_MAX_BATCH
    fused = (small or R <= DOT_DT_MAX_RANK) if fuse_dt_proj is None else fuse_dt_proj
    dot = fused and not small
    if not fused:
        dt_low = F.linear(dt_low, dt_proj)  # (Bt, Di)
    y = torch.empty(batch, d_inner, dtype=x.dtype, device=x.device)
    rows, block_d, warps = DOT_SHAPE if dot else FUSED_SHAPE if fused else BATCHED_SHAPE
    grid = (triton.cdiv(batch, rows), triton.cdiv(d_inner, block_d))
    launch = pdl.launch_options(state)
    _mamba1_update_kernel[grid](state, x, dt_low, dt_proj, dt_bias, A, B, C, D, z, y, batch, d_inner, R,
                                state.stride(0), state.stride(1), x.stride(0), dt_low.stride(0), B.stride(0),
                                C.stride(0), z.stride(0), y.stride(0), N=N, BLOCK_D=block_d,
                                BLOCK_R=max(16 if dot else 1, triton.next_power_of_2(R)), ROWS=rows, FUSED_DT=fused,
                                DOT_DT=dot, PDL=bool(launch), num_warps=warps, **launch)
    return y


def mamba1_state_update_ref(state: Tensor, x: Tensor, dt_low: Tensor, dt_proj: Tensor, dt_bias: Tensor,
                            A: Tensor, B: Tensor, C: Tensor, D: Tensor, z: Tensor) -> Tensor:
    """The torch twin (the model's dt_proj + softplus + `ops.selective_state_update`), in fp32."""
    delta = F.softplus(F.linear(dt_low.float(), dt_proj.float()) + dt_bias)  # (Bt, Di)
    work = state.float()
    y = ops.selective_state_update(work, x, delta, A, B, C, D, z)
    state.copy_(work)
    return y
