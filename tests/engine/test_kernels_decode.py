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
from mambapipe.engine.kernels import decode, pdl  # noqa: E402
from mambapipe.engine.kernels.decode import fused_decode  # noqa: E402
from mambapipe.engine.model import MambaModel  # noqa: E402
from mambapipe.engine.state import InferenceState  # noqa: E402
from mambapipe.models import ModelSpec  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


ARCHS = ["mamba1", "mamba2"]
# FUSED_GATE_MAX_GROUPS is read only by Mamba2's batch-1 step (the gated norm inside out_proj or its own kernel):
# Mamba1 has no gated norm, so it runs one value of it, with the same kernels as any other would run
GATE_CASES = [("mamba1", 1), ("mamba2", 1), ("mamba2", 8)]


@pytest.fixture(scope="module")
def model(request, tmp_path_factory):
    spec = ModelSpec(**(MAMBA1 if request.param == "mamba1" else MAMBA2))
    engine = build_from_hf(hf_model(spec), spec, tmp_path_factory.mktemp(request.param), max_batch_size=3)
    return load_engine(engine, DEVICE).model


# small batches take the matrix-vector kernels (kernels/gemv.py), larger ones cuBLAS GEMMs; the tiny Mamba2
# has 4 norm groups: its gate runs inside out_proj (max groups 8) or as its own kernel (max groups 1)
@pytest.mark.parametrize("model,gemv_max_batch,fused_gate_max_groups",
                         [(arch, 8, gate) for arch, gate in GATE_CASES] + [(arch, 0, 1) for arch in ARCHS],
                         indirect=["model"])
@pytest.mark.parametrize("ssm_dtype,tol", [(torch.float32, 1e-4), (torch.float16, 2e-2)])
def test_fused_decode_matches_torch_decode(model, ssm_dtype, tol, gemv_max_batch, fused_gate_max_groups,
                                           monkeypatch):
    monkeypatch.setattr(decode, "GEMV_MAX_BATCH", gemv_max_batch)
    monkeypatch.setattr(decode, "FUSED_GATE_MAX_GROUPS", fused_gate_max_groups)
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


@pytest.mark.parametrize("model,fused_gate_max_groups", GATE_CASES, indirect=["model"])
def test_the_norms_read_the_rounded_stream_with_the_same_results(model, fused_gate_max_groups, monkeypatch):
    """Batch-1 decode with the norms reading the residual stream's copy in the model dtype (decode.ROUNDED_INPUT)
    or the fp32 stream: the same logits and states, step after step, bit for bit."""
    monkeypatch.setattr(decode, "GEMV_MAX_BATCH", 1)
    monkeypatch.setattr(decode, "FUSED_GATE_MAX_GROUPS", fused_gate_max_groups)
    fused = MambaModel(model.spec, model.glob, model.layers, model.comm)
    tokens, lengths = torch.tensor([[5, 17, 3, 88]], device=DEVICE), torch.tensor([4], device=DEVICE)
    slots = torch.zeros(1, dtype=torch.long, device=DEVICE)
    runs = []
    for rounded in (False, True):
        monkeypatch.setattr(decode, "ROUNDED_INPUT", rounded)
        state = InferenceState.allocate(model.spec, 1, 1, model.dtype, DEVICE, ssm_dtype=model.dtype)
        fused.prefill(tokens, lengths, state, slots)
        step, logits = tokens[:, -1], []
        for _ in range(3):
            logits.append(fused_decode(fused, step, state, 0))
            step = logits[-1].argmax(-1)
        runs.append((torch.stack(logits), state.conv.clone(), state.ssm.clone()))
    assert all(torch.equal(a, b) for a, b in zip(*runs))


