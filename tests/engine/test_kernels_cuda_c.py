"""The NVRTC plumbing of the CUDA C kernels (kernels/cuda_c.py): a compile that fails leaves one warning naming
what runs instead and no kernels, for both kernel files; anywhere, with NVRTC faked to fail.
"""

from __future__ import annotations

import logging
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernel modules import triton
pytest.importorskip("triton", reason="the kernel modules need Triton (a test dependency)")
from mambapipe.engine.kernels import cuda_c, scan_cuda, ssd_cuda  # noqa: E402

FAILED_COMPILES = [
    (scan_cuda._kernels, (False, True, 1), "scan_cuda.cu did not compile (libnvrtc not found); the Triton scan runs"),
    (ssd_cuda._kernel, (False, 256), "ssd_cuda.cu did not compile (libnvrtc not found); the Triton chunk scan runs"),
]


@pytest.mark.parametrize("compiled,key,warning", FAILED_COMPILES)
def test_a_failed_compile_leaves_the_work_to_triton(compiled, key, warning, monkeypatch, caplog):
    def no_nvrtc(*args, **kwargs):
        raise RuntimeError("libnvrtc not found")

    monkeypatch.setattr(torch.cuda, "_compile_kernel", no_nvrtc, raising=False)
    compiled.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=cuda_c.__name__):
            assert compiled(*key) is None
    finally:
        compiled.cache_clear()
    assert warning in caplog.text
