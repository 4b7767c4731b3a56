"""The whole-model prefill on the fused kernels: same contract, weights and rounding as `MambaModel.prefill`,
which dispatches here on CUDA, but for one rounding: a half model's Mamba1 step sizes are stored in fp16 where
the scan's grid is big (`scan.wants_half_step_sizes`).

Per layer: one add+RMSNorm over the (B*L, H) rows (the previous layer's output is added to the fp32 residual
inside it), the in_proj GEMM, the channels-last causal conv + SiLU reading its input columns in place, then
Mamba1: the x_proj GEMM, dt_proj with softplus(dt + bias) masked in one Triton pass, the Triton scan
(kernels/scan.py);
Mamba2: the chunked SSD (kernels/ssd.py; softplus(dt + bias) masked in its first pass), the gated norm
reading z in place; then out_proj. No transposes; the one fp32 (L, Di)-sized tensor is Mamba1's step sizes
(where they are not fp16).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

from mambapipe.engine.kernels import fastmath, pdl, scan, ssd
from mambapipe.engine.kernels.norms import add_rms_norm, gated_rms_norm
from mambapipe.engine.kernels.ssm import softplus
from mambapipe.engine.state import InferenceState, Into
from mambapipe.engine.weights import LayerWeights
from mambapipe.models import TRTLLM_NORM_EPSILON as EPS

# 16 tokens x 128 channels a program: 256-byte coalesced fp16 rows; the K shifted loads of a tile overlap, so
# they are served from L1/L2 and DRAM sees each input about once. The fastest of 7 tiles on the H200 at 2048
# tokens at all five models' widths, inputs from HBM (`gpu_micro.conv_variants`, GPU_NOTES.md v23): Codestral
# 33.4 -> 28.8 us, mamba2-2.7b 18.7 -> 16.0, mamba-2.8b 17.8 -> 15.1 against v9's (16, 256), which was picked
# timing one input that L2 partly held.
CONV_BLOCK_L, CONV_BLOCK_C = 16, 128
# (BLOCK_L, BLOCK_D, BLOCK_R, warps, stages) of Mamba1's dt_proj + softplus: (tokens x R) @ (R x channels) tiles.
# The fastest of 10 on the H200 at every shape timed (GPU_NOTES.md v22): 23.6 us at mamba-2.8b's 2048-token row
# (cuBLAS's dt_proj + the softplus pass before: 30.3), 6.9 us at mamba-130m's (11.0). Unlike the other prefill
# kernels it lets the next one (the scan) launch only at its end: allowed first thing, the 2048-token prefill of
# mamba-130m took 5.38 ms as a CUDA graph against 3.83 (mamba-2.8b's within noise).
DT_PROJ_TILE = (64, 64, 32, 4, 2)


@triton.jit
def _conv_prefill_kernel(x_ptr, w_ptr, b_ptr, len_ptr, out_ptr, state_ptr, slot_ptr, L, C, s_xb, s_xl, s_ob, s_ol,
                         s_sb, s_sc, K: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_L: tl.constexpr,
                         BLOCK_C: tl.constexpr, STATE_COLS: tl.constexpr, SLOTS: tl.constexpr, PDL: tl.constexpr):
    pdl.allow_next_then_wait(PDL)
    b, lb = tl.program_id(0).to(tl.int64), tl.program_id(1)
    t = lb * BLOCK_L + tl.arange(0, BLOCK_L)  # (BL,)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BC,)
    c_ok = c < C
    x_rows = x_ptr + b * s_xb + c[None, :]  # (1, BC)
    acc = tl.zeros((BLOCK_L, BLOCK_C), dtype=tl.float32)
    for k in tl.static_range(K):  # tap k reads input t - (K-1) + k; before the prompt the input is zero
        src = t - (K - 1) + k
        xk = tl.load(x_rows + src[:, None] * s_xl, mask=((src >= 0) & (src < L))[:, None] & c_ok[None, :],
                     other=0.0)  # (BL, BC)
        acc += xk.to(tl.float32) * tl.load(w_ptr + c * K + k, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    out = out_ptr + b * s_ob + t[:, None] * s_ol + c[None, :]
    silu = fastmath.silu(acc, HALF=out_ptr.dtype.element_ty != tl.float32)
    tl.store(out, silu.to(out_ptr.dtype.element_ty), mask=(t < L)[:, None] & c_ok[None, :])
    if lb == 0:  # the first token block of each channel block also stores the row's conv state
        dst = tl.load(slot_ptr + b).to(tl.int64) if SLOTS else b  # the row's slot, or its own row
        _store_conv_state(x_ptr + b * s_xb, s_xl, tl.load(len_ptr + b), state_ptr + dst * s_sb, s_sc, c, c_ok,
                          K=K, STATE_COLS=STATE_COLS)


@triton.jit
def _store_conv_state(x_row, s_xl, length, state_row, s_sc, c, c_ok, K: tl.constexpr, STATE_COLS: tl.constexpr):
    """state[c, j] = x[length - (K-1) + j, c] for j < K-1: the row's last K-1 real inputs, zero before the prompt."""
    j = tl.arange(0, STATE_COLS)  # (SC,)
    src = length - (K - 1) + j  # (SC,)
    ok = c_ok[:, None] & (j < K - 1)[None, :]  # (BC, SC)
    xs = tl.load(x_row + src[None, :] * s_xl + c[:, None], mask=ok & (src >= 0)[None, :], other=0.0)  # (BC, SC)
    tl.store(state_row + c[:, None] * s_sc + j[None, :], xs.to(state_row.dtype.element_ty), mask=ok)