@pytest.mark.skipif(DEVICE != "cuda", reason="programmatic dependent launch runs only compiled, on a GPU")
@pytest.mark.parametrize("model", ARCHS, indirect=True)
@pytest.mark.parametrize("gemv_max_batch", [8, 0])
def test_pdl_changes_timing_not_results(model, gemv_max_batch, monkeypatch):
    """The decode kernels read their weights and own state before waiting for the kernel before them
    (kernels/pdl.py); an early read of anything an earlier kernel writes would show up as a difference."""
    if not pdl.active(torch.zeros(1, device=DEVICE)):
        pytest.skip("this GPU has no programmatic dependent launch (needs sm_90+)")
    monkeypatch.setattr(decode, "GEMV_MAX_BATCH", gemv_max_batch)
    fused = MambaModel(model.spec, model.glob, model.layers, model.comm)
    tokens = torch.randint(1, 90, (3, 5), device=DEVICE)
    lengths, slots = torch.tensor([5, 3, 4], device=DEVICE), torch.arange(3, device=DEVICE)
    runs = {}
    for enabled in (False, True):
        monkeypatch.setattr(pdl, "ENABLED", enabled)
        state = InferenceState.allocate(model.spec, 1, 3, model.dtype, DEVICE, ssm_dtype=model.dtype)
        fused.prefill(tokens, lengths, state, slots)
        step, logits = tokens[:, 0], []
        for _ in range(2):  # eagerly, then replayed from a CUDA graph (how the generator runs it)
            logits.append(fused_decode(fused, step, state, 0).clone())
            step = logits[-1].argmax(-1)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            graphed = fused_decode(fused, step, state, 0)
        for _ in range(3):
            graph.replay()
            logits.append(graphed.clone())
        runs[enabled] = (logits, state.conv.clone(), state.ssm.clone())
    for plain, early in zip(runs[False][0], runs[True][0]):
        assert torch.equal(plain, early)
    assert torch.equal(runs[False][1], runs[True][1]) and torch.equal(runs[False][2], runs[True][2])


@pytest.mark.parametrize("model,fused_gate_max_groups", GATE_CASES, indirect=["model"])
def test_split_k_out_proj_in_the_decode_step(model, fused_gate_max_groups, monkeypatch):
    """Batch-1 decode with out_proj (and Mamba1's x_proj) split over K (gemv.TILES' fifth entry) against the
    torch decode; on a GPU, replayed from a CUDA graph, it repeats the eager step bit for bit (the arrival
    counters are reset by each launch)."""
    monkeypatch.setattr(decode, "FUSED_GATE_MAX_GROUPS", fused_gate_max_groups)
    from mambapipe.engine.kernels import gemv

    gated = model.spec.is_mamba2 and model.spec.n_groups <= fused_gate_max_groups
    w = model.layers[0]
    for weight, key_gated in [(w.out_proj, gated)] + ([] if model.spec.is_mamba2 else [(w.x_proj, False)]):
        monkeypatch.setitem(gemv.TILES, gemv.tiles_key(weight, 1, key_gated), (8, 16, 4, 1, 2))
    reference = MambaModel(model.spec, model.glob, model.layers, model.comm, kernel_choice="torch")
    fused = MambaModel(model.spec, model.glob, model.layers, model.comm)
    tokens, lengths, slots = torch.randint(1, 90, (1, 4), device=DEVICE), torch.tensor([4], device=DEVICE), \
        torch.arange(1, device=DEVICE)
    states = [InferenceState.allocate(model.spec, 1, 1, model.dtype, DEVICE) for _ in range(2)]
    for state in states:
        reference.prefill(tokens, lengths, state, slots)
    step = tokens[:, -1]
    for _ in range(2):
        ref = reference.decode(step, states[0], 0)
        out = fused_decode(fused, step, states[1], 0)
        assert float((out - ref).norm() / ref.norm()) < 1e-4
        step = ref.argmax(-1)
    if DEVICE == "cuda":
        before = (states[1].conv.clone(), states[1].ssm.clone())
        eager = fused_decode(fused, step, states[1], 0).clone()
        states[1].conv.copy_(before[0]), states[1].ssm.copy_(before[1])
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            graphed = fused_decode(fused, step, states[1], 0)
        states[1].conv.copy_(before[0]), states[1].ssm.copy_(before[1])
        graph.replay()
        assert torch.equal(graphed, eager)
