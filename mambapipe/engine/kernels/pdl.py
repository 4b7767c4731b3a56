"""Programmatic dependent launch (PDL) for the decode-step kernels, on Hopper and newer GPUs.

A batch-1 decode step is 80-260 short kernels in a row (GPU_NOTES.md v6). Launched plainly, each kernel starts
only once the previous one has finished, and then spends its first microseconds fetching weights that never
depended on that kernel. With PDL (`launch_pdl`), a kernel's programs may start as soon as every program of
the previous kernel has called `allow_next` (each kernel calls it first thing). Until `wait_previous`
returns, a kernel reads only what no earlier kernel of the same step writes:
- its weights, pulled into L2 with `prefetch_l2` (or into registers);
- the slice of the recurrent state that only it updates: within a decode step each layer's conv state and SSM
  state are read and written by one kernel, and every step begins with a kernel launched without PDL (the
  torch embedding lookup), which starts only after all earlier work, the previous step included, is done.
Everything a previous kernel produced (the residual stream, projection outputs) is read after the wait, which
returns once the previous kernel has finished and its writes are visible. A kernel launched with PDL must
always wait before such reads, even when its predecessor is not a PDL kernel.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

# Module switch: `benchmarks/gpu_bench.py --no-pdl` turns PDL off to measure what it buys.
ENABLED = True
L2_LINE = 128  # bytes


@functools.cache
def _device_supports(index: int) -> bool:
    has_gdc = hasattr(tl.extra, "cuda") and hasattr(tl.extra.cuda, "gdc_wait")
    return has_gdc and torch.cuda.get_device_capability(index)[0] >= 9


def active(t: torch.Tensor) -> bool:
    """Whether kernels working on `t` launch with PDL: compiled (not interpreted) on an sm_90+ GPU."""
    if not (ENABLED and t.is_cuda) or os.environ.get("TRITON_INTERPRET") == "1":
        return False
    return _device_supports(t.device.index if t.device.index is not None else torch.cuda.current_device())


def launch_options(t: torch.Tensor) -> dict[str, bool]:
    """Launch keywords for a kernel on `t`'s device; pass `PDL=bool(options)` to the kernel with them."""
    return {"launch_pdl": True} if active(t) else {}


@triton.jit
def allow_next(PDL: tl.constexpr):
    """Let the next kernel's programs launch (they wait before reading this kernel's results)."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def wait_previous(PDL: tl.constexpr):
    """Block until the previous kernel has finished and its writes are visible."""
    if PDL:
        tl.extra.cuda.gdc_wait()


@triton.jit
def prefetch_l2(base, n_bytes, LINES: tl.constexpr):
    """Ask L2 for the bytes [base, base + n_bytes), one 128-byte line per element (LINES >= the lines needed;
    lines past the range re-request the first). A hint: nothing waits for it, later loads find the lines."""
    offsets = tl.arange(0, LINES) * 128  # (LINES,) bytes; 128 = L2_LINE
    lines = base.to(tl.pointer_type(tl.int8)) + tl.where(offsets < n_bytes, offsets, 0)
    tl.inline_asm_elementwise("prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;", "=r,l", [lines], dtype=tl.int32,
                              is_pure=False, pack=1)


def prefetch_lines(n_bytes: int) -> int:
    """The LINES constexpr of `prefetch_l2` for a range of n_bytes: a power of two (tl.arange needs one)."""
    return triton.next_power_of_2(max(1, triton.cdiv(n_bytes, L2_LINE)))