def causal_conv1d_prefill(x: Tensor, weight: Tensor, bias: Optional[Tensor], lengths: Tensor,
                          into: Optional[Into] = None) -> tuple[Tensor, Optional[Tensor]]:
    """Twin of `ops.causal_conv1d` in channels-last layout: x (B, L, C) with a unit inner stride (columns of the
    in_proj output, read in place); weight (C, K) contiguous; bias (C,) or None; lengths (B,) real tokens a row.
    Returns silu(conv) as a new (B, L, C) in x's dtype (garbage past each length, as there) and the conv
    state (B, C, K-1) in x's dtype: the last K-1 real inputs of each row, zeros where the prompt is shorter.
    into = (states (S, C, K-1) with a unit last stride, slots (B,)): row b's state goes to states[slots[b]]
    instead (in states' dtype; the inference state's layer, no copy after), and None is returned for it."""
    batch, length, channels = x.shape
    width = weight.shape[1]
    out = torch.empty(batch, length, channels, dtype=x.dtype, device=x.device)
    # without `into`: a new state tensor, row b for row b (SLOTS off, so `lengths` stands in for no slots)
    state, slots = into if into is not None else (torch.empty(batch, channels, width - 1, dtype=x.dtype,
                                                              device=x.device), lengths)
    grid = (batch, triton.cdiv(length, CONV_BLOCK_L), triton.cdiv(channels, CONV_BLOCK_C))
    launch = pdl.launch_options(x)
    _conv_prefill_kernel[grid](x, weight, bias if bias is not None else weight, lengths, out, state, slots, length,
                               channels, x.stride(0), x.stride(1), out.stride(0), out.stride(1), state.stride(0),
                               state.stride(1), K=width, HAS_BIAS=bias is not None, BLOCK_L=CONV_BLOCK_L,
                               BLOCK_C=CONV_BLOCK_C, STATE_COLS=triton.next_power_of_2(width - 1),
                               SLOTS=into is not None, num_warps=4, PDL=bool(launch), **launch)
    return out, (None if into is not None else state)


@triton.jit
def _dt_proj_softplus_kernel(a_ptr, w_ptr, bias_ptr, len_ptr, out_ptr, bc_ptr, bc_out_ptr, L, D, R, s_ab, s_al,
                             s_bcb, s_bcl, BC: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
                             BLOCK_R: tl.constexpr, BLOCK_BC: tl.constexpr, PRECISION: tl.constexpr,
                             PDL: tl.constexpr):
    pdl.wait_previous(PDL)  # the next launch is allowed at the end, not first thing: see DT_PROJ_TILE
    db, lb, b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    t = lb * BLOCK_L + tl.arange(0, BLOCK_L)  # (BL,)
    d = db * BLOCK_D + tl.arange(0, BLOCK_D)  # (BD,)
    t_ok, d_ok = t < L, d < D
    acc = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)
    for r0 in range(0, R, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)  # (BR,)
        a = tl.load(a_ptr + b * s_ab + t[:, None] * s_al + r[None, :], mask=t_ok[:, None] & (r < R)[None, :],
                    other=0.0)  # (BL, BR): dt_low
        w = tl.load(w_ptr + d[None, :] * R + r[:, None], mask=(r < R)[:, None] & d_ok[None, :], other=0.0)  # (BR, BD)
        acc += tl.dot(a, w, input_precision=PRECISION)
    dtype = a_ptr.dtype.element_ty
    dt = acc.to(dtype).to(tl.float32) + tl.load(bias_ptr + d, mask=d_ok, other=0.0)[None, :]  # F.linear's rounding
    dt = softplus(dt, HALF=dtype != tl.float32)  # (BL, BD)
    dt = tl.where((t < tl.load(len_ptr + b))[:, None], dt, 0.0)  # padding steps leave the state untouched
    if out_ptr.dtype.element_ty == tl.float16:  # fp16 step sizes: a bf16 model's past fp16's range stay finite
        dt = tl.minimum(dt, 65504.0)
    tl.store(out_ptr + (b * L + t[:, None]) * D + d[None, :], dt.to(out_ptr.dtype.element_ty),
             mask=t_ok[:, None] & d_ok[None, :])
    if BC > 0:  # the first column block of programs also widens its tokens' B and C columns
        if db == 0:
            c = tl.arange(0, BLOCK_BC)  # (BBC,)
            bc_mask = t_ok[:, None] & (c < BC)[None, :]
            bc = tl.load(bc_ptr + b * s_bcb + t[:, None] * s_bcl + c[None, :], mask=bc_mask, other=0.0)
            tl.store(bc_out_ptr + (b * L + t[:, None]) * BC + c[None, :], bc.to(tl.float32), mask=bc_mask)
    pdl.allow_next(PDL)


