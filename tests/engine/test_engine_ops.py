"""Each torch kernel of mambapipe/engine/ops.py against a naive, obviously-correct reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mambapipe.engine import ops


def _naive_conv(x, weight, bias):
    """Causal depthwise conv + SiLU, one output position at a time. x (B, C, L)."""
    K = weight.shape[1]
    padded = F.pad(x, (K - 1, 0))
    out = torch.stack([(padded[:, :, t:t + K] * weight).sum(-1) + bias for t in range(x.shape[2])], dim=2)
    return F.silu(out)


def _naive_mamba1(u, delta, A, B, C, D, z):
    """The Mamba1 recurrence h_t = exp(d_t A) h_{t-1} + d_t B_t u_t, y_t = C_t h_t + D u_t, gated."""
    h = torch.zeros(u.shape[0], u.shape[2], A.shape[1])
    ys = []
    for t in range(u.shape[1]):
        h = torch.exp(delta[:, t, :, None] * A) * h + delta[:, t, :, None] * B[:, t, None, :] * u[:, t, :, None]
        ys.append((h * C[:, t, None, :]).sum(-1) + D * u[:, t])
    return torch.stack(ys, 1) * F.silu(z), h


def _naive_mamba2(x, dt, A, B, C, D):
    """The Mamba2 recurrence per head with B/C shared within a group. x (B, L, Hh, P), B/C (B, L, G, N)."""
    rep = x.shape[2] // B.shape[2]
    Bh, Ch = B.repeat_interleave(rep, 2), C.repeat_interleave(rep, 2)
    h = torch.zeros(x.shape[0], x.shape[2], x.shape[3], B.shape[3])
    ys = []
    for t in range(x.shape[1]):
        decay = torch.exp(dt[:, t] * A)[..., None, None]
        h = decay * h + (dt[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None, :]
        ys.append((h * Ch[:, t, :, None, :]).sum(-1) + D[:, None] * x[:, t])
    return torch.stack(ys, 1), h


def test_causal_conv1d_matches_naive_and_keeps_last_real_inputs():
    torch.manual_seed(0)
    x, w, b = torch.randn(3, 5, 7), torch.randn(5, 4), torch.randn(5)
    lengths = torch.tensor([7, 4, 2])
    y, state = ops.causal_conv1d(x, w, b, lengths)
    torch.testing.assert_close(y, _naive_conv(x, w, b))
    for row, n in enumerate(lengths.tolist()):
        expected = F.pad(x[row, :, :n], (3, 0))[:, -3:]  # last K-1 real inputs, zero-filled
        torch.testing.assert_close(state[row], expected)


def test_conv_update_steps_equal_prefill():
    torch.manual_seed(1)
    x, w, b = torch.randn(2, 6, 9), torch.randn(6, 4), torch.randn(6)
    full, _ = ops.causal_conv1d(x, w, b, torch.tensor([9, 9]))
    _, state = ops.causal_conv1d(x[:, :, :5], w, b, torch.tensor([5, 5]))
    steps = [ops.causal_conv1d_update(x[:, :, t], state, w, b) for t in range(5, 9)]
    torch.testing.assert_close(torch.stack(steps, 2), full[:, :, 5:])


@pytest.mark.parametrize("length,time_chunk", [(1, 64), (13, 4), (20, 64)])
def test_selective_scan_matches_recurrence(length, time_chunk):
    torch.manual_seed(length)
    Bsz, Di, N = 2, 6, 4
    u, z = torch.randn(Bsz, length, Di), torch.randn(Bsz, length, Di)
    delta = F.softplus(torch.randn(Bsz, length, Di))
    A, D = -torch.rand(Di, N) * 5, torch.randn(Di)
    Bm, Cm = torch.randn(Bsz, length, N), torch.randn(Bsz, length, N)
    y, h = ops.selective_scan(u, delta, A, Bm, Cm, D, z, time_chunk=time_chunk)
    y_ref, h_ref = _naive_mamba1(u, delta, A, Bm, Cm, D, z)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-5)


def test_zero_delta_padding_leaves_state_untouched():
    torch.manual_seed(2)
    u, z = torch.randn(1, 10, 3), torch.randn(1, 10, 3)
    delta = F.softplus(torch.randn(1, 10, 3))
    A, D, Bm, Cm = -torch.rand(3, 4), torch.randn(3), torch.randn(1, 10, 4), torch.randn(1, 10, 4)
    _, h_short = ops.selective_scan(u[:, :6], delta[:, :6], A, Bm[:, :6], Cm[:, :6], D, z[:, :6])
    padded = delta.clone()
    padded[:, 6:] = 0
    _, h_padded = ops.selective_scan(u, padded, A, Bm, Cm, D, z)
    torch.testing.assert_close(h_padded, h_short)


def test_selective_state_update_continues_the_scan():
    torch.manual_seed(3)
    Bsz, L, Di, N = 2, 6, 5, 3
    u, z, delta = torch.randn(Bsz, L, Di), torch.randn(Bsz, L, Di), F.softplus(torch.randn(Bsz, L, Di))
    A, D, Bm, Cm = -torch.rand(Di, N) * 3, torch.randn(Di), torch.randn(Bsz, L, N), torch.randn(Bsz, L, N)
    y_full, _ = ops.selective_scan(u, delta, A, Bm, Cm, D, z)
    _, state = ops.selective_scan(u[:, :4], delta[:, :4], A, Bm[:, :4], Cm[:, :4], D, z[:, :4])
    for t in (4, 5):
        y = ops.selective_state_update(state, u[:, t], delta[:, t], A, Bm[:, t], Cm[:, t], D, z[:, t])
        torch.testing.assert_close(y, y_full[:, t], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("length,chunk,groups", [(1, 8, 1), (11, 4, 2), (16, 8, 4), (23, 256, 2)])
def test_ssd_chunk_scan_matches_recurrence(length, chunk, groups):
    torch.manual_seed(length + chunk)
    Bsz, Hh, P, N = 2, 4, 3, 5
    x = torch.randn(Bsz, length, Hh, P)
    dt = F.softplus(torch.randn(Bsz, length, Hh))
    A, D = -torch.rand(Hh) * 4, torch.randn(Hh)
    Bm, Cm = torch.randn(Bsz, length, groups, N), torch.randn(Bsz, length, groups, N)
    y, h = ops.ssd_chunk_scan(x, dt, A, Bm, Cm, D, chunk)
    y_ref, h_ref = _naive_mamba2(x, dt, A, Bm, Cm, D)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(h, h_ref, rtol=1e-4, atol=1e-4)


def test_ssd_chunk_length_changes_only_the_rounding():
    """What lets the model's torch path cut prompts into chunks of ops.TORCH_SSD_CHUNK tokens, whatever its own
    chunk_size: a 300-token prompt in chunks of 256 and of the cap, 3 of them ragged."""
    torch.manual_seed(6)
    Bsz, L, Hh, P, N, G = 2, 300, 4, 8, 16, 2
    x, dt = torch.randn(Bsz, L, Hh, P), F.softplus(torch.randn(Bsz, L, Hh)) * 0.2
    A, D = -torch.rand(Hh) * 4, torch.randn(Hh)
    Bm, Cm = torch.randn(Bsz, L, G, N), torch.randn(Bsz, L, G, N)
    y_model, h_model = ops.ssd_chunk_scan(x, dt, A, Bm, Cm, D, 256)
    y_capped, h_capped = ops.ssd_chunk_scan(x, dt, A, Bm, Cm, D, ops.TORCH_SSD_CHUNK)
    torch.testing.assert_close(y_capped, y_model, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h_capped, h_model, rtol=1e-5, atol=1e-5)


def test_ssd_state_update_continues_the_scan():
    torch.manual_seed(4)
    Bsz, L, Hh, P, N, G = 2, 7, 4, 3, 5, 2
    x, dt = torch.randn(Bsz, L, Hh, P), F.softplus(torch.randn(Bsz, L, Hh))
    A, D = -torch.rand(Hh) * 4, torch.randn(Hh)
    Bm, Cm = torch.randn(Bsz, L, G, N), torch.randn(Bsz, L, G, N)
    y_full, _ = ops.ssd_chunk_scan(x, dt, A, Bm, Cm, D, 4)
    _, state = ops.ssd_chunk_scan(x[:, :5], dt[:, :5], A, Bm[:, :5], Cm[:, :5], D, 4)
    for t in (5, 6):
        y = ops.ssd_state_update(state, x[:, t], dt[:, t], A, Bm[:, t], Cm[:, t], D)
        torch.testing.assert_close(y, y_full[:, t], rtol=1e-4, atol=1e-4)


def test_norms_match_hf():
    from transformers.models.mamba2.modeling_mamba2 import Mamba2RMSNorm, MambaRMSNormGated

    from mambapipe.evaluate.hf_reference import hf_norms_groups

    torch.manual_seed(5)
    x, z = torch.randn(2, 3, 12), torch.randn(2, 3, 12)
    # releases before grouped norms (5.17 among them) norm all 12 columns at once: one group of 12 there
    grouped = hf_norms_groups()
    group = 4 if grouped else 12
    gated = MambaRMSNormGated(12, eps=1e-5, **({"group_size": group} if grouped else {}))
    plain = Mamba2RMSNorm(12, eps=1e-5)
    with torch.no_grad():
        gated.weight.uniform_(0.5, 1.5)
        plain.weight.uniform_(0.5, 1.5)
        torch.testing.assert_close(ops.gated_rms_norm(x, z, gated.weight, group, 1e-5), gated(x, z))
        torch.testing.assert_close(ops.rms_norm(x, plain.weight, 1e-5), plain(x))


@pytest.mark.parametrize("rows", [ops.CPU_HALF_PRODUCT_ROWS, 37])
def test_cpu_half_products_are_fp32_sums_rounded_once(rows):
    """Many-row float16 products on the CPU: exactly the fp32 product of the operands, rounded once (torch's own
    float16 kernel sums in fp32 too, in another order, so some elements differ from it by an ulp)."""
    gen = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*shape, generator=gen).half() for shape in ((rows, 192), (96, 192), (96,)))
    expected = F.linear(x.float(), w.float(), b.float()).half()
    assert torch.equal(ops.linear(x, w, b), expected)
    assert torch.equal(ops.linear(x[None], w), F.linear(x.float(), w.float()).half()[None])  # (B, L, K) input
    one_row = x[:1]
    assert torch.equal(ops.linear(one_row, w, b), F.linear(one_row, w, b))  # few rows: torch's fp16 kernel
    assert torch.equal(ops.linear(x.float(), w.float()), F.linear(x.float(), w.float()))


def test_cpu_half_conv_is_the_fp32_conv_rounded_once():
    """(torch's float16 conv differs from this at ~1e-4 of the elements: 12 of these 153600.)"""
    gen = torch.Generator().manual_seed(1)
    x, weight, bias = (torch.randn(*shape, generator=gen) for shape in ((2, 256, 300), (256, 4), (256,)))
    y16, _ = ops.causal_conv1d(x.half(), weight.half(), bias.half(), torch.tensor([300, 17]))
    padded = F.pad(x.half().float(), (3, 0))
    conv = F.conv1d(padded, weight.half().float().unsqueeze(1), bias.half().float(), groups=256)
    assert torch.equal(y16, F.silu(conv.half()))
