"""The native engine on a CUDA device agrees with itself on the CPU, and its prefill graphs with its eager
prefill (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch
from engine_support import MAMBA1, MAMBA2, build_from_hf, hf_model

from mambapipe.engine import cuda_graphs
from mambapipe.engine.api import load_engine
from mambapipe.models import ModelSpec

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
PROMPTS = [[5, 17, 3, 88, 41, 9, 60, 2, 2], [12], [70, 2, 33, 8]]


@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
@pytest.mark.parametrize("dtype,rel", [("float32", 1e-4), ("bfloat16", 1e-1)])
def test_cuda_matches_cpu(arch, dtype, rel, tmp_path):
    spec = ModelSpec(**(MAMBA1 if arch == "mamba1" else MAMBA2))
    engine = build_from_hf(hf_model(spec), spec, tmp_path, dtype=dtype)
    cpu, gpu = load_engine(engine, "cpu"), load_engine(engine, "cuda")
    lengths = torch.tensor([len(p) for p in PROMPTS])
    tokens = torch.zeros(len(PROMPTS), int(lengths.max()), dtype=torch.long)
    for row, p in enumerate(PROMPTS):
        tokens[row, : len(p)] = torch.tensor(p)
    slots = torch.arange(len(PROMPTS))
    ref = cpu.model.prefill(tokens, lengths, cpu.state, slots)
    out = gpu.model.prefill(tokens.cuda(), lengths.cuda(), gpu.state, slots.cuda()).cpu()
    assert (out - ref).abs().max() <= rel * ref.abs().max()
    if dtype == "float32":
        assert gpu.generate(PROMPTS, 12).output_ids == cpu.generate(PROMPTS, 12).output_ids


@pytest.mark.parametrize("arch, shape", [("mamba1", {"conv_kernel": 3}), ("mamba2", {"state_size": 12})])
def test_a_shape_the_fused_kernels_cannot_run_falls_back_to_the_torch_ops(arch, shape, tmp_path, caplog):
    spec = ModelSpec(**(MAMBA1 if arch == "mamba1" else MAMBA2) | shape)
    engine = build_from_hf(hf_model(spec), spec, tmp_path)
    gpu, cpu = load_engine(engine, "cuda"), load_engine(engine, "cpu")
    assert gpu.runtime_path["kernels"] == "torch" and "the engine runs the torch ops" in caplog.text
    assert gpu.generate(PROMPTS, 12).output_ids == cpu.generate(PROMPTS, 12).output_ids


def test_decode_graph_capture_leaves_the_blas_choice_as_it_was(tmp_path):
    """Capturing the decode graphs switches to cuda_graphs.DECODE_BLAS and back: the process's choice stays."""
    spec = ModelSpec(**MAMBA1)
    engine = build_from_hf(hf_model(spec), spec, tmp_path)
    before = torch.backends.cuda.preferred_blas_library()
    with cuda_graphs.preferred_blas("cublaslt"):
        assert torch.backends.cuda.preferred_blas_library() == torch._C._BlasBackend.Cublaslt
    assert torch.backends.cuda.preferred_blas_library() == before
    generator = load_engine(engine, "cuda")  # captures a decode graph per batch bucket
    assert generator._graphs is not None
    assert torch.backends.cuda.preferred_blas_library() == before


# ---- prefill graphs (engine/cuda_graphs.py: GraphedPrefill) ------------------------------------------------

@pytest.fixture(scope="module", params=["mamba1", "mamba2"])
def graphed_and_eager(request, tmp_path_factory):
    """Two fp32 generators on one tiny engine: prefill graphs on (the default) and off (cuda_graphs=False)."""
    spec = ModelSpec(**(MAMBA1 if request.param == "mamba1" else MAMBA2))
    engine = build_from_hf(hf_model(spec), spec, tmp_path_factory.mktemp(request.param), "float32",
                           max_batch_size=4, max_input_len=64)
    return load_engine(engine, "cuda"), load_engine(engine, "cuda", cuda_graphs=False)


