"""Pure-PyTorch reference kernels of the native engine, one plain function each.

These are the CPU path and the ground truth that faster twins (Triton, in `engine/kernels/`) are tested
against, so each signature is small and documented with shapes. Notation: B batch, L tokens, C conv
channels, K conv width, Di d_inner, N d_state, Hh heads, P head_dim, G groups.

Padding convention for batched prefill of unequal prompts: inputs are right-padded to L and the caller
zeroes `delta`/`dt` at padded positions. A zero step leaves an SSM state untouched (decay exp(0) = 1,
input 0), so the final state of every sequence equals its state after its last real token.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm over the last dim, computed in fp32, returned in x's dtype times weight (as HF does)."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def gated_rms_norm(x: Tensor, z: Tensor, weight: Tensor, group_size: int, eps: float) -> Tensor:
    """Mamba2's gated group norm (norm_before_gate=False): RMSNorm(x * silu(z)) within groups.

    x, z: (..., D) with D a multiple of group_size; weight: (D,). Returns x's dtype.
    """
    xf = x.float() * F.silu(z.float())  # (..., D)
    groups = xf.unflatten(-1, (-1, group_size))  # (..., D/g, g)
    groups = groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + eps)
    return weight * groups.flatten(-2).to(x.dtype)


# torch's CPU kernels for float16 products and convolutions are slow on a CPU without float16 arithmetic (measured on
# an AMD EPYC with AVX512-BF16, no AVX512-FP16): a product's time grows row by row ((256, 768) @ (768, 3072) in 23.8
# ms, 6.2 ms on fp32 copies of the operands) and the depthwise conv runs channel by channel (1536 channels x 259
# steps in 6.7 ms, 0.28 ms). So the CPU path runs such float16 work on fp32 copies and rounds once: the fp32 sums
# torch's float16 kernels also take, in another order. Below this many rows a product stays on torch's float16
# kernel: in a decode step every weight, the lm_head's too, would be copied each step, and mamba-130m's batch-8 step
# took 97.4 ms a step routed against 66.3 on torch's kernel, its batch-16 one 115.4 against 126.6 (64: 204 / 513).
CPU_HALF_PRODUCT_ROWS = 16


def _cpu_half(x: Tensor) -> bool:
    return x.dtype == torch.float16 and x.device.type == "cpu"


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """F.linear; on the CPU, a float16 product of CPU_HALF_PRODUCT_ROWS rows or more runs on fp32 copies."""
    if _cpu_half(x) and x.numel() >= CPU_HALF_PRODUCT_ROWS * x.shape[-1]:
        return F.linear(x.float(), weight.float(), None if bias is None else bias.float()).to(x.dtype)
    return F.linear(x, weight, bias)


def _depthwise_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """F.conv1d of each channel of x (B, C, L') with its row of weight (C, K); on the CPU float16 runs in fp32."""
    if _cpu_half(x):
        return _depthwise_conv(x.float(), weight.float(), None if bias is None else bias.float()).to(x.dtype)
    return F.conv1d(x, weight.unsqueeze(1), bias, groups=weight.shape[0])


def causal_conv1d(x: Tensor, weight: Tensor, bias: Optional[Tensor], lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Depthwise causal conv + SiLU over a right-padded batch, starting from a zero state.

    x: (B, C, L); weight: (C, K); bias: (C,) or None; lengths: (B,) real tokens per row.
    Returns y (B, C, L) (garbage past each length) and the conv state (B, C, K-1): the last K-1 real
    inputs of each row, zeros where the prompt is shorter than K-1.
    """
    channels, width = weight.shape
    padded = F.pad(x, (width - 1, 0))  # (B, C, K-1+L)
    y = F.silu(_depthwise_conv(padded, weight, bias))  # (B, C, L)
    # Input position t sits at padded index t+K-1, so the last K-1 real inputs are [len, len+K-1).
    index = lengths[:, None] + torch.arange(width - 1, device=x.device)  # (B, K-1)
    state = padded.gather(2, index[:, None, :].expand(-1, channels, -1))  # (B, C, K-1)
    return y, state


def causal_conv1d_update(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """One decode step of the causal conv + SiLU; shifts `conv_state` in place.

    x: (B, C); conv_state: (B, C, K-1) oldest first; weight: (C, K); bias: (C,) or None. Returns (B, C).
    """
    width = weight.shape[1]
    y = torch.einsum("bck,ck->bc", conv_state, weight[:, : width - 1]) + x * weight[:, -1]  # (B, C)
    if bias is not None:
        y = y + bias
    for k in range(width - 2):  # column copies: a shifted self-copy would overlap
        conv_state[:, :, k].copy_(conv_state[:, :, k + 1])
    conv_state[:, :, -1].copy_(x)
    return F.silu(y)


SCAN_CHUNK_ELEMENTS = 1 << 21  # (T, B, Di, N) fp32 chunk tensors of ~8 MB stay cache-friendly


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, z: Tensor,
                   time_chunk: int = 0) -> tuple[Tensor, Tensor]:
    """Mamba1 selective scan over a whole prompt from a zero state.

    u, delta, z: (B, L, Di) with delta already softplus'd (and zero at padding); A: (Di, N) fp32;
    B, C: (B, L, N); D: (Di,). Returns y = (C.h + D u) * silu(z) as (B, L, Di) in u's dtype, and the
    final state (B, Di, N) fp32.

    The discretised terms exp(delta*A) and delta*B*u are formed for a whole time chunk in single ops;
    only the first-order recurrence h = dA*h + dBu runs step by step (one fused op per token), since
    A differs per (channel, state) and a cumulative-decay rewrite overflows for fast-decaying channels
    (it was also ~3x slower on CPU: it streams three more chunk-sized tensors through memory).
    `time_chunk` (0: sized from SCAN_CHUNK_ELEMENTS) only trades memory for op count.
    """
    batch, length, d_inner = u.shape
    time_chunk = time_chunk or max(1, min(64, SCAN_CHUNK_ELEMENTS // (batch * d_inner * A.shape[1])))
    uf, deltaf = u.float(), delta.float()
    h = u.new_zeros(batch, d_inner, A.shape[1], dtype=torch.float32)  # (B, Di, N)
    ys = []
    for start in range(0, length, time_chunk):
        sl = slice(start, start + time_chunk)
        dt = deltaf[:, sl].transpose(0, 1)[..., None]  # (T, B, Di, 1)
        dA = torch.exp(dt * A)  # (T, B, Di, N)
        dBu = dt * uf[:, sl].transpose(0, 1)[..., None] * B[:, sl].float().transpose(0, 1)[:, :, None, :]
        hs = torch.empty_like(dA)  # (T, B, Di, N)
        for t in range(dA.shape[0]):
            h = torch.addcmul(dBu[t], h, dA[t], out=hs[t])
        ys.append(torch.einsum("tbdn,btn->btd", hs, C[:, sl].float()))  # (B, T, Di)
    y = torch.cat(ys, dim=1) + uf * D  # (B, L, Di)
    y = y * F.silu(z.float())
    return y.to(u.dtype), h.clone()


def _store(state: Tensor, h: Tensor) -> None:
    """Write the fp32 working state back: one rounding per step for a low-precision state, as the
    Triton kernels store theirs (y is read from the unrounded h, as there)."""
    if h is not state:
        state.copy_(h)


def selective_state_update(state: Tensor, x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                           D: Tensor, z: Tensor) -> Tensor:
    """One Mamba1 decode step; updates `state` in place.

    state: (B, Di, N) fp32 or lower (build.ssm_state_dtype); x, delta (softplus'd), z: (B, Di); A: (Di, N);
    B, C: (B, N); D: (Di,). Returns y (B, Di) in x's dtype.
    """
    dt = delta.float()[..., None]  # (B, Di, 1)
    h = state.float()  # (B, Di, N) fp32: `state` itself when it is fp32
    h.mul_(torch.exp(dt * A)).addcmul_(dt * x.float()[..., None], B.float()[:, None, :])  # (B, Di, N)
    _store(state, h)
    y = torch.einsum("bdn,bn->bd", h, C.float()) + x.float() * D  # (B, Di)
    return (y * F.silu(z.float())).to(x.dtype)


def _segsum(x: Tensor) -> Tensor:
    """Stable segment sums: out[..., i, j] = x[..., j+1] + ... + x[..., i] for j <= i, else -inf."""
    T = x.shape[-1]
    x = x[..., None].expand(*x.shape, T)  # (..., T, T): column j holds x
    x = x.masked_fill(~torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device), -1), 0)
    out = x.cumsum(-2)  # (..., T, T)
    return out.masked_fill(~torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device)), -torch.inf)


# The torch path cuts Mamba2 prompts into chunks of at most this many tokens, whatever the model's chunk_size: any
# length gives the same result up to fp32 rounding (rel. ~3e-7), and a chunk's (T, T) blocks are most of the work on
# the CPU (mamba2-130m's shape, one layer, 923 tokens: 56.5 ms in chunks of 256, 24.8 in chunks of 64).
TORCH_SSD_CHUNK = 64


def ssd_chunk_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                   chunk_size: int) -> tuple[Tensor, Tensor]:
    """Mamba2 prefill by the chunked state-space-duality algorithm, from a zero state.

    x: (B, L, Hh, P); dt: (B, L, Hh) already softplus'd (zero at padding); A, D: (Hh,) fp32;
    B, C: (B, L, G, N). Returns y = SSM(x) + D x as (B, L, Hh, P) fp32 and the final state
    (B, Hh, P, N) fp32. Within a chunk the scan is a masked matmul; between chunks a short recurrence
    over chunk states (the "Listing 1" algorithm of the Mamba2 paper).
    """
    batch, length, heads, _ = x.shape
    T = min(chunk_size, length)
    pad = (-length) % T
    rep = heads // B.shape[2]
    xf = x.float()
    X = F.pad(xf * dt.float()[..., None], (0, 0, 0, 0, 0, pad)).unflatten(1, (-1, T))  # (B, c, T, Hh, P)
    Adt = F.pad(dt.float() * A, (0, 0, 0, pad)).unflatten(1, (-1, T)).permute(0, 3, 1, 2)  # (B, Hh, c, T)
    Bc = F.pad(B.float(), (0, 0, 0, 0, 0, pad)).unflatten(1, (-1, T)).repeat_interleave(rep, 3)  # (B,c,T,Hh,N)
    Cc = F.pad(C.float(), (0, 0, 0, 0, 0, pad)).unflatten(1, (-1, T)).repeat_interleave(rep, 3)  # (B,c,T,Hh,N)
    A_cum = Adt.cumsum(-1)  # (B, Hh, c, T)

    scores = torch.einsum("bclhn,bcshn->bchls", Cc, Bc)  # (B, c, Hh, T, T)
    scores = scores * torch.exp(_segsum(Adt)).transpose(1, 2)  # causal decay mask within each chunk
    y_diag = torch.einsum("bchls,bcshp->bclhp", scores, X)  # (B, c, T, Hh, P)
    decay_to_end = torch.exp(A_cum[..., -1:] - A_cum)  # (B, Hh, c, T)
    B_decayed = Bc * decay_to_end.permute(0, 2, 3, 1)[..., None]  # (B, c, T, Hh, N)
    states = torch.einsum("bclhn,bclhp->bchpn", B_decayed, X)  # (B, c, Hh, P, N)
    states = torch.cat([torch.zeros_like(states[:, :1]), states], dim=1)  # (B, c+1, Hh, P, N)
    decay_chunk = torch.exp(_segsum(F.pad(A_cum[..., -1], (1, 0))))  # (B, Hh, c+1, c+1)
    states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)  # (B, c+1, Hh, P, N)
    y_off = torch.einsum("bclhn,bchpn->bclhp", Cc, states[:, :-1])  # (B, c, T, Hh, P)
    y_off = y_off * torch.exp(A_cum).permute(0, 2, 3, 1)[..., None]  # decay from each chunk's start
    y = (y_diag + y_off).flatten(1, 2)[:, :length] + xf * D[:, None]  # (B, L, Hh, P)
    return y, states[:, -1]


def ssd_state_update(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor) -> Tensor:
    """One Mamba2 decode step; updates `state` in place.

    state: (B, Hh, P, N) fp32 or lower (build.ssm_state_dtype); x: (B, Hh, P); dt: (B, Hh) softplus'd;
    A, D: (Hh,); B, C: (B, G, N). Returns y = C.h + D x as (B, Hh, P) fp32 (the gated norm applies the gate).
    """
    batch, heads, P = x.shape
    groups, N = B.shape[1:]
    dtf = dt.float()
    h = state.float()  # (B, Hh, P, N) fp32: `state` itself when it is fp32
    by_group = h.view(batch, groups, heads // groups, P, N)  # heads of a group share B and C
    xdt = (x.float() * dtf[..., None]).view(batch, groups, heads // groups, P, 1)
    h.mul_(torch.exp(dtf * A)[..., None, None])  # (B, Hh, P, N)
    by_group.addcmul_(xdt, B.float()[:, :, None, None, :])
    _store(state, h)
    y = torch.einsum("bgkpn,bgn->bgkp", by_group, C.float()).reshape(batch, heads, P)  # (B, Hh, P)
    return y + x.float() * D[:, None]
