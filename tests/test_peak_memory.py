"""The one peak-memory readout the native engine and the HF reference share."""

from __future__ import annotations

import resource

import pytest
import torch

from mambapipe.peak_memory import peak_memory_mb


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:1"])
def test_any_cuda_device_reads_torchs_peak_allocation(monkeypatch, device):
    """An indexed device (a tensor-parallel rank's cuda:N) is CUDA too, not the CPU's resident set."""
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *args: 3 * 2**20)
    assert peak_memory_mb(device) == 3.0


def test_cpu_reads_the_process_peak_resident_set():
    assert peak_memory_mb("cpu") == pytest.approx(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rel=0.01)
