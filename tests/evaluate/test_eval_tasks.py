"""The summarize and benchmark tasks end to end on a tiny real model (HF transformers generator)."""

from __future__ import annotations

import json
import resource
from contextlib import contextmanager

import pytest
import torch
from tqdm import tqdm

from mambapipe import peak_memory
from mambapipe.evaluate import benchmark, summarize, task
from mambapipe.evaluate.data import load_articles
from mambapipe.evaluate.rouge import rouge_scores
from mambapipe.evaluate.scenarios import Scenario, scenarios_from_config

SETTINGS = summarize.SummarizeSettings(batch_size=2, max_ite=2, max_input_length=64, output_len=8)


def _params(**overrides):
    params = {"eval.task": "summarize", "eval.dataset": "sample", "eval.dataset_hub_id": "ccdv/cnn_dailymail",
              "eval.dataset_config": "3.0.0", "eval.dataset_split": "test", "eval.max_ite": 2, "eval.batch_size": 2,
              "eval.max_input_length": 64, "eval.output_len": 8, "eval.check_accuracy": False,
              "eval.rouge1_threshold": 15.0, "eval.compare_hf": False, "eval.random_seed": 0, "eval.scenarios": [],
              "eval.warmup": 1, "eval.repeats": 2, "eval.bandwidth_gbps": None, "device": "cpu",
              "backend": "native", "tp_size": 1, "dtype": "float32"}
    params.update(overrides)
    return params


@pytest.fixture
def engine_is_hf(monkeypatch, hf_generator):
    """Stand the HF generator in for a built engine (the native backend is tested in tests/engine)."""
    @contextmanager
    def loaded(job):
        yield hf_generator
    monkeypatch.setattr(task, "loaded_engine", loaded)


def test_asking_for_more_articles_than_the_dataset_holds_scores_those_and_rank_0_says_so(engine_is_hf, download_dir,
                                                                                        tmp_path, caplog):
    held = len(load_articles("sample"))
    for rank in (1, 0):  # every rank scores the same articles; one warning, not one a rank
        job = task.EvalJob(_params(**{"eval.max_ite": 1000, "eval.batch_size": 4, "eval.output_len": 2}),
                           tmp_path / "engine", download_dir, tmp_path / f"out{rank}", show_progress=False)
        task.run_evaluation(job, rank)
        assert (f"asks for 4000 articles and the dataset holds {held}" in caplog.text) == (rank == 0)
    assert json.loads((tmp_path / "out0" / "metrics.json").read_text())["samples"] == held


def test_a_summary_of_a_local_file_edited_since_the_plan_is_refused(engine_is_hf, download_dir, tmp_path):
    from mambapipe.evaluate.data import local_dataset_sha256
    from mambapipe.pipeline.step import StepError

    path = tmp_path / "articles.jsonl"
    path.write_text('{"article": "a b c", "highlights": "a"}\n')
    planned = local_dataset_sha256(path)
    path.write_text('{"article": "x y z", "highlights": "x"}\n')
    job = task.EvalJob(_params(**{"eval.dataset": str(path)}), tmp_path / "engine", download_dir, tmp_path / "out",
                       show_progress=False, dataset_sha256=planned)
    with pytest.raises(StepError, match="changed after the plan hashed it"):
        task.run_evaluation(job)


def test_prepare_samples_takes_max_ite_batches_in_shuffled_order(tokenizer_bundle):
    batches = summarize.prepare_samples(load_articles("sample"), tokenizer_bundle, SETTINGS)
    assert [len(b) for b in batches] == [2, 2]
    assert [s.id for b in batches for s in b] == load_articles("sample")["id"][:4]
    assert all(len(s.input_ids) <= 64 for b in batches for s in b)


