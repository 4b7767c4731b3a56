"""Generation semantics: slots joining/leaving a running batch, limits, EOS, sampling."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from engine_support import MAMBA1, MAMBA2, build_from_hf, hf_model

from mambapipe.backends.base import LimitError, SamplingConfig
from mambapipe.engine.api import generate_text, load_engine
from mambapipe.engine.sampling import filter_logits, sample
from mambapipe.models import ModelSpec
from mambapipe.synthetic import write_synthetic_tokenizer


@pytest.fixture(scope="module", params=["mamba1", "mamba2"])
def engine_dir(request, tmp_path_factory):
    spec = ModelSpec(**(MAMBA1 if request.param == "mamba1" else MAMBA2))
    return build_from_hf(hf_model(spec), spec, tmp_path_factory.mktemp(request.param),
                         max_batch_size=3, max_input_len=16, max_seq_len=30)


def _prompts(n: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 90, (int(torch.randint(1, 15, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


def test_sequences_joining_and_leaving_match_running_alone(engine_dir):
    gen = load_engine(engine_dir)
    prompts = _prompts(7)
    budgets = [3, 9, 5, 12, 2, 7, 4]  # unequal lengths make sequences leave at different steps
    alone = [gen.generate([p], n).output_ids[0] for p, n in zip(prompts, budgets)]
    # Queue all 7 through 3 slots, with per-sequence stops from an EOS that is each one's last token.
    longest = gen.serve(prompts, max(budgets)).output_ids
    assert [len(t) for t in longest] == [max(budgets)] * 7
    for p, n, ref, full in zip(prompts, budgets, alone, longest):
        assert full[:n] == ref  # same tokens whatever else shared the batch
    stopped = gen.serve(prompts, 12, eos_id=alone[1][-1]).output_ids
    for tokens, full in zip(stopped, longest):
        cut = full.index(alone[1][-1]) + 1 if alone[1][-1] in full else len(full)
        assert tokens == full[:cut]


def test_stop_at_eos_per_sequence(engine_dir):
    gen = load_engine(engine_dir)
    prompts = _prompts(3, seed=1)
    free = gen.generate(prompts, 10).output_ids
    eos = free[0][2]
    stopped = gen.generate(prompts, 10, eos_id=eos).output_ids
    for tokens, ref in zip(stopped, free):
        assert tokens == (ref[: ref.index(eos) + 1] if eos in ref else ref)
    assert gen.generate(prompts, 10, eos_id=eos, stop_at_eos=False).output_ids == free


def test_greedy_steps_queued_ahead_give_the_same_tokens(engine_dir):
    """The GPU's loop (a greedy step queued before the previous one is read, generate.py) against the
    one-at-a-time loop, forced on here: sequences leaving at their budgets or at end-of-sequence, and
    queued prompts joining slots freed mid-run; a step queued for sequences that all ended is read and
    dropped, not left behind for the next call."""
    gen = load_engine(engine_dir)
    prompts = _prompts(7, seed=4)
    budgets = [3, 9, 5, 12, 2, 7, 4]
    runs = {}
    for queue_ahead in (False, True):
        gen.queue_ahead = queue_ahead
        free = gen.generate(prompts[:3], 10).output_ids
        eos = free[0][2]
        runs[queue_ahead] = [free, gen.generate(prompts[:3], 10, eos_id=eos).output_ids,
                             [gen.generate([p], n).output_ids[0] for p, n in zip(prompts, budgets)],
                             gen.serve(prompts, 12, eos_id=eos).output_ids]
        assert gen._issued is None
    assert runs[True] == runs[False]
    assert any(len(t) < 10 for t in runs[True][1])  # end-of-sequence did stop a sequence early


@pytest.mark.parametrize("prompts,new,message", [
    ([[1]] * 4, 2, "max_batch_size=3"),
    ([list(range(1, 18))], 2, "max_input_len=16"),
    ([list(range(1, 16))], 16, "max_seq_len=30"),
    ([[]], 2, "empty"),
    ([[1, 96]], 2, r"token id 96 outside the vocabulary \[0, 96\)"),
    ([[1.7, 2]], 2, "token id 1.7, which is no integer"),  # a tensor of the prompts would truncate it to 1
    ([[True, 2]], 2, "token id True, which is no integer"),
    ([], 2, "no prompts given"),
])
def test_limits_are_enforced_with_one_line_errors(engine_dir, prompts, new, message):
    gen = load_engine(engine_dir)
    with pytest.raises(LimitError, match=message) as err:
        gen.generate(prompts, new)
    assert "\n" not in str(err.value)


def test_score_checks_prompts_as_a_prefill_and_matches_generation(engine_dir):
    """`score` refuses what a prefill cannot take, but no room for new tokens is needed; each prompt's last
    position's argmax is the first greedy token."""
    gen = load_engine(engine_dir)
    for prompts, message in [([[1]] * 4, "max_batch_size=3"), ([list(range(1, 18))], "max_input_len=16"),
                             ([[]], "empty"), ([[1, 96]], "outside the vocabulary")]:
        with pytest.raises(LimitError, match=message):
            gen.score(prompts)
    prompts = _prompts(3, seed=4) + [list(range(1, 17))]  # 16 tokens: as long as a prompt may be
    logits = gen.score(prompts[:3]) + gen.score(prompts[3:])
    assert [t.shape[0] for t in logits] == [len(p) for p in prompts]
    first = gen.generate(prompts[:3], 1).output_ids + gen.generate(prompts[3:], 1).output_ids
    assert [int(t[-1].argmax()) for t in logits] == [f[0] for f in first]
    gen.limits = dataclasses.replace(gen.limits, max_seq_len=16)  # a full-length prompt leaves no room to generate
    with pytest.raises(LimitError, match="max_seq_len=16"):
        gen.generate(prompts[3:], 1)
    torch.testing.assert_close(gen.score(prompts[3:])[0], logits[3])


