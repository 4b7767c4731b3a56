"""Boundary test of the runtime adapter: a stand-in `tensorrt_llm.runtime` (conftest.FakeTrtllm) records
the calls and answers in TensorRT-LLM's documented shapes. This checks what we send to TensorRT-LLM and
how we read its answer, not TensorRT-LLM itself (test_trtllm_end_to_end.py does that on a GPU)."""

from __future__ import annotations

import sys

import pytest
import torch

from mambapipe.backends.base import LimitError, Limits, SamplingConfig
from mambapipe.backends.trtllm_runtime import NO_END_ID, finish_at_eos, load_generator
from mambapipe.pipeline.step import StepError

EOS = 2
PROMPTS = [[11, 12, 13], [21], [31, 32, 33, 34, 35]]  # unequal lengths: slicing must be per sequence
SCRIPT = [[5, 6, EOS, 7, 8], [9, 9, 9, 9, 9], [4, EOS, 3, 3, 3]]


def _load(fake, engine_dir, name="mamba_130m_pysession"):
    fake.script = SCRIPT
    fake.install()
    return load_generator(engine_dir(name), "cuda")


def test_inflight_engine_uses_model_runner_cpp_with_the_mpi_rank(fake_trtllm, engine_dir, tmp_path):
    fake_trtllm.world_size = 2  # codestral_tp2 runs as two MPI ranks
    gen = _load(fake_trtllm, engine_dir, "codestral_tp2")
    (name, kwargs), = fake_trtllm.from_dir_calls
    assert name == "ModelRunnerCpp" and kwargs == {"engine_dir": str(tmp_path / "codestral_tp2"), "rank": 0}
    assert (gen.limits, gen.dtype) == (Limits(8, 924, 1024), "float16")
    assert gen.spec.n_groups == 8


def test_python_session_when_engine_or_bindings_lack_inflight_batching(fake_trtllm, engine_dir):
    _load(fake_trtllm, engine_dir)
    assert fake_trtllm.from_dir_calls[-1][0] == "ModelRunner"
    fake_trtllm.python_bindings = False
    fake_trtllm.world_size = 2
    fake_trtllm.install()
    load_generator(engine_dir("codestral_tp2"), "cuda")
    assert fake_trtllm.from_dir_calls[-1][0] == "ModelRunner"


def test_greedy_call_contract_and_eos_cutting(fake_trtllm, engine_dir):
    gen = _load(fake_trtllm, engine_dir)
    out = gen.generate(PROMPTS, max_new_tokens=5, eos_id=EOS)
    prefill_call, full_call = fake_trtllm.generate_calls
    assert prefill_call["max_new_tokens"] == 1 and full_call["max_new_tokens"] == 5
    for call in (prefill_call, full_call):
        ids = call["batch_input_ids"]
        assert [t.dtype for t in ids] == [torch.int32] * 3 and [t.dim() for t in ids] == [1, 1, 1]
        assert [t.tolist() for t in ids] == PROMPTS
        # summarize.py's greedy contract
        assert {k: call[k] for k in ("end_id", "pad_id", "temperature", "top_k", "top_p", "num_beams",
                                     "return_dict", "output_sequence_lengths")} == dict(
            end_id=EOS, pad_id=EOS, temperature=1.0, top_k=1, top_p=0.0, num_beams=1,
            return_dict=True, output_sequence_lengths=True)
    assert out.output_ids == [[5, 6, EOS], [9, 9, 9, 9, 9], [4, EOS]]
    assert out.prefill_ms > 0 and out.decode_ms_per_step >= 0


def test_eos_returned_even_when_trtllm_leaves_it_out_of_the_length(fake_trtllm, engine_dir):
    fake_trtllm.count_eos = False
    gen = _load(fake_trtllm, engine_dir)
    assert gen.generate(PROMPTS, max_new_tokens=5, eos_id=EOS).output_ids == [[5, 6, EOS], [9] * 5, [4, EOS]]


def test_no_stop_at_eos_disables_end_id_and_keeps_full_length(fake_trtllm, engine_dir):
    gen = _load(fake_trtllm, engine_dir)
    out = gen.generate(PROMPTS, max_new_tokens=4, eos_id=EOS, stop_at_eos=False)
    assert fake_trtllm.generate_calls[-1]["end_id"] == NO_END_ID
    assert fake_trtllm.generate_calls[-1]["pad_id"] == EOS  # padding must stay a real token id
    assert out.output_ids == [s[:4] for s in SCRIPT]


def test_sampling_arguments_and_single_token_run(fake_trtllm, engine_dir):
    gen = _load(fake_trtllm, engine_dir)
    out = gen.generate(PROMPTS[:1], max_new_tokens=1, eos_id=None,
                       sampling=SamplingConfig(greedy=False, temperature=0.7, top_k=40, top_p=0.9, seed=3))
    (call,) = fake_trtllm.generate_calls  # one run only: it is the prefill
    assert {k: call[k] for k in ("temperature", "top_k", "top_p", "random_seed", "end_id", "pad_id")} == dict(
        temperature=0.7, top_k=40, top_p=0.9, random_seed=3, end_id=NO_END_ID, pad_id=0)
    assert out.output_ids == [[5]] and out.decode_ms_per_step == 0.0


