"""The Mamba2 prefill's chunk scan as CUDA C (`ssd_cuda.cu`) on Hopper's warpgroup MMA, compiled at run time by
NVRTC through torch for sm_90a, for half-precision prompts of whole chunks: the last of ssd_triton.py's five
kernels, with the same contract. A layer's whole SSD at 2048 tokens (GPU_NOTES.md v31, H200, us, with the Triton
chunk scan / v30's mma.sync form of this kernel / this one): Codestral 127.9-128.1 / 115.7-116.2 / 102.4-102.7,
mamba2-2.7b 82.9-83.1 / 78.3-78.8 / 69.8-69.9, mamba2-130m 41.2-41.6 / 38.6-39.1 / 35.9-36.1.

Its arithmetic is the Triton kernel's but for one rounding: the column weights below the diagonal tile,
exp(cum_ref - cum_s) dt_s, are rounded to the model dtype before they multiply C.Bᵀ (one packed multiply a pair),
where Triton rounds only the product; y stays as close to the fp32 twin as the Triton kernel's.

`ssd_triton.ssd_chunk_scan` takes this path where `usable` says so, the Triton kernel elsewhere: fp32 models, head
dims other than 64 or d_state other than 128, a last chunk cut short, chunks other than 64, 128 or 256 tokens,
unaligned rows, GPUs other than compute capability 9.0 (the H100/H200 class), torch builds without NVRTC, and
under TRITON_INTERPRET=1, so CI on the CPU never reaches it; its tests run on the GPU.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import torch
from torch import Tensor

from mambapipe.engine.kernels import capability, cuda_c, multiprocessors

ENABLED = True  # off: the Triton chunk scan everywhere (A/B in benchmarks/gpu_step_sweep.py)
HEAD_DIM, STATES = 64, 128  # the kernel's fixed P and N
CHUNKS = (64, 128, 256)  # chunk lengths it compiles for: whole 64-token tiles, a warp per 16 rows (<= 1024 threads)


def takes(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether prompts of this model dtype on this device run here (given the shapes `usable` checks): wgmma
    exists on compute capability 9.0 only."""
    return ENABLED and cuda_c.takes_half(dtype, device) and capability(device) == (9, 0)


def usable(x: Tensor, C: Tensor, chunk: int) -> bool:
    """Whether this kernel runs the chunk scan of x (Bt, L, Hh, P) with C (Bt, L, G, N) in `chunk`-token chunks."""
    length = x.shape[1]
    return (takes(x.dtype, x.device) and C.dtype == x.dtype and x.shape[-1] == HEAD_DIM and C.shape[-1] == STATES
            and chunk in CHUNKS and length % chunk == 0 and all(cuda_c.aligned(t) for t in (x, C))
            and _kernel(x.dtype == torch.bfloat16, chunk) is not None)


def shared_bytes(chunk: int) -> int:
    """The kernel's `Shared` struct and the 1024 bytes it may need to start on a 1024-byte boundary: C.Bᵀ's rows on
    and below the diagonal tiles (row tile t reaching column 64 (t + 1), padded by 8), then C's padded (chunk, 128)
    staging rows or two heads' inputs, each from a 1024-byte boundary (the state (64, 128) and x (chunk, 64) as
    unpadded rows, cum and dt over the chunk in fp32, the tiles' column weights in the model dtype)."""
    tiles = chunk // 64
    cb = 2 * sum(64 * (64 * (t + 1) + 8) for t in range(tiles))
    head = _round_up(2 * (HEAD_DIM * STATES + chunk * HEAD_DIM) + 4 * chunk * 2 + 2 * chunk * tiles, 1024)
    return _round_up(cb, 1024) + max(2 * chunk * (STATES + 8), 2 * head) + 1024


def _round_up(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


def heads_per_block(blocks: int, per_group: int, slots: int) -> int:
    """Heads of one group a block runs in turn, for `blocks` (rows x chunks x groups) of `per_group` heads each:
    the fewest that fit every block in one wave of `slots` blocks (one an SM), else the whole group."""
    return next((n for n in range(1, per_group + 1) if per_group % n == 0 and blocks * per_group // n <= slots),
                per_group)


@functools.cache
def _kernel(bf16: bool, chunk: int) -> Optional[Callable]:
    """The chunk scan for this dtype and chunk length, compiled once per process; None where NVRTC fails."""
    kernels = cuda_c.compile_kernels("ssd_cuda.cu", ("chunk_scan",), dict(HALF_BF16=int(bf16), CHUNK=chunk),
                                     fallback="the Triton chunk scan", shared_bytes=shared_bytes(chunk), arch="90a")
    return None if kernels is None else kernels[0]


def chunk_scan(x: Tensor, dt: Tensor, C: Tensor, D: Tensor, cum: Tensor, cb: Tensor, carried: Tensor,
               y: Tensor) -> None:
    """y (Bt, L, Hh, P) from x, the step sizes dt (Bt, L, Hh) fp32, C (Bt, L, G, N), D (Hh,) fp32, the chunk
    cumsums cum (Bt, Hh, c, T), C.Bᵀ cb (Bt, c, G, T, T) and the states entering each chunk carried
    (Bt, c, Hh, P, N), as `ssd_triton._chunk_scan` takes them (all but x, dt and C contiguous)."""
    batch, length, heads, _ = x.shape
    n_chunks, chunk = cum.shape[2:]
    groups = C.shape[2]
    per_block = heads_per_block(batch * n_chunks * groups, heads // groups, multiprocessors(x.device))
    _kernel(x.dtype == torch.bfloat16, chunk)(
        grid=(batch * n_chunks, heads // per_block, 1), block=(2 * chunk, 1, 1), shared_mem=shared_bytes(chunk),
        args=[x, dt, C, D, cum, cb, carried, y, length, heads, groups, n_chunks, per_block, x.stride(0),
              x.stride(1), x.stride(2), dt.stride(0), dt.stride(1), dt.stride(2), C.stride(0), C.stride(1),
              C.stride(2)])
