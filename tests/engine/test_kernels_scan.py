"""The Mamba1 prefill scan kernel (kernels/scan.py, every launch in `SHAPES`, in one pass or in time segments)
against `ops.selective_scan` on fresh random inputs: prompts shorter than a chunk, lengths that are not a multiple
of the chunk, a partial last channel block, B and C as column slices of one projection, a ragged last segment, and
a padded row (delta zero past its length) whose final state must be the state at its length. Under
TRITON_INTERPRET=1 on a machine without CUDA, compiled on a GPU.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton", reason="the scan kernel needs Triton (a test dependency)")
from mambapipe.engine import ops  # noqa: E402
from mambapipe.engine.kernels import scan  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
HALF = torch.float16  # on the CPU the interpreter (numpy) has fp16 but no bf16


def _shapes_to_run() -> list[str]:
    """Every launch shape's name; under the interpreter, which runs a kernel's programs one after another whatever
    the warps, one name for each distinct (tokens, channel block): narrow's and segment_end's run the same program."""
    if DEVICE == "cuda":
        return sorted(scan.SHAPES)
    name_of = {}
    for name in sorted(scan.SHAPES):
        name_of.setdefault(scan.SHAPES[name][:2], name)
    return sorted(name_of.values())


SHAPES = _shapes_to_run()
TOLERANCE = {torch.float32: 1e-5, HALF: 5e-3}
D_INNER, N = 40, 16  # 40: a partial last channel block for every shape's BLOCK_D


def _inputs(batch: int, length: int, dtype: torch.dtype, seed: int):
    """u, delta, A, B, C, D, z as the prefill passes them (B and C are column slices of x_proj's output)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(DEVICE)

    u, z = rand(batch, length, D_INNER).to(dtype), rand(batch, length, D_INNER).to(dtype)
    delta = F.softplus(rand(batch, length, D_INNER) - 1.0)  # fp32, as prefill.dt_proj_softplus returns it
    x_proj = rand(batch, length, 8 + 2 * N).to(dtype)  # (B, L, R + 2N): dt rank 8, then B, then C
    A = -torch.exp(rand(D_INNER, N, scale=0.5)) * 2  # fp32, both slow and fast decays
    D = rand(D_INNER)
    return u, delta, A, x_proj[..., 8:8 + N], x_proj[..., 8 + N:], D, z


def _rel(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert torch.isfinite(actual).all()
    return float((actual.float() - expected.float()).norm() / expected.float().norm())


@pytest.fixture(params=SHAPES)
def shape(request, monkeypatch):
    """Every launch shape on these small inputs (whichever `launch_for` picks runs it); under the interpreter,
    every distinct one (SHAPES)."""
    for name in scan.SHAPES:
        monkeypatch.setitem(scan.SHAPES, name, scan.SHAPES[request.param])
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, HALF])
@pytest.mark.parametrize("length", [5, 37])  # shorter than a chunk; two full chunks of 16 (one of 32) and a tail
def test_scan_matches_ops(shape, dtype, length):
    args = _inputs(1, length, dtype, seed=length)
    y, state = scan.selective_scan(*args)
    y_ref, state_ref = ops.selective_scan(*args)
    assert y.dtype == dtype and state.dtype == torch.float32
    assert _rel(y, y_ref) < TOLERANCE[dtype]
    assert _rel(state, state_ref) < TOLERANCE[dtype]


@pytest.mark.parametrize("shape", [(2, 64, 1), (4, 32, 2), (8, 16, 2), (32, 16, 1)])  # (T, BLOCK_D, warps)
def test_sequential_chunk_shapes(shape, monkeypatch):
    """Every chunk length the GPU sweep may pick (the per-token split/join depth changes with it)."""
    for name in scan.SHAPES:
        monkeypatch.setitem(scan.SHAPES, name, shape)
    args = _inputs(1, 37, torch.float32, seed=shape[0])
    y, state = scan.selective_scan(*args)
    y_ref, state_ref = ops.selective_scan(*args)
    assert _rel(y, y_ref) < 1e-5 and _rel(state, state_ref) < 1e-5


def test_padded_row_keeps_its_state(shape):
    """Batch 2, row 1 padded after 21 of 37 tokens (delta 0 there, as dt_proj_softplus masks it): its final state is
    the state at token 21, and every y matches the reference."""
    u, delta, A, B, C, D, z = _inputs(2, 37, torch.float32, seed=7)
    delta[1, 21:] = 0
    y, state = scan.selective_scan(u, delta, A, B, C, D, z)
    y_ref, state_ref = ops.selective_scan(u, delta, A, B, C, D, z)
    _, state_at_length = ops.selective_scan(u[1:, :21], delta[1:, :21], A, B[1:, :21], C[1:, :21], D, z[1:, :21])
    assert _rel(y, y_ref) < 1e-5
    assert _rel(state[:1], state_ref[:1]) < 1e-5
    assert _rel(state[1:], state_at_length) < 1e-5