@pytest.mark.parametrize("prompts, new, message", [
    ([[1]] * 9, 4, "batch of 9 prompts exceeds max_batch_size=8; send smaller batches or rebuild with a larger "
                   "build.max_batch_size"),
    ([[1] * 925], 4, "prompt 0 has 925 tokens > max_input_len=924; truncate it or rebuild with a larger "
                     "build.max_input_len"),
    ([[1] * 900], 200, "prompt 0 (900 tokens) + max_new_tokens=200 exceeds max_seq_len=1024; ask for fewer tokens "
                       "or rebuild larger"),
    ([[1], []], 4, "prompt 1 is empty; give at least one token"),
    ([], 4, "no prompts given; give at least one"),
    ([[1]], 0, "max_new_tokens must be >= 1, got 0"),
])
def test_limits_are_the_native_engines_checked_before_calling_trtllm(fake_trtllm, engine_dir, prompts, new, message):
    """The native engine's LimitError and words, which the evaluate step reports in one line on either backend."""
    gen = _load(fake_trtllm, engine_dir)
    with pytest.raises(LimitError) as err:
        gen.generate(prompts, new)
    assert str(err.value) == message
    assert fake_trtllm.generate_calls == []


def test_tp_rank1_gets_rank0_output_by_broadcast(fake_trtllm, engine_dir):
    fake_trtllm.rank, fake_trtllm.world_size = 1, 2
    fake_trtllm.rank0_result = "rank 0's GenerationOutput"
    gen = _load(fake_trtllm, engine_dir, "codestral_tp2")
    assert fake_trtllm.from_dir_calls[-1][1]["rank"] == 1
    assert gen.generate(PROMPTS, 3, eos_id=EOS) == "rank 0's GenerationOutput"
    assert fake_trtllm.broadcast_calls == [(None, 0)]  # rank 1 had nothing of its own to send


def test_tp_rank0_broadcasts_its_output(fake_trtllm, engine_dir):
    fake_trtllm.world_size = 2
    gen = _load(fake_trtllm, engine_dir, "codestral_tp2")
    out = gen.generate(PROMPTS, 5, eos_id=EOS)
    assert fake_trtllm.broadcast_calls == [(out, 0)] and out.output_ids[0] == [5, 6, EOS]


def test_world_size_must_match_engine_tp(fake_trtllm, engine_dir):
    with pytest.raises(StepError, match="built for tp_size 2 but 1 MPI rank.*mpirun -n 2"):
        _load(fake_trtllm, engine_dir, "codestral_tp2")


def test_cpu_device_is_refused(engine_dir):
    with pytest.raises(StepError, match="runs on a CUDA GPU, not device=cpu; use backend=native"):
        load_generator(engine_dir("codestral_tp2"), "cpu")


@pytest.mark.parametrize("tokens, eos, limit, expected", [
    ([1, 2, 3], 2, 5, [1, 2]), ([1, 3], 2, 5, [1, 3, 2]), ([1, 3], 2, 2, [1, 3]), ([1, 2], None, 5, [1, 2])])
def test_finish_at_eos(tokens, eos, limit, expected):
    assert finish_at_eos(tokens, eos, limit) == expected


def test_prefill_and_decode_timing_arithmetic(fake_trtllm, engine_dir, monkeypatch):
    import mambapipe.backends.trtllm_runtime as runtime

    monkeypatch.setattr(runtime, "perf_counter", lambda: fake_trtllm.clock_s)
    fake_trtllm.cost_s = lambda n: 0.030 + 0.010 * (n - 1)  # 30 ms to the first token, then 10 ms per step
    gen = _load(fake_trtllm, engine_dir)
    out = gen.generate(PROMPTS, max_new_tokens=5, eos_id=EOS, stop_at_eos=False)
    assert out.prefill_ms == pytest.approx(30.0) and out.decode_ms_per_step == pytest.approx(10.0)
    assert out.probe_ms == pytest.approx(30.0)  # the one-token run for the prefill time, which throughput leaves out
    # With EOS stopping the run lasts as long as its longest sequence: SCRIPT[1] never stops, 4 decode steps.
    assert gen.generate(PROMPTS, 5, eos_id=EOS).decode_ms_per_step == pytest.approx(10.0)
    one_token = gen.generate(PROMPTS, 1, eos_id=EOS)
    assert one_token.prefill_ms == pytest.approx(30.0) and one_token.probe_ms == 0.0  # no separate run then


def test_broken_tensorrt_llm_install_is_one_line(engine_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)  # makes `import tensorrt_llm` raise ImportError
    with pytest.raises(StepError, match=r"cannot import tensorrt_llm .*pip install -e '\.\[trtllm\]'.*backend=native"):
        load_generator(engine_dir("codestral_tp2"), "cuda")
