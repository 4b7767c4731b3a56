"""The CUDA C chunk scan (kernels/ssd_cuda.py) on fresh random inputs, inside `ssd_triton.ssd_chunk_scan` (its four
other kernels are Triton's): against the torch twin `ops.ssd_chunk_scan` and against the same call with the Triton
chunk scan, fp16 and bf16, chunks of 256, 128 and 64 tokens (four, two and one 64-row tiles), several chunks and
rows, grouped heads, x and C as strided views of one projection, one head a block and whole groups a block (the
double-buffered head loop, odd and even head counts). NVRTC compiles it on a GPU only, so these run there (the
Triton twins' tests cover the CPU); the launch rule runs anywhere, what a failed compile does is in
test_kernels_cuda_c.py.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernel modules import triton
pytest.importorskip("triton", reason="the SSD kernels need Triton (a test dependency)")
from mambapipe.engine import ops  # noqa: E402
from mambapipe.engine.kernels import ssd_cuda, ssd_triton  # noqa: E402


def needs_gpu(test):
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(test))


P, N = ssd_cuda.HEAD_DIM, ssd_cuda.STATES


def _inputs(batch: int, length: int, heads: int, groups: int, dtype: torch.dtype, seed: int):
    """x, dt, A, B, C, D as the prefill passes them: x, B and C column slices of one projection's output."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).cuda()

    xbc = rand(batch, length, heads * P + 2 * groups * N).to(dtype)
    x = xbc[..., :heads * P].unflatten(-1, (heads, P))
    B = xbc[..., heads * P:heads * P + groups * N].unflatten(-1, (groups, N))
    C = xbc[..., heads * P + groups * N:].unflatten(-1, (groups, N))
    dt = F.softplus(rand(batch, length, heads) - 3)
    A = -torch.rand(heads, generator=gen).cuda() * 6 - 0.2  # both slow and fast decays
    return x, dt, A, B, C, rand(heads)


def _rel(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert torch.isfinite(actual).all()
    return float((actual.float() - expected.float()).norm() / expected.float().norm())


def _both(args, chunk: int, monkeypatch) -> tuple:
    """(y, final state) with the CUDA chunk scan, then with the Triton one."""
    assert ssd_cuda.usable(args[0], args[4], min(chunk, args[0].shape[1]))
    cuda = ssd_triton.ssd_chunk_scan(*args, chunk)
    monkeypatch.setattr(ssd_cuda, "ENABLED", False)
    triton = ssd_triton.ssd_chunk_scan(*args, chunk)
    monkeypatch.setattr(ssd_cuda, "ENABLED", True)
    return cuda, triton


# fp16: y within 3.6e-4 of the fp32 twin as the Triton kernels' is (3.4e-4), and 1.4e-4 of theirs (the column
# weights below the diagonal are rounded to the model dtype before the multiply, one rounding more than Triton's);
# bf16 ~8x both (GPU_NOTES.md v30, device calls 229-231)
TOLERANCE = {torch.float16: (1e-3, 5e-4), torch.bfloat16: (8e-3, 4e-3)}  # against the twin, against Triton


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("batch,length,heads,groups,chunk", [
    (1, 512, 8, 2, 256),  # two chunks of four row tiles, two groups
    (2, 256, 4, 1, 128),  # chunks of two tiles, two rows
    (1, 128, 2, 1, 64),  # one-tile chunks: the diagonal tile and the carried-in term only
    (3, 256, 6, 3, 256),  # three rows, one chunk each
])
def test_cuda_chunk_scan_matches_torch_and_triton(dtype, batch, length, heads, groups, chunk, monkeypatch):
    args = _inputs(batch, length, heads, groups, dtype, seed=length + heads)
    (y, state), (y_triton, state_triton) = _both(args, chunk, monkeypatch)
    y_ref, state_ref = ops.ssd_chunk_scan(*[a.float() for a in args], chunk)
    to_ref, to_triton = TOLERANCE[dtype]
    assert y.dtype == dtype and _rel(y, y_ref) < to_ref and _rel(y, y_triton) < to_triton
    assert torch.equal(state, state_triton)  # the final state comes from the kernels before the chunk scan


@needs_gpu
@pytest.mark.parametrize("heads_per_group", [3, 4])
def test_whole_groups_a_block(heads_per_group, monkeypatch):
    """Every block runs all heads of its group in turn: the head buffers alternate, an odd count ends on either."""
    monkeypatch.setattr(ssd_cuda, "heads_per_block", lambda blocks, per_group, slots: per_group)
    args = _inputs(2, 512, 2 * heads_per_group, 2, torch.float16, seed=heads_per_group)
    (y, _), (y_triton, _) = _both(args, 256, monkeypatch)
    assert _rel(y, y_triton) < TOLERANCE[torch.float16][1]


@needs_gpu
def test_other_inputs_stay_with_triton():
    x, dt, A, B, C, D = _inputs(1, 300, 2, 1, torch.float16, seed=1)
    assert not ssd_cuda.usable(x, C, 256)  # 300 tokens: a last chunk cut short
    assert not ssd_cuda.usable(x[:, :256].float(), C[:, :256].float(), 256)
    assert not ssd_cuda.usable(x[:, :256, :, :32], C[:, :256], 256)  # head dim 32
    assert not ssd_cuda.usable(x[:, :32], C[:, :32], 32)  # a chunk shorter than a tile


def test_heads_per_block_fills_one_wave_else_takes_the_group():
    assert ssd_cuda.heads_per_block(64, 16, 132) == 8  # Codestral's 2048-token row: 128 blocks
    assert ssd_cuda.heads_per_block(8, 80, 132) == 5  # mamba2-2.7b's: 128 blocks
    assert ssd_cuda.heads_per_block(8, 24, 132) == 2  # mamba2-130m's: 96 blocks
    assert ssd_cuda.heads_per_block(512, 16, 132) == 16  # 64 rows of one chunk: more blocks than SMs anyway


@pytest.mark.parametrize("capability,runs", [((9, 0), True), ((8, 0), False), ((10, 0), False)])
def test_only_hopper_runs_the_wgmma_kernel(capability, runs, monkeypatch):
    """wgmma is sm_90a's: other GPUs keep the Triton chunk scan (anywhere, with the device's answers faked)."""
    monkeypatch.setattr(ssd_cuda.cuda_c, "takes_half", lambda dtype, device: True)
    monkeypatch.setattr(ssd_cuda, "capability", lambda device: capability)
    assert ssd_cuda.takes(torch.float16, torch.device("cuda")) is runs