def _assert_graphed_prefill_matches(graphed, eager, prompts, slots):
    """A graph replay and an eager prefill of the same prompts give the same logits and stored states."""
    logits = graphed._prefill_graphs.run(prompts, slots)
    assert logits is not None, "this batch should have been graphed"
    ref = eager._prefill(prompts, slots)  # (B, V), unpadded
    assert (logits - ref).abs().max() <= 1e-4 * ref.abs().max()
    for got, want in ((graphed.state.conv, eager.state.conv), (graphed.state.ssm, eager.state.ssm)):
        got, want = got[:, slots].float(), want[:, slots].float()
        assert (got - want).abs().max() <= 1e-4 * want.abs().max()


def test_graphed_prefill_matches_eager(graphed_and_eager):
    graphed, eager = graphed_and_eager
    assert eager._prefill_graphs is None and graphed._prefill_graphs is not None
    _assert_graphed_prefill_matches(graphed, eager, PROMPTS, [2, 0, 3])  # 9, 1, 4 tokens: bucket 16
    assert (3, 16) in graphed._prefill_graphs.graphs
    assert graphed.generate(PROMPTS, 12).output_ids == eager.generate(PROMPTS, 12).output_ids


def test_generate_prefills_through_a_graph(graphed_and_eager):
    graphed, eager = graphed_and_eager
    prompts = [p + [11] * 20 for p in PROMPTS[:2]]  # 29 and 21 tokens: key (2, 32), which only this test uses
    assert (2, 32) not in graphed._prefill_graphs.graphs
    assert graphed.generate(prompts, 12).output_ids == eager.generate(prompts, 12).output_ids
    assert (2, 32) in graphed._prefill_graphs.graphs  # captured by the generator's admission


def test_two_batches_replay_one_graph(graphed_and_eager):
    graphed, eager = graphed_and_eager
    other = [[3] * 16, [40, 41, 42], [7, 1, 9, 64, 5, 5, 20, 11, 90, 2, 8]]  # 16, 3, 11 tokens: bucket 16 too
    before = set(graphed._prefill_graphs.graphs)
    for prompts, slots in ((other, [0, 1, 2]), (PROMPTS, [1, 3, 0]), (other, [3, 2, 1])):
        _assert_graphed_prefill_matches(graphed, eager, prompts, slots)
    assert set(graphed._prefill_graphs.graphs) == before | {(3, 16)}  # one (3, 16) graph served all three


def test_capture_mid_run_leaves_live_slots_alone(graphed_and_eager):
    graphed, eager = graphed_and_eager
    live = [[9, 8, 7, 6, 5], [33]]  # two sequences in slots 0 and 1, then a new batch joins
    graphed._prefill_graphs.run(live, [0, 1])
    eager._prefill(live, [0, 1])
    conv, ssm = graphed.state.conv[:, :2].clone(), graphed.state.ssm[:, :2].clone()
    new = [list(range(1, 41)), [4, 4, 4]]  # 40 tokens: a (2, 64) graph, captured now
    assert (2, 64) not in graphed._prefill_graphs.graphs
    _assert_graphed_prefill_matches(graphed, eager, new, [2, 3])
    assert torch.equal(graphed.state.conv[:, :2], conv) and torch.equal(graphed.state.ssm[:, :2], ssm)


def test_batches_past_the_budget_or_the_graph_cap_run_eagerly(graphed_and_eager, monkeypatch):
    graphed, eager = graphed_and_eager
    prefill_graphs = graphed._prefill_graphs
    long = [[5] * 40, [6] * 3, [7] * 9]  # bucket 64: key (3, 64), 192 tokens
    monkeypatch.setattr(prefill_graphs, "token_budget", 3 * 64 - 1)
    assert prefill_graphs.run(long, [0, 1, 2]) is None
    monkeypatch.setattr(prefill_graphs, "token_budget", 3 * 64)
    monkeypatch.setattr(prefill_graphs, "max_graphs", len(prefill_graphs.graphs))
    assert prefill_graphs.run(long, [0, 1, 2]) is None
    assert (3, 64) not in prefill_graphs.graphs
    assert graphed.generate(long, 6).output_ids == eager.generate(long, 6).output_ids  # the eager fallback
    assert (3, 64) not in prefill_graphs.graphs