def test_final_states_into_slots(shape):
    """With `into`, each row's final state lands in its slot of a layer's states (out of order), rounded once to
    their dtype, and the other slots are untouched; y is the same."""
    args = _inputs(2, 37, HALF, seed=11)
    y, state = scan.selective_scan(*args)
    states = torch.full((4, D_INNER, N), 7.0, dtype=HALF, device=DEVICE)
    slots = torch.tensor([3, 1], device=DEVICE)
    y_into, none = scan.selective_scan(*args, into=(states, slots))
    assert none is None and torch.equal(y_into, y)
    assert torch.equal(states[slots], state.to(HALF))
    assert (states[[0, 2]] == 7.0).all()


def test_tolerance_catches_a_lost_carry():
    """The comparisons above would fail a kernel that dropped the state between chunks: a scan restarted from
    zero at token 16 (a chunk boundary) is far outside the fp32 tolerance."""
    u, delta, A, B, C, D, z = _inputs(1, 37, torch.float32, seed=37)
    y_ref, _ = ops.selective_scan(u, delta, A, B, C, D, z)
    halves = [ops.selective_scan(*(t[:, part] for t in (u, delta)), A, *(t[:, part] for t in (B, C)), D, z[:, part])[0]
              for part in (slice(0, 16), slice(16, None))]
    assert _rel(torch.cat(halves, dim=1), y_ref) > 100 * TOLERANCE[torch.float32]


@pytest.mark.parametrize("segments", [2, 3, 4, 8])  # 101 tokens: 2x64 | 3x48 | 4x32 | 7x16, the last one ragged
def test_time_segments_match_ops(shape, segments, monkeypatch):
    """The prompt cut into time segments (each folding the ones before it) gives the one-pass scan's y and final
    state, for a padded row too (batch 2, row 1 padded after 70 tokens)."""
    monkeypatch.setattr(scan, "SEGMENT_MIN_TOKENS", 1)
    monkeypatch.setattr(scan, "MAX_SEGMENTS", segments)
    assert scan.launch_for(2, D_INNER, 101, torch.device(DEVICE)) == ("standard", segments)
    u, delta, A, B, C, D, z = _inputs(2, 101, torch.float32, seed=segments)
    delta[1, 70:] = 0
    y, state = scan.selective_scan(u, delta, A, B, C, D, z)
    y_ref, state_ref = ops.selective_scan(u, delta, A, B, C, D, z)
    assert _rel(y, y_ref) < 1e-5 and _rel(state, state_ref) < 1e-5
    y_half, state_half = scan.selective_scan(u.to(HALF), delta, A, B, C, D, z.to(HALF))
    y_half_ref, state_half_ref = ops.selective_scan(u.to(HALF), delta, A, B, C, D, z.to(HALF))
    assert _rel(y_half, y_half_ref) < TOLERANCE[HALF] and _rel(state_half, state_half_ref) < TOLERANCE[HALF]


@pytest.mark.parametrize("end_shape", [(4, 16, 2), (32, 8, 1)])  # (T, BLOCK_D, warps): shorter, longer chunks
def test_segment_end_shape_of_its_own(end_shape, monkeypatch):
    """The segment-end kernel on a launch shape other than the scan's: segments are whole chunks of both kernels
    (with 32-token chunks there, 101 tokens make 2 segments of 64, not 3 of 48), and y and the final state still
    match."""
    monkeypatch.setitem(scan.SHAPES, "segment_end", end_shape)
    monkeypatch.setattr(scan, "SEGMENT_MIN_TOKENS", 1)
    monkeypatch.setattr(scan, "MAX_SEGMENTS", 3)
    u, delta, A, B, C, D, z = _inputs(2, 101, torch.float32, seed=end_shape[0])
    delta[1, 70:] = 0
    y, state = scan.selective_scan(u, delta, A, B, C, D, z)
    y_ref, state_ref = ops.selective_scan(u, delta, A, B, C, D, z)
    assert _rel(y, y_ref) < 1e-5 and _rel(state, state_ref) < 1e-5


