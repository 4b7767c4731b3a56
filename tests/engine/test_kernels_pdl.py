"""When the decode kernels launch with programmatic dependent launch (kernels/pdl.py): only compiled, on an
sm_90+ GPU, with the module switch on. The launches themselves are tested on the GPU (test_kernels_decode.py)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="the fused kernels need Triton (a test dependency)")
from mambapipe.engine.kernels import pdl  # noqa: E402


def test_no_pdl_off_the_gpu():
    assert pdl.launch_options(torch.zeros(2)) == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pdl_follows_the_switch_and_the_interpreter(monkeypatch):
    t = torch.zeros(2, device="cuda")
    supported = torch.cuda.get_device_capability()[0] >= 9
    assert pdl.launch_options(t) == ({"launch_pdl": True} if supported else {})
    monkeypatch.setattr(pdl, "ENABLED", False)
    assert pdl.launch_options(t) == {}
    monkeypatch.setattr(pdl, "ENABLED", True)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert pdl.launch_options(t) == {}


@pytest.mark.parametrize("weight_bytes,row_bytes,lines", [
    (3352 * 768 * 2, 768 * 2, 16),  # mamba2-130m in_proj, fp16: 12 lines a row, rounded up
    (768 * 1536 * 2, 1536 * 2, 32),
    (50288 * 768 * 2, 768 * 2, 0),  # its lm_head: 77 MB, past the cap
    (16 * 2**20, 100, 1),  # at the cap
    (16 * 2**20 + 1, 100, 0),
])
def test_prefetch_whole_rows_of_small_weights_only(weight_bytes, row_bytes, lines):
    assert pdl.prefetch_lines_per_row(weight_bytes, row_bytes) == lines
