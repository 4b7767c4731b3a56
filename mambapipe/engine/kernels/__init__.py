"""Triton twins of the hot torch kernels in `engine/ops.py`, used on CUDA when Triton imports.

Each kernel module keeps a plain-torch reference beside it (or names the `ops` function it mirrors), and
`tests/engine/test_kernels_*.py` compare the two on fresh random inputs, on the CPU under
`TRITON_INTERPRET=1` in CI and on the GPU in `benchmarks/gpu_bench.py`.

Which path runs is a load option of the engine (`load_engine(..., kernels="auto"|"torch")`), never an
environment variable, and the evaluate step records the path that ran in metrics.json.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Optional

import torch

from mambapipe.models import ModelSpec

# Looked up, not imported: importing triton here would fix its interpret mode before a test can set
# TRITON_INTERPRET=1. The kernel modules import it when the fused path first runs.
HAVE_TRITON = importlib.util.find_spec("triton") is not None
# auto: the Triton kernels wherever they can run (CUDA, Triton importable), torch ops elsewhere;
# torch: the plain torch ops everywhere (the benchmarks' baseline and a debugging aid).
KERNEL_CHOICES = ("auto", "torch")
# The fused conv keeps its taps in registers as named values, one per column: d_conv of every model we serve.
CONV_WIDTH = 4


def kernels_problem(kernels: str) -> Optional[str]:
    """Why `kernels` is not a valid choice (None when it is)."""
    if kernels not in KERNEL_CHOICES:
        return f"kernels={kernels!r} is not one of {list(KERNEL_CHOICES)}"
    return None


def spec_problem(spec: ModelSpec) -> Optional[str]:
    """Why the fused kernels cannot compute a model of this shape (None when they can); the engine then runs the
    torch ops, which compute any shape the converter accepts."""
    if spec.conv_kernel != CONV_WIDTH:
        return f"conv_kernel {spec.conv_kernel} (they unroll a conv of width {CONV_WIDTH})"
    if spec.state_size & (spec.state_size - 1):
        return f"state_size {spec.state_size} (Triton ranges over states must be powers of 2)"
    return None


def enabled(t: torch.Tensor, kernels: str = "auto") -> bool:
    """Whether the Triton path runs for tensors like `t` under the `kernels` choice."""
    return kernels == "auto" and HAVE_TRITON and t.is_cuda


@functools.cache
def multiprocessors(device: torch.device) -> int:
    """SMs of a CUDA device, which size the launch rules' grids; 1 elsewhere (the interpreter runs programs one at
    a time)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


@functools.cache
def capability(device: torch.device) -> tuple[int, int]:
    """A CUDA device's compute capability (major, minor), looked up once: kernels that exist for one architecture
    ask it every call."""
    return torch.cuda.get_device_capability(device)


def time_segments(length: int, segments: int, chunk: int) -> tuple[int, int]:
    """(tokens a segment, segments) for a Mamba1 scan of `length` tokens cut into up to `segments` time segments
    of whole `chunk`-token chunks, every segment holding a token."""
    per_segment = (length + segments - 1) // segments
    seg_len = (per_segment + chunk - 1) // chunk * chunk
    return seg_len, (length + seg_len - 1) // seg_len