def test_seeded_sampling_is_reproducible_and_differs_from_greedy(engine_dir):
    gen = load_engine(engine_dir)
    prompts = _prompts(3, seed=2)
    cfg = SamplingConfig(greedy=False, temperature=1.5, top_k=20, top_p=0.95, seed=7)
    first = gen.generate(prompts, 12, cfg).output_ids
    assert gen.generate(prompts, 12, cfg).output_ids == first
    assert first != gen.generate(prompts, 12).output_ids
    # summarize.py's top_k=1 sampling is greedy decoding
    topk1 = SamplingConfig(greedy=False, top_k=1, seed=3)
    assert gen.generate(prompts, 12, topk1).output_ids == gen.generate(prompts, 12).output_ids


def test_top_k_and_top_p_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda cfg: torch.isfinite(filter_logits(logits, cfg))[0].tolist()  # noqa: E731
    assert kept(SamplingConfig(greedy=False, top_k=2)) == [True, True, False, False]
    assert kept(SamplingConfig(greedy=False, top_p=0.7)) == [True, True, False, False]
    assert kept(SamplingConfig(greedy=False, top_p=0.85)) == [True, True, True, False]
    assert kept(SamplingConfig(greedy=False, top_p=0.1)) == [True, False, False, False]


def test_a_tiny_temperature_samples_the_best_token_instead_of_failing_on_nan():
    """logits / 1e-40 overflow to +-inf, which softmax turns into NaN; the limit of T -> 0 is the argmax."""
    logits = torch.tensor([[1.0, 3.0, 2.0], [-5.0, -7.0, -6.0]])
    for top_p in (1.0, 0.9):
        cfg = SamplingConfig(greedy=False, temperature=1e-40, top_p=top_p)
        assert sample(logits, cfg, torch.Generator().manual_seed(0)).tolist() == [1, 0]


def test_output_reports_timings(engine_dir):
    out = load_engine(engine_dir).generate(_prompts(2, seed=3), 5)
    assert out.prefill_ms > 0 and out.decode_ms_per_step > 0 and out.peak_memory_mb > 0


def test_load_refuses_engine_built_for_more_ranks(tmp_path):
    spec = ModelSpec(**MAMBA2)
    engine = build_from_hf(hf_model(spec), spec, tmp_path, tp=2)
    with pytest.raises(RuntimeError, match="tp_size=2"):
        load_engine(engine)


@pytest.mark.timeout(120)  # before the fix the next call spun forever with every slot taken
def test_a_failed_call_leaves_no_slot_taken(engine_dir, monkeypatch):
    gen = load_engine(engine_dir)
    prompts = _prompts(gen.limits.max_batch_size, seed=3)  # a full batch: every slot taken when prefill fails
    expected = gen.generate(prompts, 4).output_ids
    monkeypatch.setattr(gen.model, "prefill", lambda *args, **kwargs: (_ for _ in ()).throw(MemoryError("oom")))
    with pytest.raises(MemoryError):
        gen.generate(prompts, 4)
    monkeypatch.undo()
    assert gen.generate(prompts, 4).output_ids == expected


def test_generate_text_returns_the_decoded_new_tokens_of_each_prompt(tmp_path):
    from transformers import AutoTokenizer

    spec = ModelSpec(**{**MAMBA2, "vocab_size": 320})  # a byte-level tokenizer needs >= 257 ids
    engine = build_from_hf(hf_model(spec), spec, tmp_path, max_batch_size=2, max_input_len=32, max_seq_len=48)
    eos = write_synthetic_tokenizer(tmp_path / "tokenizer", 300)["eos_id"]
    gen = load_engine(engine)
    texts = ["The council closed the old bridge.", "Orcas hunt herring"]
    out = generate_text(gen, tmp_path / "tokenizer", texts, max_new_tokens=8)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "tokenizer"))
    prompts = [tokenizer.encode(t) for t in texts]
    new_ids = gen.generate(prompts, 8, eos_id=eos).output_ids
    assert out == [tokenizer.decode(ids, skip_special_tokens=True) for ids in new_ids]
    assert all(0 < len(ids) <= 8 for ids in new_ids) and not any(o.startswith(t) for o, t in zip(out, texts))
    stop = new_ids[0][2]  # an end-of-sequence id the first prompt reaches by its third token
    cut = generate_text(gen, tmp_path / "tokenizer", texts[:1], max_new_tokens=8, eos_id=stop)
    assert cut == [tokenizer.decode(new_ids[0][:new_ids[0].index(stop) + 1], skip_special_tokens=True)]


@pytest.mark.parametrize("arch, shape, kept", [("mamba1", {}, "auto"), ("mamba1", {"conv_kernel": 3}, "torch"),
                                               ("mamba2", {"state_size": 12}, "torch"), ("mamba2", {}, "auto")])
def test_kernels_auto_picks_the_torch_ops_for_a_shape_the_fused_kernels_cannot_run(arch, shape, kept, tmp_path):
    """The Triton kernels unroll a width-4 conv and range over power-of-2 states; other shapes run the torch ops
    on every device (test_engine_cuda checks the outputs on a GPU)."""
    spec = ModelSpec(**(MAMBA1 if arch == "mamba1" else MAMBA2) | shape)
    assert load_engine(build_from_hf(hf_model(spec), spec, tmp_path)).model.kernel_choice == kept
