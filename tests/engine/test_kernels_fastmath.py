"""kernels/fastmath.py against torch on fresh random inputs: compiled on a GPU the half-precision forms are
the approximate instructions, SiLU within a few fp32 ulp and log within 2e-6; under TRITON_INTERPRET=1 (no
GPU) both forms are the exact ones."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton", reason="the fused kernels need Triton (a test dependency)")
import triton.language as tl  # noqa: E402

from mambapipe.engine.kernels import fastmath  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@triton.jit
def _silu_and_log(x_ptr, silu_ptr, log_ptr, n, HALF: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + i, mask=i < n, other=1.0)
    tl.store(silu_ptr + i, fastmath.silu(x, HALF), mask=i < n)
    tl.store(log_ptr + i, fastmath.log(tl.abs(x) + 1e-3, HALF), mask=i < n)


@pytest.mark.parametrize("half", [True, False])
def test_silu_and_log_match_torch(half):
    x = torch.randn(3000, device=DEVICE) * 6  # fp32 in, as the kernels compute
    silu, log = torch.empty_like(x), torch.empty_like(x)
    _silu_and_log[(triton.cdiv(len(x), 1024),)](x, silu, log, len(x), HALF=half, BLOCK=1024)
    approximate = half and fastmath.COMPILED
    log_tol = 2e-6 if approximate else 1e-6  # lg2.approx: about 2^-22 absolute, times ln 2
    assert torch.allclose(silu, F.silu(x), rtol=1e-5, atol=1e-7)  # ex2.approx and rcp.approx: a few ulp
    assert torch.allclose(log, torch.log(x.abs() + 1e-3), rtol=0, atol=log_tol)