def test_summarize_writes_metrics_and_predictions(engine_is_hf, download_dir, tmp_path, tokenizer_bundle):
    job = task.EvalJob(_params(), tmp_path / "engine", download_dir, tmp_path / "out", show_progress=False)
    metrics = task.run_evaluation(job)
    on_disk = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert on_disk == metrics
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum", "samples", "input_tokens", "output_tokens",
                "tokens_per_s", "ttft_ms", "decode_ms_per_step", "peak_memory_mb"):
        assert key in metrics, key
    assert metrics["task"] == "summarize" and metrics["samples"] == 4
    lines = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [set(x) for x in lines] == [{"id", "input_len", "output_ids", "output_text", "reference"}] * 4
    assert metrics["output_tokens"] == sum(len(x["output_ids"]) for x in lines)
    assert metrics["input_tokens"] == sum(x["input_len"] for x in lines)
    assert all(0 < len(x["output_ids"]) <= 8 for x in lines)
    texts = [tokenizer_bundle.tokenizer.decode(x["output_ids"], skip_special_tokens=True) for x in lines]
    assert texts == [x["output_text"] for x in lines]
    assert metrics["rouge1"] == pytest.approx(rouge_scores(texts, [x["reference"] for x in lines])["rouge1"])
    assert metrics["tokens_per_s"] > 0 and metrics["decode_ms_per_step"] > 0


@pytest.mark.parametrize("filled", ["metrics.json", "predictions.jsonl"])
def test_outputs_the_disk_cuts_short_are_not_left_half_written(tmp_path, disk_fills_writing, filled):
    """The runner copies what a failed evaluation left into the run dir, and reads its metrics.json back: a write the
    disk cut short leaves no file of it, and metrics.json, written last, none where predictions.jsonl is missing."""
    disk_fills_writing(filled)
    with pytest.raises(OSError, match="No space left on device"):
        task.write_outputs(tmp_path, {"task": "summarize", "rouge1": 1.5}, [{"id": "a"}, {"id": "b"}])
    assert [path.name for path in tmp_path.iterdir()] == (["predictions.jsonl"] if filled == "metrics.json" else [])


