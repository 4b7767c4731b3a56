"""Approximate SiLU and log for the fused kernels' half-precision data, where Triton's exact forms cost
more instructions than the kernel's memory traffic allows; and bf16 widened to fp32 in fewer instructions
than Triton's conversion (`widen`).

Compiled for sm_90, `x * tl.sigmoid(x)` is about ten instructions an element (a correctly rounded division
after the exp2, with their range fix-ups), and `tl.log` a libdevice polynomial of about twenty; the prefill
conv and Mamba1's softplus pass were instruction-bound on the H200 because of them (GPU_NOTES.md v11: ncu,
61-67 % of issue slots busy, DRAM 26-34 %). Here SiLU is x / (1 + 2^(-x log2 e)) on `ex2.approx` and
`rcp.approx` (relative errors about 2^-22 and one ulp) and log one `lg2.approx` (absolute error about 2^-22).
Only where HALF (the kernel's data is fp16 or bf16, so its results are rounded far more coarsely anyway) and
the kernel is compiled: fp32 engines keep the exact forms and so their tight match with HF transformers, and
under TRITON_INTERPRET=1 (CI on the CPU, which has no PTX) the exact forms run.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

# Read at import, like Triton itself reads it: set TRITON_INTERPRET=1 before the kernels are imported.
COMPILED = tl.constexpr(os.environ.get("TRITON_INTERPRET") != "1")
LN2 = tl.constexpr(0.6931471805599453)
LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _approx(x, INSTRUCTION: tl.constexpr):
    """One PTX special-function instruction on each fp32 element."""
    return tl.inline_asm_elementwise(INSTRUCTION + " $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def silu(x, HALF: tl.constexpr):
    """x * sigmoid(x) for fp32 x."""
    if COMPILED and HALF:  # x -> -inf: 2^(+inf) = inf, 1 / inf = 0
        y = x * _approx(1.0 + _approx(x * -LOG2E, "ex2.approx.ftz.f32"), "rcp.approx.ftz.f32")
    else:
        y = x * tl.sigmoid(x)
    return y


@triton.jit
def log(x, HALF: tl.constexpr):
    """The natural log of fp32 x > 0."""
    if COMPILED and HALF:
        y = _approx(x, "lg2.approx.f32") * LN2
    else:
        y = tl.log(x)
    return y


@triton.jit
def widen(x):
    """fp16, bf16 or fp32 x in fp32, exactly. A bf16 value is its fp32's upper half: one byte permute an element
    (PRMT, on the integer pipe), where Triton's conversion takes 1.5 instructions an element on sm_90 (the upper
    half of a loaded pair extracted, then shifted) and made bf16's batch-1 in_proj 4 % slower than fp16's
    (GPU_NOTES.md v38). fp16 keeps Triton's conversion, one instruction an element."""
    if COMPILED and x.dtype == tl.bfloat16:
        y = tl.inline_asm_elementwise("{ .reg .b16 zero; mov.b16 zero, 0; mov.b32 $0, {zero, $1}; }", "=r,h", [x],
                                      dtype=tl.float32, is_pure=True, pack=1)
    else:
        y = x.to(tl.float32)
    return y


@triton.jit
def widen_rounded(x, dtype: tl.constexpr):
    """x rounded to the half dtype (nothing to do where x is in it already), in fp32: `widen` of x.to(dtype)."""
    if x.dtype != dtype:
        x = x.to(dtype)
    return widen(x)
