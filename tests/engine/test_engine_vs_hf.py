"""The native engine against HF transformers' MambaForCausalLM / Mamba2ForCausalLM on the same weights."""

from __future__ import annotations

import pytest
import torch
from engine_support import MAMBA1, MAMBA2, build_from_hf, hf_model

from mambapipe.backends.base import BuildSettings
from mambapipe.engine.api import load_engine
from mambapipe.engine.build import build_engine
from mambapipe.evaluate.hf_reference import grouped_norm_problem
from mambapipe.models import ModelSpec

SHAPES = {
    "mamba1": MAMBA1,
    "mamba1-k3-rank5": dict(mamba_version="Mamba1", hidden_size=48, num_layers=3, vocab_size=80, state_size=4,
                            conv_kernel=3, time_step_rank=5),
    "mamba2-g4": MAMBA2,
    "mamba2-g1-tied": dict(mamba_version="Mamba2", hidden_size=32, num_layers=2, vocab_size=72, state_size=8,
                           head_dim=8, n_groups=1, chunk_size=4),
}
PROMPT_LENGTHS = (13, 5, 1, 8)  # odd, unequal, one shorter than the conv window
REL_TOL_FP32 = 2e-5  # max |engine - HF| relative to max |HF| logit


def _skip_unless_hf_is_reference(spec: ModelSpec) -> None:
    problem = grouped_norm_problem(spec.n_groups) if spec.is_mamba2 else None
    if problem is not None:
        pytest.skip(problem)


@pytest.fixture(scope="module", params=list(SHAPES))
def case(request, tmp_path_factory):
    spec = ModelSpec(**SHAPES[request.param])
    _skip_unless_hf_is_reference(spec)
    model = hf_model(spec, seed=len(request.param))
    engine = build_from_hf(model, spec, tmp_path_factory.mktemp(request.param))
    return spec, model, load_engine(engine)


def _prompts(spec: ModelSpec, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, spec.vocab_size, (n,), generator=g).tolist() for n in PROMPT_LENGTHS]


def _prefill(gen, prompts, all_logits=False):
    lengths = torch.tensor([len(p) for p in prompts])
    tokens = torch.zeros(len(prompts), int(lengths.max()), dtype=torch.long)
    for row, p in enumerate(prompts):
        tokens[row, : len(p)] = torch.tensor(p)
    slots = torch.arange(len(prompts))
    return gen.model.prefill(tokens, lengths, gen.state, slots, all_logits=all_logits)


def _assert_rel_close(actual, expected, rel):
    err = (actual - expected).abs().max() / expected.abs().max()
    assert err <= rel, f"relative error {err:.2e} > {rel:.0e}"


def test_batched_unequal_prompts_match_hf_last_logits(case):
    spec, model, gen = case
    prompts = _prompts(spec)
    logits = _prefill(gen, prompts)  # (B, V), one padded batch
    with torch.no_grad():
        for row, p in enumerate(prompts):
            _assert_rel_close(logits[row], model(torch.tensor([p])).logits[0, -1], REL_TOL_FP32)


def test_all_position_logits_match_hf(case):
    spec, model, gen = case
    tokens = torch.randint(0, spec.vocab_size, (2, 11), generator=torch.Generator().manual_seed(1))
    logits = torch.stack(gen.score(tokens.tolist()))  # (B, L, V): equal lengths
    with torch.no_grad():
        _assert_rel_close(logits, model(tokens).logits, REL_TOL_FP32)


def test_greedy_generation_equals_hf_generate(case):
    spec, model, gen = case
    prompts = _prompts(spec, seed=2)
    ours = gen.generate(prompts, max_new_tokens=12).output_ids  # batched, unequal lengths
    for p, tokens in zip(prompts, ours):
        ref = model.generate(torch.tensor([p]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                             pad_token_id=0)
        assert tokens == ref[0, len(p):].tolist()


def test_prefill_then_decode_equals_full_forward(case):
    """Teacher forcing: feed the true next tokens one at a time after a short prefill."""
    spec, _, gen = case
    tokens = torch.randint(0, spec.vocab_size, (3, 10), generator=torch.Generator().manual_seed(3))
    full = _prefill(gen, tokens.tolist(), all_logits=True)  # (B, L, V)
    prompt_lengths = [4, 1, 6]
    first = _prefill(gen, [row[:n] for row, n in zip(tokens.tolist(), prompt_lengths)])
    for row, n in enumerate(prompt_lengths):
        _assert_rel_close(first[row], full[row, n - 1], 1e-5)
    for row, n in enumerate(prompt_lengths):  # decode each slot's remaining tokens in its own span
        for t in range(n, 10):
            step = gen.model.decode(tokens[row, t:t + 1], gen.state, lo=row)
            _assert_rel_close(step[0], full[row, t], 1e-5)


# Stated tolerances of the low-precision engines against the fp32 engine on the same weights:
# max |diff| relative to max |logit|, and the share of positions whose top-1 token agrees.
LOW_PRECISION = {"float16": (3e-2, 0.95), "bfloat16": (3e-1, 0.85)}


@pytest.mark.parametrize("dtype", list(LOW_PRECISION))
@pytest.mark.parametrize("shape", ["mamba1", "mamba2-g4"])
def test_half_precision_within_tolerance(shape, dtype, tmp_path):
    spec = ModelSpec(**SHAPES[shape])
    model = hf_model(spec)
    tokens = torch.randint(0, spec.vocab_size, (2, 12), generator=torch.Generator().manual_seed(4)).tolist()
    ref = _prefill(load_engine(build_from_hf(model, spec, tmp_path)), tokens, all_logits=True)
    low = _prefill(load_engine(build_from_hf(model, spec, tmp_path, dtype=dtype)), tokens, all_logits=True)
    rel, agree = LOW_PRECISION[dtype]
    _assert_rel_close(low, ref, rel)
    assert (low.argmax(-1) == ref.argmax(-1)).float().mean() >= agree


@pytest.mark.parametrize("shape", ["mamba1", "mamba2-g4"])
def test_engine_from_convert_step_checkpoint_matches_hf(shape, tmp_path):
    """The convert engineer's converter (HF save_pretrained -> TensorRT-LLM checkpoint) feeds this engine."""
    from mambapipe.checkpoint import convert  # imported, not importorskip: a broken converter must fail here
    spec = ModelSpec(**SHAPES[shape])
    _skip_unless_hf_is_reference(spec)
    model = hf_model(spec)
    model.save_pretrained(tmp_path / "hf")
    convert.convert_checkpoint(tmp_path / "hf", tmp_path / "ckpt", "float32", 1, progress=False)
    build_engine(tmp_path / "ckpt", tmp_path / "engine", BuildSettings(4, 32, 64, "cpu"), show_progress=False)
    gen = load_engine(tmp_path / "engine")
    prompts = _prompts(spec)
    logits = _prefill(gen, prompts)
    with torch.no_grad():
        for row, p in enumerate(prompts):
            _assert_rel_close(logits[row], model(torch.tensor([p])).logits[0, -1], REL_TOL_FP32)