def dt_proj_softplus(dt_low: Tensor, dt_proj: Tensor, dt_bias: Tensor, lengths: Tensor,
                     bc: Optional[Tensor] = None, half: bool = False) -> tuple[Tensor, Optional[Tensor]]:
    """Mamba1's step sizes softplus(dt_low @ dt_projᵀ + dt_bias) at t < lengths[row], 0 after, as a new
    (B, L, Di) fp32, or fp16 if `half` (rounded once, at the store): the dt_proj product and the softplus in one
    pass, so its output never goes to memory in the model dtype and back. dt_low (B, L, R) with a unit inner
    stride (the x_proj output's first columns); dt_proj (Di, R) contiguous, in dt_low's dtype; dt_bias (Di,)
    fp32. Given Mamba1's B and C columns bc (B, L, 2N, a unit inner stride), also returns them as a new fp32
    (B, L, 2N), else None.
    Twin of the model's `F.softplus(F.linear(dt_low, dt_proj).float() + dt_bias) * valid[..., None]` (and
    `bc.float()`): the product is rounded to the model dtype before the bias, as F.linear's output is."""
    batch, length, rank = dt_low.shape
    d_inner = dt_proj.shape[0]
    if dt_proj.stride() != (rank, 1):
        raise ValueError(f"dt_proj_softplus needs a contiguous (Di, R) dt_proj, got strides {dt_proj.stride()}")
    out = torch.empty(batch, length, d_inner, dtype=torch.float16 if half else torch.float32, device=dt_low.device)
    bc_out = None if bc is None else torch.empty(bc.shape, dtype=torch.float32, device=dt_low.device)
    bc_width = 0 if bc is None else bc.shape[-1]
    bc_in = (bc, bc_out, bc.stride(0), bc.stride(1)) if bc is not None else (dt_low, out, 0, 0)  # unread at BC=0
    block_l, block_d, block_r, warps, stages = DT_PROJ_TILE
    block_r = max(16, min(block_r, triton.next_power_of_2(rank)))  # tl.dot needs K >= 16
    grid = (triton.cdiv(d_inner, block_d), triton.cdiv(length, block_l), batch)
    launch = pdl.launch_options(dt_low)
    _dt_proj_softplus_kernel[grid](
        dt_low, dt_proj, dt_bias, lengths, out, bc_in[0], bc_in[1], length, d_inner, rank, dt_low.stride(0),
        dt_low.stride(1), bc_in[2], bc_in[3], BC=bc_width, BLOCK_L=block_l, BLOCK_D=block_d, BLOCK_R=block_r,
        BLOCK_BC=triton.next_power_of_2(max(bc_width, 1)),
        PRECISION="ieee" if dt_low.dtype == torch.float32 else "tf32", num_warps=warps, num_stages=stages,
        PDL=bool(launch), **launch)
    return out, bc_out


