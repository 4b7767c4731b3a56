"""The prefill graphs' prompt-length buckets (engine/cuda_graphs.py), and that right-padding a batch out to its
bucket changes neither the logits nor the stored conv/SSM states, on the tiny fp32 models: on the torch path,
and on the fused kernels that the graphs capture (interpreted on the CPU, so Mamba2 only: the interpreted
Mamba1 scan costs seconds a prefill; tests/engine/test_engine_cuda.py runs both compiled on a GPU). Last,
`GraphedPrefill`'s host side (keys, static buffers, budget, cap, the generator's fallback) with the CUDA capture
stood in for by a rerun of the prefill into the same output tensor.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
from engine_support import MAMBA1, MAMBA2, build_from_hf, hf_model  # noqa: E402

from mambapipe.engine import cuda_graphs  # noqa: E402
from mambapipe.engine.api import load_engine  # noqa: E402
from mambapipe.engine.cuda_graphs import GraphedPrefill, length_bucket, maybe_graphed_prefill, pad_prompts  # noqa: E402
from mambapipe.engine.state import InferenceState  # noqa: E402
from mambapipe.models import ModelSpec  # noqa: E402

MAX_INPUT_LEN = 64
# 11 tokens (more than one Mamba2 chunk of 8), 1 and 2 (shorter than the conv's K-1 = 3), 5; slots out of order
PROMPTS = [[5, 17, 3, 88, 41, 9, 60, 2, 2, 14, 30], [12], [70, 2], [33, 8, 19, 4, 61]]
SLOTS = [3, 0, 2, 1]


@pytest.mark.parametrize("length,max_input_len,bucket", [
    (1, 64, 16), (16, 64, 16), (17, 64, 32), (32, 64, 32), (33, 64, 64), (64, 64, 64),
    (100, 1000, 128), (513, 1000, 1000), (1000, 1000, 1000), (3, 8, 8), (2048, 2048, 2048)])
def test_length_bucket(length, max_input_len, bucket):
    assert length_bucket(length, max_input_len) == bucket


@pytest.mark.parametrize("length", [0, 65])
def test_length_bucket_rejects_lengths_outside_the_engine(length):
    with pytest.raises(ValueError, match="max_input_len=64"):
        length_bucket(length, 64)


def test_pad_prompts_right_pads_with_zero():
    tokens = pad_prompts([[5, 6, 7], [9]], 4)
    assert tokens.dtype == torch.long
    assert tokens.tolist() == [[5, 6, 7, 0], [9, 0, 0, 0]]


@pytest.fixture(scope="module", params=["mamba1", "mamba2"])
def cpu_engine(request, tmp_path_factory):
    spec = ModelSpec(**(MAMBA1 if request.param == "mamba1" else MAMBA2))
    engine = build_from_hf(hf_model(spec), spec, tmp_path_factory.mktemp(request.param), "float32",
                           max_batch_size=len(PROMPTS), max_input_len=MAX_INPUT_LEN)
    return load_engine(engine, "cpu")


def _prefill(model, width: int, pad_token: int = 0, fused: bool = False):
    """Logits (B, V) and the state after prefilling PROMPTS right-padded with `pad_token` to `width`."""
    lengths = torch.tensor([len(p) for p in PROMPTS])  # (B,)
    tokens = pad_prompts(PROMPTS, width)  # (B, width)
    tokens[torch.arange(width) >= lengths[:, None]] = pad_token
    state = InferenceState.allocate(model.spec, 1, len(PROMPTS), model.dtype, "cpu")
    if fused:
        from mambapipe.engine.kernels.prefill import fused_prefill

        with torch.inference_mode():
            return fused_prefill(model, tokens, lengths, state, torch.tensor(SLOTS)), state
    return model.prefill(tokens, lengths, state, torch.tensor(SLOTS)), state


def _assert_same_prefill(padded, unpadded):
    (logits, state), (ref_logits, ref_state) = padded, unpadded
    # fp32, the same math; only the GEMM blocking and the SSD's chunking of the longer rows differ
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state.conv, ref_state.conv, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state.ssm, ref_state.ssm, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("width,pad_token", [
    (length_bucket(11, MAX_INPUT_LEN), 0), (MAX_INPUT_LEN, 0), (MAX_INPUT_LEN, 77)])
def test_padding_to_a_bucket_keeps_logits_and_states(cpu_engine, width, pad_token):
    model = cpu_engine.model
    _assert_same_prefill(_prefill(model, width, pad_token), _prefill(model, max(map(len, PROMPTS))))


def _rel(actual, expected) -> float:
    return float((actual - expected).norm() / expected.norm())


def test_padding_to_a_bucket_keeps_the_fused_prefill(cpu_engine):
    """The fused prefill of the padded batch against the torch prefill of the unpadded one (one interpreted
    prefill, ~4 s: the torch path's padding is checked exactly above, and the two paths agree to ~4e-7)."""
    model = cpu_engine.model
    if not model.spec.is_mamba2:
        pytest.skip("the interpreted Mamba1 scan is slow; the GPU tests cover it compiled")
    if torch.cuda.is_available():
        pytest.skip("Triton compiles for the GPU here, not for these CPU tensors; test_engine_cuda.py covers it")
    width = length_bucket(11, MAX_INPUT_LEN)  # 16: two SSD chunks, the second all padding past row 0's end
    (logits, state), (ref_logits, ref_state) = _prefill(model, width, 77, fused=True), _prefill(model, 11)
    # measured: relative errors 3.5e-7 (logits), 1.8e-7 (conv), 3.4e-7 (ssm)
    assert _rel(logits, ref_logits) < 1e-5
    assert _rel(state.conv, ref_state.conv) < 1e-5
    assert _rel(state.ssm, ref_state.ssm) < 1e-5


def test_no_prefill_graphs_off_cuda(cpu_engine):
    assert maybe_graphed_prefill(cpu_engine.model, cpu_engine.state, MAX_INPUT_LEN) is None
    assert cpu_engine._prefill_graphs is None  # the generator prefills eagerly on the CPU


@pytest.fixture
def rerun_graphs(monkeypatch):
    """On the CPU, a 'capture' runs the prefill once and a 'replay' reruns it into the same logits tensor."""
    def capture(self, pool):
        self.logits = self._run()
        rerun = torch.inference_mode()(lambda: self.logits.copy_(self._run()))
        self.graph = type("Rerun", (), {"replay": staticmethod(rerun)})()

    monkeypatch.setattr(cuda_graphs._PrefillGraph, "capture", capture)
    monkeypatch.setattr(cuda_graphs.torch.cuda, "graph_pool_handle", lambda: None)


def test_graphed_prefill_bookkeeping(cpu_engine, rerun_graphs):
    model, state = cpu_engine.model, cpu_engine.state
    graphs = GraphedPrefill(model, state, MAX_INPUT_LEN)
    eager = _prefill(model, 11)[0]
    out = graphs.run(PROMPTS, SLOTS)
    assert set(graphs.graphs) == {(4, 16)} and graphs.graphs[(4, 16)].tokens.shape == (4, 16)
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    shuffled = [PROMPTS[i] for i in (2, 0, 3, 1)]  # same key: the static buffers take the new batch
    assert graphs.run(shuffled, SLOTS) is out and set(graphs.graphs) == {(4, 16)}
    torch.testing.assert_close(out, eager[[2, 0, 3, 1]], rtol=1e-5, atol=1e-5)
    graphs.token_budget = 2 * 16 - 1
    assert graphs.run(PROMPTS[:2], SLOTS[:2]) is None  # (2, 16): over the budget
    graphs.token_budget, graphs.max_graphs = 4 * 64, 1
    assert graphs.run(PROMPTS[:2], SLOTS[:2]) is None and set(graphs.graphs) == {(4, 16)}  # past the cap


def test_gpu_bound_batches_padded_by_their_bucket_run_eagerly(cpu_engine, rerun_graphs, monkeypatch):
    """Past EAGER_MIN_WORK (prompt tokens x layer weights), a batch whose bucket pads it by more than
    EAGER_MIN_PADDING is not graphed; one that fills its bucket, or does less work, is."""
    graphs = GraphedPrefill(cpu_engine.model, cpu_engine.state, MAX_INPUT_LEN)
    monkeypatch.setattr(cuda_graphs, "EAGER_MIN_WORK", 4 * 11 * graphs.weights_per_token)  # PROMPTS' work exactly
    assert graphs.run(PROMPTS, SLOTS) is None and not graphs.graphs  # 11 tokens padded to 16
    full = [[7] * 16] + PROMPTS[1:]  # 16 tokens: the bucket is not padding
    assert graphs.run(full, SLOTS) is not None and set(graphs.graphs) == {(4, 16)}
    assert graphs.run(PROMPTS[:2], SLOTS[:2]) is not None  # half the work: graphed, though padded
    assert graphs.eager_is_faster((4, 16), 15) is False  # 15 -> 16 is within EAGER_MIN_PADDING


def test_generator_prefills_through_graphs_and_falls_back(cpu_engine, rerun_graphs):
    expected = cpu_engine.generate(PROMPTS, 6).output_ids
    cpu_engine._prefill_graphs = GraphedPrefill(cpu_engine.model, cpu_engine.state, MAX_INPUT_LEN)
    try:
        assert cpu_engine.generate(PROMPTS, 6).output_ids == expected
        assert set(cpu_engine._prefill_graphs.graphs) == {(4, 16)}
        cpu_engine._prefill_graphs.max_graphs = 1  # (2, 16) is not graphed: the generator prefills eagerly
        assert cpu_engine.generate(PROMPTS[:2], 6).output_ids == expected[:2]
        assert set(cpu_engine._prefill_graphs.graphs) == {(4, 16)}
    finally:
        cpu_engine._prefill_graphs = None
