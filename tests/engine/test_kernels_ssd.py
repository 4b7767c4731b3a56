"""The Triton chunked SSD (kernels/ssd_triton.py) against its torch twin `ops.ssd_chunk_scan` on fresh random
inputs: fp32 tight, fp16 within a stated tolerance, ngroups > 1, chunk sizes that do not divide L, unequal
lengths with zero dt at padding, strided views, and tiles smaller than a chunk (every loop and causal skip).
Under TRITON_INTERPRET=1 without CUDA (small sizes), compiled on a GPU.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton", reason="the SSD kernels need Triton (a test dependency)")

from mambapipe.engine import ops  # noqa: E402
from mambapipe.engine.kernels import ssd, ssd_triton  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Half-precision operands of the tensor-core dots (decay-weighted C.Bᵀ, decayed B, the carried state) are
# rounded once each and accumulated in fp32, and C.Bᵀ, the carried state and y are stored in the half dtype.
# Measured under the interpreter (3 seeds of the shape below): relative L2 error of y 3.2e-4 to 3.8e-4 in
# fp16, of the final state 2.0e-4 to 2.2e-4; bf16 keeps 3 fewer mantissa bits (8x the rounding), so ~3e-3.
TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 2e-2}


def _inputs(batch, length, heads, groups, P, N, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen)

    x = rand(batch, length, heads, P).to(DEVICE, dtype)
    dt = F.softplus(rand(batch, length, heads) - 1).to(DEVICE)  # (B, L, Hh) fp32, as the model passes it
    A = (-torch.rand(heads, generator=gen) * 2 - 0.1).to(DEVICE)
    D = rand(heads).to(DEVICE)
    B, C = (rand(batch, length, groups, N).to(DEVICE, dtype) for _ in range(2))
    return x, dt, A, B, C, D


def _rel(actual, expected):
    assert torch.isfinite(actual).all()
    return float((actual - expected).norm() / expected.norm())


@pytest.mark.parametrize("batch,length,heads,groups,chunk", [
    (2, 37, 4, 2, 16),  # 16 does not divide 37: a short last chunk
    (1, 37, 4, 1, 64),  # chunk longer than the sequence: one chunk of 37 (not a power of 2)
    (2, 48, 6, 3, 16),  # three whole chunks, three groups of two heads: the EVEN (unmasked) kernels
    (1, 1, 2, 1, 16),  # one token
])
def test_fp32_matches_twin(batch, length, heads, groups, chunk):
    args = _inputs(batch, length, heads, groups, P=16, N=16)
    y, state = ssd_triton.ssd_chunk_scan(*args, chunk)
    y_ref, state_ref = ops.ssd_chunk_scan(*args, chunk)
    assert y.shape == y_ref.shape and state.shape == state_ref.shape and y.dtype == state.dtype == torch.float32
    assert _rel(y, y_ref) < 1e-5 and _rel(state, state_ref) < 1e-5


def test_small_tiles_cover_every_loop(monkeypatch):
    """Tiles of 16 inside a 40-token chunk: several row tiles, d_state and head-dim blocks, causal skips."""
    for name in ("BLOCK_L", "BLOCK_P", "BLOCK_N", "CHUNK_SCAN_BLOCK_N", "CHUNK_STATE_BLOCK_N"):
        monkeypatch.setattr(ssd_triton, name, 16)
    monkeypatch.setattr(ssd_triton, "CHUNK_STATE_BLOCK_L", 32)  # its own tile: a short second step in a chunk
    monkeypatch.setattr(ssd_triton, "STATE_BLOCK", 256)  # several state-passing programs a head
    args = _inputs(2, 90, 4, 2, P=32, N=48, seed=1)
    y, state = ssd_triton.ssd_chunk_scan(*args, 40)
    y_ref, state_ref = ops.ssd_chunk_scan(*args, 40)
    assert _rel(y, y_ref) < 1e-5 and _rel(state, state_ref) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
    DEVICE == "cpu", reason="Triton's interpreter (numpy) has no bf16: it returns garbage, so GPU only"))])
def test_half_within_tolerance(dtype):
    args = _inputs(2, 40, 4, 2, P=16, N=32, dtype=dtype, seed=2)
    y, state = ssd_triton.ssd_chunk_scan(*args, 16)
    y_ref, state_ref = ops.ssd_chunk_scan(*args, 16)  # the twin computes in fp32 from the same half inputs
    assert y.dtype == dtype and state.dtype == torch.float32  # y in the model dtype, as mamba_ssm's
    assert _rel(y.float(), y_ref) < TOLERANCE[dtype] and _rel(state, state_ref) < TOLERANCE[dtype]


def test_unequal_lengths_with_zero_dt_at_padding():
    """Right-padded rows (dt = 0 past each length): outputs at real positions and the final state equal a
    run on that row alone, cut to its length."""
    lengths = (45, 20, 5)
    x, dt, A, B, C, D = _inputs(3, 45, 4, 2, P=16, N=16, seed=3)
    dt = dt * (torch.arange(45, device=DEVICE)[None, :] < torch.tensor(lengths, device=DEVICE)[:, None])[..., None]
    y, state = ssd_triton.ssd_chunk_scan(x, dt, A, B, C, D, 16)
    y_ref, state_ref = ops.ssd_chunk_scan(x, dt, A, B, C, D, 16)
    assert _rel(y, y_ref) < 1e-5 and _rel(state, state_ref) < 1e-5
    for row, n in enumerate(lengths):
        x_row, dt_row, B_row, C_row = (t[row:row + 1, :n] for t in (x, dt, B, C))
        y_row, state_row = ssd_triton.ssd_chunk_scan(x_row, dt_row, A, B_row, C_row, D, 16)
        assert _rel(y[row, :n], y_row[0]) < 1e-5 and _rel(state[row], state_row[0]) < 1e-5


def test_strided_views_as_the_model_passes_them():
    """x, B and C as views into one (B, L, channels) tensor, like the model's split of the conv output."""
    batch, length, heads, groups, P, N = 2, 33, 4, 2, 16, 16
    xBC = torch.randn(batch, heads * P + 2 * groups * N, length, device=DEVICE).transpose(1, 2)  # (B, L, C)
    x, B, C = xBC.split([heads * P, groups * N, groups * N], -1)
    _, dt, A, _, _, D = _inputs(batch, length, heads, groups, P, N, seed=4)
    args = (x.unflatten(-1, (heads, P)), dt, A, B.unflatten(-1, (groups, N)), C.unflatten(-1, (groups, N)), D)
    y, state = ssd_triton.ssd_chunk_scan(*args, 16)
    y_ref, state_ref = ops.ssd_chunk_scan(*args, 16)
    assert _rel(y, y_ref) < 1e-5 and _rel(state, state_ref) < 1e-5


