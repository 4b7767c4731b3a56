"""The one peak-memory readout the native engine and the HF reference share."""

from __future__ import annotations

import pytest
import torch

from mambapipe.peak_memory import peak_memory_mb, reset_peak_memory


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:1"])
def test_any_cuda_device_reads_torchs_peak_allocation(monkeypatch, device):
    """An indexed device (a tensor-parallel rank's cuda:N) is CUDA too, not the CPU's resident set."""
    asked = []
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: asked.append(device) or 3 * 2**20)
    assert peak_memory_mb(device) == 3.0 and asked == [device]  # that device's peak, not the current device's


def test_cpu_sees_a_new_peak_after_a_reset():
    if not reset_peak_memory("cpu"):
        pytest.skip("this system cannot reset the peak resident set")
    before = peak_memory_mb("cpu")
    block = b"\x01" * (256 * 2**20)  # written, so resident
    assert peak_memory_mb("cpu") >= before + 200
    del block
