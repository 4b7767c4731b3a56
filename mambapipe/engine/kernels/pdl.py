"""Programmatic dependent launch (PDL) for the decode-step and prefill kernels, on Hopper and newer GPUs.

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
The prefill's Triton kernels (norms, conv, the SSD's five, Mamba1's dt_proj and scan) launch with PDL too:
there each kernel's inputs are its predecessors' outputs, so they allow the next launch and wait first thing,
and only the launch latency between two kernels overlaps. Mamba1's dt_proj kernel allows the next launch at its
end instead (kernels/prefill.py): the scan after it, launched early, made a mamba-130m prefill 40 % slower.
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
# Weights up to this size are pulled into L2 whole (each program its own rows) before the wait; larger ones
# are not prefetched. Measured at batch 1 on the H200 (GPU_NOTES.md v7, device calls 10-12 of 2026-11-29):
# prefetching helps where a layer's weights fit in L2 (the 130m models: 0.417 -> 0.370 ms a step) and hurts
# the big Mamba2 models in every variant tried (whole slices, 8-32 KB prefixes, the first 1-4 K tiles of each
# row: mamba2-2.7b 2.17 -> 2.28-2.70 ms, Codestral 4.21 -> 4.54-5.60 ms). Not profiled; the likely reason is
# that each of their kernels streams tens of MB, so early requests compete with the kernel still running or
# are evicted before use, while a 130m layer's few MB stay in L2.
PREFETCH_MAX_BYTES = 16 * 2**20


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
def allow_next_then_wait(PDL: tl.constexpr):
    """First thing in a kernel all of whose inputs (weights aside) are earlier kernels' outputs, as in the
    prefill: only the next kernel's launch latency overlaps this one (a ~1 µs gap between graphed kernels)."""
    allow_next(PDL)
    wait_previous(PDL)


@triton.jit
def prefetch_l2(ptrs):
    """Ask L2 for the 128-byte lines holding `ptrs` (a tensor of valid addresses; duplicates are harmless).
    A hint: nothing waits for it, later loads find the lines there."""
    tl.inline_asm_elementwise("prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32,
                              is_pure=False, pack=1)


def prefetch_lines_per_row(weight_bytes: int, row_bytes: int) -> int:
    """The 128-byte lines of each weight row to prefetch, as a power of two (tl.arange needs one): the whole
    row for a weight within PREFETCH_MAX_BYTES, else 0 (none)."""
    if weight_bytes > PREFETCH_MAX_BYTES:
        return 0
    return triton.next_power_of_2(triton.cdiv(row_bytes, L2_LINE))