def test_switch_in_gpu_ssd_selects_triton(monkeypatch):
    args = _inputs(1, 20, 2, 1, P=16, N=16, seed=5)
    monkeypatch.setattr(ssd, "TRITON_SSD", True)
    calls = []
    monkeypatch.setattr(ssd_triton, "ssd_chunk_scan", lambda *a: calls.append(a) or ops.ssd_chunk_scan(*a[:7]))
    ssd.ssd_chunk_scan(*args, 16)
    assert len(calls) == 1


@pytest.mark.parametrize("triton_ssd", [True, False])
def test_final_states_stored_into_slots(triton_ssd, monkeypatch):
    """into = (states, slots): each row's final state lands in its slot, in the states' dtype (the inference
    state's layer), the other slots untouched; y as without it."""
    monkeypatch.setattr(ssd, "TRITON_SSD", triton_ssd)
    args = _inputs(2, 37, 4, 2, P=16, N=16, seed=7)
    y_ref, final = ssd.ssd_chunk_scan(*args, 16)
    states = torch.full((4, 4, 16, 16), 7.0, device=DEVICE, dtype=torch.float16)
    slots = torch.tensor([3, 1], device=DEVICE)
    y, stored = ssd.ssd_chunk_scan(*args, 16, into=(states, slots))
    assert stored is None and torch.equal(y, y_ref)
    assert torch.equal(states[slots], final.to(torch.float16))
    assert (states[[0, 2]] == 7.0).all()


@pytest.mark.parametrize("triton_ssd", [True, False])
def test_raw_dt_with_bias_equals_softplus_first(triton_ssd, monkeypatch):
    """dt_bias + lengths: the raw projection (a strided fp16 column view, as the in_proj output's dt columns)
    gives what the step sizes softplus(dt + dt_bias), zeroed past each length, give."""
    monkeypatch.setattr(ssd, "TRITON_SSD", triton_ssd)
    x, _, A, B, C, D = _inputs(2, 37, 4, 2, P=16, N=16, seed=8)
    projection = (torch.randn(2, 37, 9, device=DEVICE) * 3).to(torch.float16)  # past softplus's threshold too
    raw = projection[..., 3:7]  # (B, L, Hh) strided
    bias, lengths = torch.randn(4, device=DEVICE), torch.tensor([37, 23], device=DEVICE)
    valid = torch.arange(37, device=DEVICE)[None, :] < lengths[:, None]
    steps = F.softplus(raw.float() + bias) * valid[..., None]
    y_ref, final_ref = ssd.ssd_chunk_scan(x, steps, A, B, C, D, 16)
    y, final = ssd.ssd_chunk_scan(x, raw, A, B, C, D, 16, dt_bias=bias, lengths=lengths)
    # the kernel's softplus, log(1 + exp(x)), rounds apart from torch's (`prefill.dt_proj_softplus`'s test: 1e-5)
    assert _rel(y, y_ref) < 1e-5 and _rel(final, final_ref) < 1e-5
    assert _rel(final[1], ssd.ssd_chunk_scan(x[1:, :23], steps[1:, :23], A, B[1:, :23], C[1:, :23], D, 16)[1][0]) < 1e-5
