"""Triton twins of the hot torch kernels in `engine/ops.py`, used on CUDA when Triton imports.

Each kernel module keeps a plain-torch reference beside it (or names the `ops` function it mirrors), and
`tests/engine/test_kernels_*.py` compare the two on fresh random inputs, on the CPU under
`TRITON_INTERPRET=1` in CI and on the GPU in `benchmarks/gpu_bench.py`.

Which path runs is a load option of the engine (`load_engine(..., kernels="auto"|"torch")`), never an
environment variable, and the evaluate step records the path that ran in metrics.json.
"""

from __future__ import annotations

import importlib.util
from typing import Optional

import torch

# Looked up, not imported: importing triton here would fix its interpret mode before a test can set
# TRITON_INTERPRET=1. The kernel modules import it when the fused path first runs.
HAVE_TRITON = importlib.util.find_spec("triton") is not None
# auto: the Triton kernels wherever they can run (CUDA, Triton importable), torch ops elsewhere;
# torch: the plain torch ops everywhere (the benchmarks' baseline and a debugging aid).
KERNEL_CHOICES = ("auto", "torch")


def kernels_problem(kernels: str) -> Optional[str]:
    """Why `kernels` is not a valid choice (None when it is)."""
    if kernels not in KERNEL_CHOICES:
        return f"kernels={kernels!r} is not one of {list(KERNEL_CHOICES)}"
    return None


def enabled(t: torch.Tensor, kernels: str = "auto") -> bool:
    """Whether the Triton path runs for tensors like `t` under the `kernels` choice."""
    return kernels == "auto" and HAVE_TRITON and t.is_cuda


def fuses_conv_ssm(model) -> bool:
    """Whether the fused Mamba2 decode of `model` runs conv + SSM in one kernel (kernels/mamba2_step.py):
    only when the engine was built with build.fused_conv_ssm=true (opt-in until measured on a GPU: it passes
    the interpreter tests and compiles for sm_90, but no device time was left to time it; GPU_NOTES.md, v3),
    and only where each head group's x rows line up with its own B/C state rows."""
    group = model.spec.intermediate_size // model.spec.n_groups
    return (model.fuse_conv_ssm and model.spec.is_mamba2
            and model.d_inner // group == model.bc_size // model.spec.state_size)