def test_metrics_say_which_rouge_and_the_protocol_that_produced_it(engine_is_hf, download_dir, tmp_path):
    """Two metrics files compare only where these agree: eval.max_ite counts batches, so eval.batch_size changes how
    many articles are scored; the protocol holds the dataset's pin the plan keyed the step by."""
    from mambapipe.evaluate.data import local_dataset_sha256, sample_path
    from mambapipe.evaluate.rouge import ROUGE_VARIANT

    sha256 = local_dataset_sha256(sample_path())
    job = task.EvalJob(_params(**{"eval.batch_size": 1, "eval.max_ite": 3}), tmp_path / "engine", download_dir,
                       tmp_path / "out", show_progress=False, dataset_sha256=sha256)
    metrics = task.run_evaluation(job)
    assert metrics["protocol"] == {"dataset": "sample", "sha256": sha256, "samples": 3, "batch_size": 1, "max_ite": 3,
                                   "max_input_length": 64, "output_len": 8, "seed": 0, "dtype": "float32"}
    assert metrics["rouge_variant"] == ROUGE_VARIANT and metrics["samples"] == 3
    texts = [json.loads(x)["output_text"] for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    references = [json.loads(x)["reference"] for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert {k: metrics[k] for k in rouge_scores(texts, references)} == rouge_scores(texts, references)
    assert metrics["rouge1_low"] <= metrics["rouge1"] <= metrics["rouge1_high"]


def test_compare_hf_reports_both_scores_and_token_agreement(engine_is_hf, download_dir, tmp_path):
    job = task.EvalJob(_params(**{"eval.compare_hf": True}), tmp_path / "engine", download_dir, tmp_path / "out",
                       show_progress=False)
    metrics = task.run_evaluation(job)
    # The "engine" here is the same HF model, so the reference must agree token for token.
    assert metrics["hf_token_agreement"] == 1.0 and metrics["hf_identical_samples"] == 4
    assert metrics["hf"]["rouge1"] == pytest.approx(metrics["rouge1"])
    assert metrics["hf"]["rouge1_high"] == pytest.approx(metrics["rouge1_high"])  # HF's scores with their interval


def test_compare_hf_skips_non_hf_layouts_with_a_note(engine_is_hf, download_dir, tmp_path):
    fake_download = tmp_path / "download"
    (fake_download / "model").mkdir(parents=True)
    (fake_download / "model" / "params.json").write_text("{}")
    (fake_download / "tokenizer").symlink_to(download_dir / "tokenizer")
    job = task.EvalJob(_params(**{"eval.compare_hf": True}), tmp_path / "engine", fake_download, tmp_path / "out",
                       show_progress=False)
    assert "not the HF layout" in task.run_evaluation(job)["hf"]["skipped"]


def test_token_agreement_counts_length_differences_as_mismatches():
    assert summarize.token_agreement([[1, 2, 3]], [[1, 2, 3]]) == 1.0
    assert summarize.token_agreement([[1, 2, 3, 4]], [[1, 9]]) == pytest.approx(1 / 4)
    assert summarize.token_agreement([[1], [5, 6]], [[1], [5, 7]]) == pytest.approx(2 / 3)


def test_benchmark_rows_and_skips(engine_is_hf, download_dir, tmp_path):
    scenarios = [{"batch": 2, "input_len": 16, "output_len": 4}, {"batch": 8, "input_len": 16, "output_len": 4},
                 {"batch": 1, "input_len": 150, "output_len": 4}, {"batch": 1, "input_len": 100, "output_len": 100}]
    job = task.EvalJob(_params(**{"eval.task": "benchmark", "eval.scenarios": scenarios,
                                  "eval.bandwidth_gbps": 50.0}),
                       tmp_path / "engine", download_dir, tmp_path / "out", show_progress=False)
    metrics = task.run_evaluation(job)
    assert not (tmp_path / "out" / "predictions.jsonl").exists()
    rows = metrics["rows"]
    assert [r.get("skipped") for r in rows] == [
        None, "batch of 8 prompts exceeds max_batch_size=4; send smaller batches or rebuild with a larger "
              "build.max_batch_size",
        "prompt 0 has 150 tokens > max_input_len=128; truncate it or rebuild with a larger build.max_input_len",
        "prompt 0 (100 tokens) + max_new_tokens=100 exceeds max_seq_len=160; ask for fewer tokens or rebuild larger"]
    row = rows[0]
    assert set(row) >= {"batch", "input_len", "output_len", "prefill_ms", "decode_ms_per_step", "tokens_per_s",
                        "floor_pct"}
    assert row["tokens_per_s"] == pytest.approx(2 * 4 / (row["total_ms"] / 1e3))
    floor_ms = row["decode_bytes_per_step"] / 50e9 * 1e3
    assert row["floor_pct"] == pytest.approx(floor_ms / row["decode_ms_per_step"] * 100)
    assert metrics["bandwidth_source"] == "configured: eval.bandwidth_gbps=50"


def test_one_new_token_has_no_decode_time(engine_is_hf, download_dir, tmp_path):
    """The only token of output_len=1 comes from the prefill: no decode step ran, so none was timed."""
    scenarios = [{"batch": 1, "input_len": 8, "output_len": 1}]
    job = task.EvalJob(_params(**{"eval.task": "benchmark", "eval.scenarios": scenarios, "eval.bandwidth_gbps": 50.0,
                                  "eval.repeats": 1}),
                       tmp_path / "engine", download_dir, tmp_path / "out", show_progress=False)
    row = task.run_evaluation(job)["rows"][0]
    assert row["decode_ms_per_step"] is None and row["floor_pct"] is None and row["tokens_per_s"] > 0
    run = summarize.GenerationRun(output_ids=[[7]], seconds=0.5, prefill_ms=[2.0], decode_ms=[(0.0, 0)])
    assert run.speed()["decode_ms_per_step"] is None


@pytest.mark.parametrize("overrides, peak_of", [
    ({}, lambda metrics: metrics["peak_memory_mb"]),
    ({"eval.task": "benchmark", "eval.scenarios": [{"batch": 1, "input_len": 8, "output_len": 4}],
      "eval.bandwidth_gbps": 50.0}, lambda metrics: metrics["rows"][0]["peak_memory_mb"]),
])
def test_peak_memory_is_the_runs_own_not_the_process_so_far(engine_is_hf, download_dir, tmp_path, overrides,
                                                             peak_of):
    """768 MiB freed before the run, as the bandwidth probe's copy buffers are, must not show in its peak."""
    if not peak_memory.reset_peak_memory("cpu"):
        pytest.skip("this system cannot reset the process's peak RSS")
    ballast = torch.ones(768 * 2**20 // 4)
    del ballast
    process_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    job = task.EvalJob(_params(**overrides), tmp_path / "engine", download_dir, tmp_path / "out", show_progress=False)
    metrics = task.run_evaluation(job)
    assert metrics["peak_memory"] == peak_memory.CPU_MEANING
    assert 0 < peak_of(metrics) < process_peak_mb - 512


def test_peak_memory_is_the_lifetime_peak_where_the_system_cannot_reset_it(engine_is_hf, download_dir, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(peak_memory, "CLEAR_REFS", tmp_path / "no-proc" / "clear_refs")  # as on a system without it
    job = task.EvalJob(_params(**{"eval.task": "benchmark", "eval.scenarios": [{"batch": 1, "input_len": 8,
                                                                                 "output_len": 2}],
                                  "eval.bandwidth_gbps": 50.0, "eval.repeats": 1}),
                       tmp_path / "engine", download_dir, tmp_path / "out", show_progress=False)
    assert task.run_evaluation(job)["peak_memory"] == peak_memory.CPU_LIFETIME_MEANING


def test_default_scenarios_are_the_h200_anchors():
    assert scenarios_from_config([]) == [Scenario(1, 100, 100), Scenario(64, 100, 100), Scenario(1, 2048, 128),
                                         Scenario(8, 923, 100)]


def test_random_prompts_are_seeded_and_in_range():
    scenario = Scenario(3, 50, 1)
    prompts = benchmark.random_prompts(scenario, vocab_size=512, seed=0)
    assert prompts == benchmark.random_prompts(scenario, vocab_size=512, seed=0)
    assert len(prompts) == 3 and all(len(p) == 50 and 1 <= min(p) and max(p) < 512 for p in prompts)


class _ProbingGenerator:
    """A generator whose every call takes 50 ms of a fake clock, 20 of them a measurement-only probe run."""
    device, dtype = "cpu", "float32"

    def __init__(self, spec, clock):
        self.spec, self.clock = spec, clock

    def generate(self, prompts, max_new_tokens, sampling, eos_id=None, stop_at_eos=True):
        from mambapipe.backends.base import GenerationOutput

        self.clock[0] += 0.050
        return GenerationOutput([[1] * max_new_tokens for _ in prompts], 20.0, 5.0, probe_ms=20.0)


def test_throughput_leaves_out_the_time_a_backend_spent_probing(monkeypatch):
    """trtllm times the first token in a separate one-token run; tokens/s must not pay for it."""
    from mambapipe.models import ModelSpec

    clock = [0.0]
    monkeypatch.setattr("time.perf_counter", lambda: clock[0])
    generator = _ProbingGenerator(ModelSpec("Mamba1", 16, 1, 32, 4), clock)
    timing = benchmark.time_scenario(generator, Scenario(2, 4, 3), 1, 3, 0, tqdm(disable=True))
    assert timing["total_ms"] == pytest.approx(30.0)
    batches = [[summarize.Sample(str(i), [1, 2], "ref") for i in range(2)]] * 3
    run = summarize.generate_batches(generator, batches, 4, None, "probe", False)
    assert run.seconds == pytest.approx(3 * 0.030)