def fused_prefill(model, tokens: Tensor, lengths: Tensor, state: InferenceState, slots: Tensor,
                  all_logits: bool = False) -> Tensor:
    """Right-padded prompts (B, L) through `model` (a MambaModel) from a zero state; stores their final states
    in `slots`. Returns fp32 logits at each prompt's last token (B, V), or at every position (B, L, V)."""
    batch, length = tokens.shape
    residual = F.embedding(tokens, model.glob["embedding"]).float().flatten(0, 1)  # (B*L, H) fp32
    mixer = _mamba2_mixer if model.spec.is_mamba2 else _mamba1_mixer
    delta = None  # the previous layer's output, added to the residual inside the next norm
    for i, w in enumerate(model.layers):
        h = add_rms_norm(residual, delta, w.norm, EPS).view(batch, length, -1)  # (B, L, H)
        conv_states, ssm_states = state.layer(i)  # the kernels store each row's final states at its slot
        out = mixer(model, w, h, lengths, (conv_states, slots), (ssm_states, slots))
        delta = out.flatten(0, 1)  # (B*L, H)
    if not all_logits:  # only the last real token of each row reaches the final norm
        rows = torch.arange(batch, device=tokens.device) * length + lengths - 1  # (B,)
        residual, delta = residual[rows], delta[rows]  # (B, H)
    h = add_rms_norm(residual, delta, model.glob["norm_f"], EPS)  # (B*L or B, H)
    logits = F.linear(h, model.glob["lm_head"]).float()  # (..., V/tp)
    logits = model.comm.gather_last_dim(logits) if model.lm_head_split else logits
    return logits.view(batch, length, -1) if all_logits else logits


# A mixer returns the layer's output (B, L, H) and stores each row's final conv and SSM states into
# (states, slots): the inference state's layer at the rows' slots.
def _mamba1_mixer(model, w: LayerWeights, h: Tensor, lengths: Tensor, conv_into: Into, ssm_into: Into) -> Tensor:
    N = model.spec.state_size
    x, z = F.linear(h, w.in_proj, w.in_proj_bias).split(model.d_inner, dim=-1)  # (B, L, Di/tp) each
    x, _ = causal_conv1d_prefill(x, w.conv_weight, w.conv_bias, lengths, into=conv_into)  # (B, L, Di/tp)
    x_dbl = model.comm.all_reduce(F.linear(x, w.x_proj))  # (B, L, R+2N): d_inner-split partial sums
    dt_low, BC = x_dbl.split([x_dbl.shape[-1] - 2 * N, 2 * N], dim=-1)
    # softplus and the padding mask with the dt_proj product, not in the scan: folded into the scan they made it
    # 3.2x slower on the H200 (0.74 vs 0.23 ms a mamba-2.8b layer, GPU_NOTES.md v5), far more than this pass
    # costs. The pass also widens B and C to fp32 where the scan's launch reads them faster so (v21)
    widen = scan.wants_fp32_bc(x.shape[0], model.d_inner, x.shape[1], x.device, x.dtype)
    # and rounds the step sizes to fp16 where the scan's grid is big enough to run faster on them (v27)
    half = x.dtype != torch.float32 and scan.wants_half_step_sizes(x.shape[0], model.d_inner, x.shape[1], x.device)
    delta, BC32 = dt_proj_softplus(dt_low, w.dt_proj, w.dt_bias, lengths,  # (B, L, Di/tp) fp32 or fp16
                                   BC if widen else None, half)
    B, C = (BC32 if widen else BC).split(N, dim=-1)  # (B, L, N) each
    y, _ = scan.selective_scan(x, delta, w.A, B, C, w.D, z, into=ssm_into)  # (B, L, Di/tp); states into slots
    return model._out_proj(w, y)


def _mamba2_mixer(model, w: LayerWeights, h: Tensor, lengths: Tensor, conv_into: Into, ssm_into: Into) -> Tensor:
    batch, length, _ = h.shape
    P, N = model.spec.head_dim, model.spec.state_size
    zxbcdt = F.linear(h, w.in_proj, w.in_proj_bias)  # (B, L, rows/tp)
    z, xBC, dt = zxbcdt.split([model.d_inner, model.d_inner + 2 * model.bc_size, model.heads], dim=-1)
    xBC, _ = causal_conv1d_prefill(xBC, w.conv_weight, w.conv_bias, lengths, into=conv_into)  # (B, L, C/tp)
    x, B, C = xBC.split([model.d_inner, model.bc_size, model.bc_size], dim=-1)
    # the raw dt (B, L, Hh/tp): the SSD applies softplus(dt + dt_bias) and the padding mask in its first pass
    y, _ = ssd.ssd_chunk_scan(x.unflatten(-1, (model.heads, P)), dt, w.A, B.unflatten(-1, (-1, N)),
                              C.unflatten(-1, (-1, N)), w.D, model.spec.chunk_size, into=ssm_into,
                              dt_bias=w.dt_bias, lengths=lengths)  # (B, L, Hh/tp, P)
    group = model.spec.intermediate_size // model.spec.n_groups  # groups never straddle ranks
    gated = gated_rms_norm(y.reshape(batch * length, -1), z.flatten(0, 1), w.gate_norm, group, EPS)  # (B*L, Di/tp)
    return model._out_proj(w, gated.view(batch, length, -1))
