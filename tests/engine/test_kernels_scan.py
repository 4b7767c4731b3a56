"""The segment-parallel Mamba1 scan (kernels/scan.py) against its torch twin `ops.selective_scan` on fresh random
inputs: several segment sizes (one segment, segments that do not divide L, a prompt shorter than one chunk),
fp32 and fp16, a right-padded row, and a check that the carry between segments is what makes it right. Tiny
chunks, channel blocks and segments (module constants set per test) keep the Triton interpreter fast.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton", reason="the fused kernels need Triton (a test dependency)")
from mambapipe.engine import ops  # noqa: E402
from mambapipe.engine.kernels import scan  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
HALF = torch.float16  # on the CPU the interpreter (numpy) has fp16 but no bf16
DI, N = 12, 8  # 12 channels: with 8 a block, a partial last block
TOLERANCE = {torch.float32: 1e-5, HALF: 5e-3}


@pytest.fixture
def small_tiles(monkeypatch):
    """4-token chunks and 8-channel blocks; returns a function that sets the segment length and counts the
    launches of passes 1-2."""
    monkeypatch.setattr(scan, "TOKENS_PER_CHUNK", 4)
    monkeypatch.setattr(scan, "BLOCK_D", 8)
    monkeypatch.setattr(scan, "CARRY_BLOCK_D", 8)
    calls = []
    entry_states = scan._segment_entry_states
    monkeypatch.setattr(scan, "_segment_entry_states", lambda *args: calls.append(args[-1]) or entry_states(*args))

    def set_segment(tokens: int) -> list:
        monkeypatch.setattr(scan, "SEGMENT_TOKENS", tokens)
        return calls

    return set_segment


def _inputs(batch: int, length: int, dtype: torch.dtype, seed: int) -> tuple:
    torch.manual_seed(seed)
    x_dbl = torch.randn(batch, length, 2 * N, device=DEVICE).to(dtype)
    B, C = x_dbl[..., :N], x_dbl[..., N:]  # column views with a row stride of 2N, as in the model
    u, z = (torch.randn(batch, length, DI, device=DEVICE).to(dtype) for _ in range(2))
    delta = F.softplus(torch.randn(batch, length, DI, device=DEVICE) - 1)  # fp32, as prefill.dt_softplus
    A = -torch.rand(DI, N, device=DEVICE) * 2 - 0.1  # slow decays too: a state lives across segments
    return u, delta, A, B, C, torch.randn(DI, device=DEVICE), z


def _rel(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert torch.isfinite(actual).all()
    return float((actual.float() - expected.float()).norm() / expected.float().norm())


@pytest.mark.parametrize("dtype", [torch.float32, HALF], ids=["fp32", "fp16"])
@pytest.mark.parametrize("length,segment", [
    (37, 8),  # 5 segments, the last of 5 tokens ending inside a chunk
    (37, 12),  # segments of 3 chunks that do not divide L
    (32, 16),  # segments that divide L
    (9, 4),  # one chunk a segment
    (37, 64),  # one segment: the single-pass path
    (3, 4),  # shorter than one chunk
])
def test_scan_matches_torch(small_tiles, dtype, length, segment):
    launches = small_tiles(segment)
    args = _inputs(2, length, dtype, seed=length * 100 + segment)
    y, h = scan.selective_scan(*args)
    y_ref, h_ref = ops.selective_scan(*args)
    assert y.dtype == dtype and h.dtype == torch.float32
    assert _rel(y, y_ref) < TOLERANCE[dtype]
    assert _rel(h, h_ref) < TOLERANCE[dtype]
    n_seg = -(-length // segment)
    assert launches == ([n_seg] if n_seg > 1 else [])  # passes 1-2 run exactly when there are segments


@pytest.mark.parametrize("segment", [8, 64])
def test_padded_row_keeps_its_state(small_tiles, segment):
    small_tiles(segment)
    u, delta, A, B, C, D, z = _inputs(2, 37, torch.float32, seed=segment)
    delta[1, 21:] = 0  # row 1 is 21 tokens long: it ends inside segment 3 and inside a chunk
    y, h = scan.selective_scan(u, delta, A, B, C, D, z)
    y_ref, h_ref = ops.selective_scan(u, delta, A, B, C, D, z)
    assert _rel(y, y_ref) < 1e-5 and _rel(h, h_ref) < 1e-5
    _, h_short = ops.selective_scan(*(t[1:, :21] for t in (u, delta)), A, B[1:, :21], C[1:, :21], D, z[1:, :21])
    assert _rel(h[1], h_short[0]) < 1e-5  # the state at its length, untouched by the padding


def test_segments_start_from_the_carried_state(small_tiles):
    """The check above can fail: scanning each segment from a zero state (a carry that does nothing) is far from
    the reference, so a broken carry pass would not pass as rounding."""
    small_tiles(8)
    u, delta, A, B, C, D, z = _inputs(2, 37, torch.float32, seed=1)
    y, h = scan.selective_scan(u, delta, A, B, C, D, z)
    y_ref, h_ref = ops.selective_scan(u, delta, A, B, C, D, z)
    pieces = [ops.selective_scan(*(t[:, s:s + 8] for t in (u, delta)), A, B[:, s:s + 8], C[:, s:s + 8], D,
                                 z[:, s:s + 8]) for s in range(0, 37, 8)]
    y_no_carry = torch.cat([piece[0] for piece in pieces], dim=1)  # (B, L, Di)
    assert _rel(y, y_ref) < 1e-5 and _rel(h, h_ref) < 1e-5
    assert _rel(y_no_carry, y_ref) > 1e-2
    assert _rel(pieces[-1][1], h_ref) > 1e-2  # the final state too
