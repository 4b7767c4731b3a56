"""The Mamba2 prefill's chunk scan as CUDA C (`ssd_cuda.cu`), compiled at run time by NVRTC through torch, for the
half-precision prompts of whole chunks: the last of ssd_triton.py's five kernels, with the same contract and
arithmetic as `ssd_triton._chunk_scan` (y within 3e-5 of the Triton kernel's on the H200, GPU_NOTES.md v30).

Off (ENABLED = False): slower than the Triton kernel in all three block structures measured (GPU_NOTES.md v30; a
layer's whole SSD at 2048 tokens, us, Triton / this file's structure, one block per chunk and head: Codestral
127.7-128.3 / 131.4-133.6, mamba2-2.7b 82.4-82.8 / 86.9-87.2, mamba2-130m 42.0 / 40.4-40.5). Kept in the history
only: the next commit removes it.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import torch
from torch import Tensor

from mambapipe.engine.kernels import cuda_c

ENABLED = False  # on: this kernel where `usable` (A/B in benchmarks/gpu_step_sweep.py)
HEAD_DIM, STATES = 64, 128  # the kernel's fixed P and N
CHUNKS = (64, 128, 256)  # chunk lengths it compiles for: whole 64-token tiles, a warp per 16 rows (<= 1024 threads)


def takes(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether prompts of this model dtype on this device run here (given the shapes `usable` checks)."""
    return (ENABLED and device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)
            and cuda_c.compiler_available())


def usable(x: Tensor, C: Tensor, chunk: int) -> bool:
    """Whether this kernel runs the chunk scan of x (Bt, L, Hh, P) with C (Bt, L, G, N) in `chunk`-token chunks."""
    length = x.shape[1]
    return (takes(x.dtype, x.device) and C.dtype == x.dtype and x.shape[-1] == HEAD_DIM and C.shape[-1] == STATES
            and chunk in CHUNKS and length % chunk == 0 and cuda_c.aligned(x) and cuda_c.aligned(C)
            and _kernel(x.dtype == torch.bfloat16, chunk) is not None)


def shared_bytes(chunk: int) -> int:
    """The kernel's `Shared` struct: the state's and C's padded (., 128) rows, C.Bᵀ's rows on and below the
    diagonal tiles (row tile t reaching column 64 (t + 1)), and x's padded (chunk, 64) rows in the model dtype;
    cum and dt over the chunk in fp32."""
    tiles = chunk // 64
    cb = sum(64 * (64 * (t + 1) + 8) for t in range(tiles))
    return 2 * ((HEAD_DIM + chunk) * (STATES + 8) + cb + chunk * (HEAD_DIM + 8)) + 2 * 4 * chunk


@functools.cache
def _kernel(bf16: bool, chunk: int) -> Optional[Callable]:
    """The chunk scan for this dtype and chunk length, compiled once per process; None where NVRTC fails."""
    kernels = cuda_c.compile_kernels("ssd_cuda.cu", ("chunk_scan",), dict(HALF_BF16=int(bf16), CHUNK=chunk),
                                     fallback="the Triton chunk scan")
    if kernels is None:
        return None
    kernels[0].set_shared_memory_config(shared_bytes(chunk))
    return kernels[0]


def chunk_scan(x: Tensor, dt: Tensor, C: Tensor, D: Tensor, cum: Tensor, cb: Tensor, carried: Tensor,
               y: Tensor) -> None:
    """y (Bt, L, Hh, P) from x, the step sizes dt (Bt, L, Hh) fp32, C (Bt, L, G, N), D (Hh,) fp32, the chunk
    cumsums cum (Bt, Hh, c, T), C.Bᵀ cb (Bt, c, G, T, T) and the states entering each chunk carried
    (Bt, c, Hh, P, N), as `ssd_triton._chunk_scan` takes them (all but x, dt and C contiguous)."""
    batch, length, heads, _ = x.shape
    n_chunks, chunk = cum.shape[2:]
    _kernel(x.dtype == torch.bfloat16, chunk)(
        grid=(batch * n_chunks, heads, 1), block=(2 * chunk, 1, 1), shared_mem=shared_bytes(chunk),
        args=[x, dt, C, D, cum, cb, carried, y, length, heads, C.shape[2], n_chunks, x.stride(0), x.stride(1),
              x.stride(2), dt.stride(0), dt.stride(1), dt.stride(2), C.stride(0), C.stride(1), C.stride(2)])
