"""kernels/fastmath.py against torch: compiled on a GPU the half-precision forms are the approximate
instructions, SiLU within a few fp32 ulp and log within 2e-6 on fresh random inputs, and bf16's widening the
permute, exact for every bit pattern; under TRITON_INTERPRET=1 (no GPU) all are Triton's exact forms."""

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


@triton.jit
def _widen(x_ptr, out_ptr, rounded_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + i, mask=i < n, other=0.0)
    tl.store(out_ptr + i, fastmath.widen(x), mask=i < n)
    tl.store(rounded_ptr + i, fastmath.widen_rounded(x.to(tl.float32) * 3.0, x_ptr.dtype.element_ty), mask=i < n)


# the interpreter's numpy has no bf16: there both dtypes take .to(tl.float32), which fp16 also takes compiled
@pytest.mark.parametrize("dtype", [torch.float16] + ([torch.bfloat16] if DEVICE == "cuda" else []))
# the patterns include infinities and NaNs, whose x 3 and rounding numpy (the interpreter) warns about
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning",
                            "ignore:invalid value encountered in multiply:RuntimeWarning")
def test_widen_is_exact_for_every_bit_pattern(dtype):
    """Every 16-bit pattern widens to what torch's conversion gives: bit for bit (infinities, subnormals, both
    zeros), NaN for NaN (whose payloads conversions may quiet); and a value rounded to the dtype on the way, as
    the norms round the fp32 residual."""
    x = torch.arange(-(2**15), 2**15, dtype=torch.int32, device=DEVICE).to(torch.int16).view(dtype)
    out, rounded = torch.empty(len(x), device=DEVICE), torch.empty(len(x), device=DEVICE)
    _widen[(triton.cdiv(len(x), 1024),)](x, out, rounded, len(x), BLOCK=1024)
    for actual, expected in ((out, x.float()), (rounded, (x.float() * 3.0).to(dtype).float())):
        nan = expected.isnan()
        assert torch.equal(actual.isnan(), nan)
        assert torch.equal(actual[~nan].view(torch.int32), expected[~nan].view(torch.int32))
