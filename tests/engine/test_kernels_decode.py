"""The whole fused decode step (kernels/decode.py) against the model's torch decode on tiny engines,
with the state in fp32 and in the model dtype; under TRITON_INTERPRET=1 on a machine without CUDA."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton", reason="the fused kernels need Triton (a test dependency)")
from engine_support import MAMBA1, MAMBA2, build_from_hf, hf_model  # noqa: E402

from mambapipe.engine.api import load_engine  # noqa: E402
from mambapipe.engine.kernels import decode  # noqa: E402
from mambapipe.engine.kernels.decode import fused_decode  # noqa: E402
from mambapipe.engine.model import MambaModel  # noqa: E402
from mambapipe.engine.state import InferenceState  # noqa: E402
from mambapipe.models import ModelSpec  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module", params=["mamba1", "mamba2"])
def model(request, tmp_path_factory):
    spec = ModelSpec(**(MAMBA1 if request.param == "mamba1" else MAMBA2))
    engine = build_from_hf(hf_model(spec), spec, tmp_path_factory.mktemp(request.param), max_batch_size=3)
    return load_engine(engine, DEVICE).model


# small batches take the matrix-vector kernels (kernels/gemv.py), larger ones cuBLAS GEMMs
@pytest.mark.parametrize("gemv_max_batch", [8, 0])
@pytest.mark.parametrize("ssm_dtype,tol", [(torch.float32, 1e-4), (torch.float16, 2e-2)])
def test_fused_decode_matches_torch_decode(model, ssm_dtype, tol, gemv_max_batch, monkeypatch):
    monkeypatch.setattr(decode, "GEMV_MAX_BATCH", gemv_max_batch)
    reference = MambaModel(model.spec, model.glob, model.layers, model.comm, kernel_choice="torch")  # even on CUDA
    fused = MambaModel(model.spec, model.glob, model.layers, model.comm)
    torch.manual_seed(0)
    batch, length = 3, 5
    tokens = torch.randint(1, 90, (batch, length), device=DEVICE)
    lengths, slots = torch.tensor([5, 3, 4], device=DEVICE), torch.arange(batch, device=DEVICE)
    ref_state = InferenceState.allocate(model.spec, 1, batch, model.dtype, DEVICE)
    state = InferenceState.allocate(model.spec, 1, batch, model.dtype, DEVICE, ssm_dtype=ssm_dtype)
    reference.prefill(tokens, lengths, ref_state, slots)
    reference.prefill(tokens, lengths, state, slots)
    step = torch.randint(1, 90, (batch,), device=DEVICE)
    for _ in range(3):  # the updated states must feed the next step identically
        ref = reference.decode(step, ref_state, 0)
        out = fused_decode(fused, step, state, 0)
        err = float((out - ref).norm() / ref.norm())
        assert torch.isfinite(out).all() and err < tol, f"relative logits error {err:.2e}"
        step = ref.argmax(-1)
