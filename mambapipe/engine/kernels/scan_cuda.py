"""The Mamba1 prefill scan as CUDA C (`scan_cuda.cu`), compiled at run time by NVRTC through torch, for the
half-precision prompts where it beats the Triton kernels of scan.py: one layer, us, the Triton kernels / this one
(GPU_NOTES.md v29, device call 215, H200): mamba-2.8b's width, 1 row x 2048 tokens 144.6 / 124.7, 2 x 2048
282.7 / 186.2, 8 x 1024 352.5 / 305.2, 64 x 128 333.0 / 303.3; mamba-130m's, 1 x 2048 50.4 / 42.9, 8 x 1024
116.4 / 94.9, 64 x 128 105.2 / 95.4. Reading B and C as halves in `scan` (v33, device call 269) took mamba-2.8b's
shapes to 120.6 / 278.8 / 275 (from 126.5 / 305.1 / 302.4). Same arithmetic and segment split as the Triton
kernels (y and states agree with `ops.selective_scan` as theirs do).

`selective_scan` in scan.py takes this path where `usable` says so, the Triton one elsewhere: fp32 models, B and C
widened to fp32, state sizes other than 16, unaligned rows, torch builds without NVRTC (`torch.cuda._compile_kernel`,
torch 2.8 and later), and under TRITON_INTERPRET=1, so CI on the CPU never reaches it; its tests run on the GPU.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import torch
from torch import Tensor

from mambapipe.engine.kernels import cuda_c, time_segments

ENABLED = True  # off: the Triton kernels everywhere (A/B in benchmarks/gpu_step_sweep.py)
TOKENS, CHANNELS = 32, 32  # a chunk and a block (SCAN_T, SCAN_BD); 4 lanes a channel, so 128 threads a block
STATES = 16  # the kernel's states a channel (SPT x lanes)
_STATE_KINDS = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def takes(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether prompts of this model dtype on this device run here (given aligned inputs; see `usable`)."""
    return ENABLED and cuda_c.takes_half(dtype, device)


def usable(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, z: Tensor, state: Tensor,
           slots: Optional[Tensor]) -> bool:
    """Whether this kernel runs these inputs (see the module doc); scan.py's contract otherwise."""
    return (takes(u.dtype, u.device) and B.dtype == C.dtype == z.dtype == u.dtype
            and delta.dtype in (torch.float16, torch.float32) and state.dtype in _STATE_KINDS
            and A.shape[1] == STATES and A.dtype == D.dtype == torch.float32 and A.is_contiguous()
            and u.shape[-1] % CHANNELS == 0 and (slots is None or slots.dtype == torch.int64)
            and all(cuda_c.aligned(t) for t in (u, delta, B, C, z, A)) and _kernels_for(u, delta, state) is not None)


def _kernels_for(u: Tensor, delta: Tensor, state: Tensor) -> Optional[tuple[Callable, Callable]]:
    return _kernels(u.dtype == torch.bfloat16, delta.dtype == torch.float16, _STATE_KINDS[state.dtype])


@functools.cache
def _kernels(bf16: bool, half_steps: bool, state_kind: int) -> Optional[tuple[Callable, Callable]]:
    """(segment_end, scan) for these dtypes, compiled once per process for the current device; None where NVRTC
    fails: the Triton kernels run instead."""
    macros = dict(SCAN_T=TOKENS, SCAN_BD=CHANNELS, HALF_BF16=int(bf16), DT_HALF=int(half_steps),
                  STATE_KIND=state_kind)
    return cuda_c.compile_kernels("scan_cuda.cu", ("segment_end", "scan"), macros, fallback="the Triton scan")


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, z: Tensor, y: Tensor,
                   state: Tensor, slots: Optional[Tensor], segments: int) -> None:
    """y (Bt, L, Di) and the final states for inputs that `usable` accepts, in up to `segments` time segments;
    the final states go to state[slots[b]] (or state[b] where slots is None) in state's dtype."""
    batch, length, d_inner = u.shape
    segment_end, scan = _kernels_for(u, delta, state)
    seg_len, segments = time_segments(length, segments, TOKENS)
    block = (CHANNELS * STATES // 4, 1, 1)  # 4 states a thread
    if segments > 1:
        end = torch.empty(batch, segments - 1, d_inner, STATES, dtype=torch.float32, device=u.device)
        dt_sum = torch.empty(batch, segments - 1, d_inner, dtype=torch.float32, device=u.device)
        segment_end(grid=(d_inner // CHANNELS, segments - 1, batch), block=block,
                    args=[u, delta, A, B, end, dt_sum, length, d_inner, seg_len, u.stride(0), u.stride(1),
                          delta.stride(0), delta.stride(1), B.stride(0), B.stride(1)])
    else:
        end = dt_sum = A  # not read: one segment folds no earlier ones
    scan(grid=(d_inner // CHANNELS, segments, batch), block=block,
         args=[u, delta, A, B, C, D, z, y, state, slots if slots is not None else A, int(slots is not None), end,
               dt_sum, length, d_inner, seg_len, u.stride(0), u.stride(1), delta.stride(0), delta.stride(1),
               B.stride(0), B.stride(1), C.stride(0), C.stride(1), z.stride(0), z.stride(1), y.stride(0), y.stride(1),
               state.stride(0)])