def test_launch_by_width_and_length(monkeypatch):
    """A long prompt over few channels is cut into time segments (GPU_NOTES.md v25: one row of mamba-130m 160 -> 50
    us a layer at 2048 tokens); other grids run in one pass, on the narrow channel blocks while they fit one wave
    of programs (v26: 4 rows of mamba-130m, v21: one short mamba-2.8b row) and on the standard ones past that
    (v26: 5 rows of mamba-130m and 2 of mamba-2.8b on); fp32 B and C only for the narrow launch. On an H200."""
    monkeypatch.setattr(scan, "multiprocessors", lambda device: 132)
    long_prompt, short_prompt, cuda = 2048, 2 * scan.SEGMENT_MIN_TOKENS - 1, torch.device("cuda")
    assert scan.launch_for(1, 5120, long_prompt, cuda) == ("standard", scan.MAX_SEGMENTS)
    assert scan.launch_for(2, 1536, 4 * scan.SEGMENT_MIN_TOKENS, cuda) == ("standard", 4)
    assert scan.launch_for(1, 5120, short_prompt, cuda) == ("narrow", 1)
    assert scan.wants_fp32_bc(1, 5120, short_prompt, cuda) and not scan.wants_fp32_bc(1, 5120, long_prompt, cuda)
    assert scan.launch_for(4, 1536, long_prompt, cuda) == ("narrow", 1)
    for batch, width in ((5, 1536), (2, 5120), (64, 1536)):
        assert scan.launch_for(batch, width, long_prompt, cuda) == ("standard", 1)
        assert not scan.wants_fp32_bc(batch, width, short_prompt, cuda)


def test_narrow_launch_bound_follows_the_sm_count(monkeypatch):
    """The narrow shape's one-wave bound is three programs an SM of the GPU at hand: 4 rows of mamba-130m (384
    narrow programs) fit an H200's 132 SMs (396), not a GPU of 108 (324)."""
    cuda = torch.device("cuda")
    for sms, expected in ((132, "narrow"), (108, "standard")):
        monkeypatch.setattr(scan, "multiprocessors", lambda device, sms=sms: sms)
        assert scan.launch_for(4, 1536, 2048, cuda) == (expected, 1)


def test_scan_reads_half_step_sizes(shape):
    """Step sizes in fp16 (as the prefill passes them where `wants_half_step_sizes`) are widened in the kernel: the
    torch scan on the same fp16 values, in fp32, gives the same result."""
    u, delta, A, B, C, D, z = _inputs(2, 37, HALF, seed=5)
    delta = delta.to(HALF)
    y, state = scan.selective_scan(u, delta, A, B, C, D, z)
    y_ref, state_ref = ops.selective_scan(u, delta.float(), A, B, C, D, z)
    assert _rel(y, y_ref) < TOLERANCE[HALF] and _rel(state, state_ref) < 1e-5


def test_half_step_sizes_where_the_grid_outgrows_three_programs_an_sm(monkeypatch):
    """fp16 step sizes (four standard programs an SM) where the scan's grid has more than three an SM hold (GPU_NOTES.md
    v27: one mamba-2.8b row in 8 segments, 1280 programs; 8 x 1024 of it; 64 x 128 of mamba-130m), fp32 ones within
    that (one mamba-130m row in 8 segments, 384; 8 x 1024 of it, 384; 2 mamba-2.8b rows, 320; any narrow launch)."""
    monkeypatch.setattr(scan, "multiprocessors", lambda device: 132)
    cuda = torch.device("cuda")
    for batch, width, length in ((1, 5120, 2048), (8, 5120, 1024), (64, 1536, 128)):
        assert scan.wants_half_step_sizes(batch, width, length, cuda)
    for batch, width, length in ((1, 1536, 2048), (8, 1536, 1024), (2, 5120, 2048), (1, 5120, 384)):
        assert not scan.wants_half_step_sizes(batch, width, length, cuda)


def test_scan_reads_fp32_bc(shape):
    """B and C widened to fp32 (as the prefill passes them to the narrow launch) give the fp16 ones' result."""
    u, delta, A, B, C, D, z = _inputs(1, 37, HALF, seed=3)
    y, state = scan.selective_scan(u, delta, A, B.float(), C.float(), D, z)
    y_half, state_half = scan.selective_scan(u, delta, A, B, C, D, z)
    y_ref, state_ref = ops.selective_scan(u, delta, A, B, C, D, z)
    assert _rel(y, y_ref) < TOLERANCE[HALF] and _rel(state, state_ref) < TOLERANCE[HALF]
    # the same fp32 arithmetic after the load: fp16 B and C are widened exactly, in the kernel or before it
    torch.testing.assert_close(state, state_half, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(y, y_half, rtol=1e-3, atol=1e-3)
