"""Mamba2 prefill's SSD for the GPU path: the Triton kernels of `ssd_triton` by default, or the chunked SSD
of `ops.ssd_chunk_scan` rearranged for few, large batched matmuls (same contract, same math).

Two changes against the reference: C.B^T is formed once per group instead of once per head (heads of a
group share B and C; Codestral has 16 heads a group, mamba2-2.7b 80), and the in-chunk decay matrix is
exp(cumsum_l - cumsum_s) masked to s <= l, two passes over the (T, T) tiles instead of the reference's
expand / mask / cumsum / mask / exp. Within one chunk the cumulative sums stay small enough for fp32
differences (mamba_ssm's chunk-scan kernels form the same differences).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from mambapipe.engine.state import Into, store_at_slots

# The GPU path's SSD is the Triton chunked SSD (`ssd_triton`: tensor-core tiles, no (T x T) decay tensors in
# memory), measured on the H200 at 10.6x (mamba2-2.7b) / 9.1x (codestral) less time a layer than the torch ops
# below (GPU_NOTES.md, v5). The switch stays so `benchmarks/gpu_bench.py --torch-ssd` can time those.
TRITON_SSD = True


def _chunks(t: Tensor, T: int, pad: int) -> Tensor:
    """(B, L, ...) -> (B, c, T, ...) with zero padding at the end of the sequence."""
    t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))
    return t.unflatten(1, (-1, T))


def ssd_chunk_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, chunk_size: int,
                   into: Optional[Into] = None, dt_bias: Optional[Tensor] = None,
                   lengths: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
    """The GPU path's SSD: `ssd_triton.ssd_chunk_scan` (y in x's dtype), or `regrouped_ssd_chunk_scan` with
    TRITON_SSD off (y fp32, as `ops.ssd_chunk_scan`). Otherwise the same contract, and `into`, `dt_bias` and
    `lengths` as `ssd_triton.ssd_chunk_scan`'s: the final states stored into those slots, None returned for
    them; the raw dt projection turned into step sizes (softplus, zero past each length)."""
    if TRITON_SSD:
        from mambapipe.engine.kernels import ssd_triton

        return ssd_triton.ssd_chunk_scan(x, dt, A, B, C, D, chunk_size, into, dt_bias, lengths)
    if dt_bias is not None:
        valid = torch.arange(dt.shape[1], device=dt.device) < lengths[:, None]  # (Bt, L)
        dt = F.softplus(dt.float() + dt_bias) * valid[..., None]  # (Bt, L, Hh)
    y, final = regrouped_ssd_chunk_scan(x, dt, A, B, C, D, chunk_size)
    if into is None:
        return y, final
    store_at_slots(into, final)
    return y, None


def regrouped_ssd_chunk_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                             chunk_size: int) -> tuple[Tensor, Tensor]:
    """x (Bt, L, Hh, P); dt (Bt, L, Hh) softplus'd (zero at padding); A, D (Hh,) fp32; B, C (Bt, L, G, N).
    Returns y = SSM(x) + D x as (Bt, L, Hh, P) fp32 and the final state (Bt, Hh, P, N) fp32."""
    batch, length, heads, P = x.shape
    G, N = B.shape[2:]
    T = min(chunk_size, length)
    pad = (-length) % T
    xf, dtf = x.float(), dt.float()
    X = _chunks(xf * dtf[..., None], T, pad).unflatten(3, (G, -1))  # (Bt, c, T, G, R, P)
    A_cum = _chunks(dtf * A, T, pad).cumsum(2).unflatten(3, (G, -1))  # (Bt, c, T, G, R)
    Bc, Cc = _chunks(B.float(), T, pad), _chunks(C.float(), T, pad)  # (Bt, c, T, G, N)

    A_l = A_cum.permute(0, 1, 3, 4, 2)  # (Bt, c, G, R, T)
    decay = (A_l[..., :, None] - A_l[..., None, :]).exp_()  # (Bt, c, G, R, T, T): exp(cum_l - cum_s)
    decay.masked_fill_(~torch.ones(T, T, dtype=torch.bool, device=x.device).tril(), 0.0)
    CB = torch.einsum("bclgn,bcsgn->bcgls", Cc, Bc)  # (Bt, c, G, T, T): once per group
    y_diag = torch.einsum("bcgrls,bcsgrp->bclgrp", decay.mul_(CB[:, :, :, None]), X)  # (Bt, c, T, G, R, P)

    to_end = (A_cum[:, :, -1:] - A_cum).exp()  # (Bt, c, T, G, R)
    states = torch.einsum("bclgn,bclgr,bclgrp->bcgrpn", Bc, to_end, X)  # (Bt, c, G, R, P, N)
    chunk_decay = A_cum[:, :, -1].exp()  # (Bt, c, G, R): decay across a whole chunk
    carried = torch.empty_like(states)  # state entering each chunk
    h = torch.zeros_like(states[:, 0])  # (Bt, G, R, P, N)
    for i in range(states.shape[1]):  # few chunks (L / 256): a short sequential pass
        carried[:, i] = h
        h = h * chunk_decay[:, i, ..., None, None] + states[:, i]
    y_off = torch.einsum("bclgn,bcgrpn->bclgrp", Cc, carried) * A_cum.exp()[..., None]  # (Bt, c, T, G, R, P)
    y = (y_diag + y_off).flatten(3, 4).flatten(1, 2)[:, :length] + xf * D[:, None]  # (Bt, L, Hh, P)
    return y, h.flatten(1, 2)
