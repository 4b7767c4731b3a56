"""The generators' peak-memory figure (`GenerationOutput.peak_memory_mb`): how it is read, where it starts,
and what it means.

Here rather than in mambapipe/evaluate, which uses it, because the native engine reads it too and the engine
does not depend on the evaluate tasks.

The high-water mark, left alone, covers the whole process: on the CPU the peak resident set since start (so
the bandwidth probe's 512 MiB, or the engine's peak before the HF reference ran, showed in every row), on
CUDA torch's peak allocation since start (so a large scenario showed in every later one). Each evaluate task
therefore resets it before what it measures: a benchmark scenario, or one generator's summarize run.
"""

from __future__ import annotations

import resource
from pathlib import Path

CLEAR_REFS = Path("/proc/self/clear_refs")
CUDA_MEANING = "peak GPU memory of each run, as the backend reports it"
CPU_MEANING = "the process's peak RSS during each run (libraries and weights included)"
CPU_LIFETIME_MEANING = "the process's peak RSS since it started (this system cannot reset it)"


def peak_memory_mb(device: str) -> float:
    """The high-water mark on `device` ("cpu", "cuda" or "cuda:N") in MiB: torch's peak allocation on CUDA,
    else the process's peak resident set."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated(device) / 2**20  # that device's, whichever one is current
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def reset_peak_memory(device: str) -> bool:
    """Start a new high-water mark for `peak_memory_mb` on `device`; False where it cannot."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        # Linux >= 4.0: "5" sets the peak resident set (VmHWM, which getrusage's ru_maxrss reads) to the current one.
        CLEAR_REFS.write_text("5")
    except OSError:  # not Linux, or a sandbox without it
        return False
    return True


def peak_memory_meaning(device: str, resettable: bool) -> str:
    """What peak_memory_mb measures on `device`, for metrics.json and the report: per run where `resettable`
    (reset_peak_memory worked on it), else on the CPU the process's lifetime peak."""
    if device.startswith("cuda"):
        return CUDA_MEANING
    return CPU_MEANING if resettable else CPU_LIFETIME_MEANING
