"""The CUDA C Mamba1 scan (kernels/scan_cuda.py) against `ops.selective_scan` on fresh random inputs: fp16 and
bf16 prompts, fp32 and fp16 step sizes, one pass and time segments (a ragged last one), lengths that are not a
multiple of its chunk, two channel blocks, B and C as column slices of one projection, a padded row whose final
state must be the state at its length, and final states stored into slots in fp16. NVRTC compiles it on a GPU
only, so these run there (the Triton twins' tests cover the CPU); what a failed compile does: test_kernels_cuda_c.py.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernel modules import triton
pytest.importorskip("triton", reason="the scan module needs Triton (a test dependency)")
from mambapipe.engine import ops  # noqa: E402
from mambapipe.engine.kernels import scan, scan_cuda  # noqa: E402


def needs_gpu(test):
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(test))


D_INNER, N = 64, 16  # two channel blocks
TOLERANCE = {torch.float16: 5e-3, torch.bfloat16: 2e-2}  # y is rounded to the prompt's dtype; states are fp32


def _inputs(batch: int, length: int, dtype: torch.dtype, step_dtype: torch.dtype, seed: int):
    """u, delta, A, B, C, D, z as the prefill passes them (B and C are column slices of x_proj's output)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).cuda()

    u, z = rand(batch, length, D_INNER).to(dtype), rand(batch, length, D_INNER).to(dtype)
    delta = F.softplus(rand(batch, length, D_INNER) - 1.0).to(step_dtype)
    x_proj = rand(batch, length, 8 + 2 * N).to(dtype)  # (B, L, R + 2N): dt rank 8, then B, then C
    A = -torch.exp(rand(D_INNER, N, scale=0.5)) * 2  # fp32, both slow and fast decays
    return u, delta, A, x_proj[..., 8:8 + N], x_proj[..., 8 + N:], rand(D_INNER), z


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("step_dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("batch,length,segments", [(1, 1, 1), (2, 77, 1), (1, 300, 3), (3, 200, 8)])
def test_cuda_scan_matches_torch_scan(dtype, step_dtype, batch, length, segments):
    u, delta, A, B, C, D, z = _inputs(batch, length, dtype, step_dtype, seed=length + batch)
    y = torch.empty_like(u)
    state = torch.empty(batch, D_INNER, N, device="cuda")
    assert scan_cuda.usable(u, delta, A, B, C, D, z, state, None)
    scan_cuda.selective_scan(u, delta, A, B, C, D, z, y, state, None, segments)
    y_ref, state_ref = ops.selective_scan(u, delta, A, B, C, D, z)
    assert _rel(y, y_ref) < TOLERANCE[dtype]
    assert _rel(state, state_ref) < 1e-4


@needs_gpu
def test_padded_row_keeps_the_state_at_its_length():
    u, delta, A, B, C, D, z = _inputs(2, 130, torch.float16, torch.float32, seed=5)
    delta[1, 21:] = 0  # row 1 is 21 tokens, right-padded (the prefill zeroes delta there)
    y = torch.empty_like(u)
    state = torch.empty(2, D_INNER, N, device="cuda")
    scan_cuda.selective_scan(u, delta, A, B, C, D, z, y, state, None, segments=3)
    _, state_at_length = ops.selective_scan(*(t[1:, :21] for t in (u, delta)), A, B[1:, :21], C[1:, :21], D,
                                            z[1:, :21])
    assert _rel(state[1:], state_at_length) < 1e-4


@needs_gpu
def test_states_go_into_their_slots_and_scan_dispatches_here():
    u, delta, A, B, C, D, z = _inputs(2, 90, torch.bfloat16, torch.float16, seed=7)
    y, state = scan.selective_scan(u, delta, A, B, C, D, z)  # half inputs that `usable` accepts: this kernel
    y_cuda = torch.empty_like(u)
    state_cuda = torch.empty_like(state)
    scan_cuda.selective_scan(u, delta, A, B, C, D, z, y_cuda, state_cuda, None, scan.launch_for(2, D_INNER, 90,
                                                                                                  u.device)[1])
    assert torch.equal(y, y_cuda) and torch.equal(state, state_cuda)
    states = torch.zeros(4, D_INNER, N, dtype=torch.float16, device="cuda")
    slots = torch.tensor([3, 1], device="cuda")
    y_into, none = scan.selective_scan(u, delta, A, B, C, D, z, into=(states, slots))
    assert none is None and torch.equal(y_into, y)
    assert torch.equal(states[slots], state.half()) and not states[[0, 2]].any()


@needs_gpu
def test_unaligned_or_full_precision_inputs_take_the_triton_kernels():
    u, delta, A, B, C, D, z = _inputs(1, 40, torch.float16, torch.float32, seed=9)
    state = torch.empty(1, D_INNER, N, device="cuda")
    assert not scan_cuda.usable(u.float(), delta, A, B.float(), C.float(), D, z.float(), state, None)
    assert not scan_cuda.usable(u[..., 4:36], delta[..., 4:36], A[4:36], B, C, D[4:36], z[..., 4:36], state, None)
    assert not scan_cuda.usable(u, delta, A, B, C, D, z, state, torch.tensor([0], dtype=torch.int32, device="cuda"))
