"""Triton twins of the hot torch kernels in `engine/ops.py`, used on CUDA when Triton imports.

Each kernel module keeps a plain-torch reference beside it (or names the `ops` function it mirrors), and
`tests/engine/test_kernels_*.py` compare the two on fresh random inputs, on the CPU under
`TRITON_INTERPRET=1` in CI and on the GPU in `benchmarks/gpu_bench.py`.
"""

from __future__ import annotations

import importlib.util
import os

import torch

# Looked up, not imported: importing triton here would fix its interpret mode before a test can set
# TRITON_INTERPRET=1. The kernel modules import it when the fused path first runs.
HAVE_TRITON = importlib.util.find_spec("triton") is not None


def enabled(t: torch.Tensor) -> bool:
    """Whether the fused path should run for tensors like `t`: on CUDA, with Triton importable, unless
    MAMBAPIPE_KERNELS=0 asks for the plain torch path (the benchmark's baseline)."""
    return HAVE_TRITON and t.is_cuda and os.environ.get("MAMBAPIPE_KERNELS", "1") != "0"


def ssm_state_dtype(model_dtype: torch.dtype, device: str) -> torch.dtype:
    """The SSM state's dtype: the model dtype on the fused path (half the traffic of fp32, the dominant
    decode term of Mamba2 at batch), fp32 on the torch path or when MAMBAPIPE_SSM_STATE_DTYPE=float32."""
    if os.environ.get("MAMBAPIPE_SSM_STATE_DTYPE", "") == "float32":
        return torch.float32
    return model_dtype if enabled(torch.empty(0, device=device)) else torch.float32
