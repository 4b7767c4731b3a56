"""The evaluate step's contract: declared keys, plan-time checks and the accuracy gate."""

from __future__ import annotations

import errno
import gzip
import json
import os
import random
import sys
from pathlib import Path

import pytest
from empty_datasets import EMPTY_DATASETS
from omegaconf import OmegaConf

from mambapipe.config import MambapipeConfig
from mambapipe.evaluate.data import load_articles
from mambapipe.pipeline.plan import step_params
from mambapipe.pipeline.resolve import select
from mambapipe.pipeline.step import GateMissed, StepError
from mambapipe.steps.evaluate import STEP


def _config(**overrides):
    """The schema's defaults plus these dotted overrides, as the plan reads them."""
    cfg = OmegaConf.structured(MambapipeConfig)
    for key, value in {"device": "cpu", "backend": "native", **overrides}.items():
        OmegaConf.update(cfg, key, value)
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def _params(**overrides):
    """The params the plan hands the step for the schema's defaults plus these dotted overrides."""
    return step_params(STEP, _config(**overrides))


def _gate(**overrides):
    """The values of the gate's keys the plan hands the runner for the step's check_gate."""
    return select(_config(**overrides), STEP.gate_uses)


@pytest.mark.parametrize("overrides", [{}, {"eval.check_accuracy": True, "eval.dataset": "cnn_dailymail"},
                                       {"eval.task": "benchmark"}])
def test_uses_only_keys_of_the_schema(overrides):
    cfg = OmegaConf.structured(MambapipeConfig)
    for key in [*_params(**overrides), *STEP.gate_uses]:
        assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", key
    assert STEP.name == "evaluate" and set(STEP.needs) == {"build", "download"}


SUMMARIZE_ONLY = {"eval.dataset": "cnn_dailymail", "eval.max_ite": 5, "eval.batch_size": 2,
                  "eval.max_input_length": 500, "eval.output_len": 50}
BENCHMARK_ONLY = {"eval.warmup": 0, "eval.repeats": 7, "eval.bandwidth_gbps": 50.0,
                  "eval.scenarios": [{"batch": 1, "input_len": 10, "output_len": 10}]}


@pytest.mark.parametrize("task, read, unread", [("summarize", SUMMARIZE_ONLY, BENCHMARK_ONLY),
                                                ("benchmark", BENCHMARK_ONLY, SUMMARIZE_ONLY)])
def test_the_params_hold_only_the_keys_the_task_reads(task, read, unread):
    """The params are what the key hashes: a key of the other task must leave them (and the artifact) alone."""
    params = _params(**{"eval.task": task})
    assert _params(**{"eval.task": task}, **unread) == params
    for key, value in read.items():
        assert _params(**{"eval.task": task, key: value})[key] == value, key


def test_the_gate_keys_are_in_no_key_and_hub_keys_only_for_the_hub():
    """A new threshold, or the gate turned on, is checked against the evaluation already made (the runner's
    check_gate), not a reason to make it again."""
    for task in ("summarize", "benchmark"):
        assert _params(**{"eval.task": task, "eval.check_accuracy": True, "eval.rouge1_threshold": 1.0}) == \
            _params(**{"eval.task": task})
    assert not set(STEP.gate_uses) & set(_params(**{"eval.check_accuracy": True}))
    hub_keys = {"eval.dataset_hub_id", "eval.dataset_config", "eval.dataset_split"}
    assert not hub_keys & set(_params())
    assert hub_keys <= set(_params(**{"eval.dataset": "cnn_dailymail"}))


def test_defaults_pass_the_plan_check():
    STEP.check(_params())  # eval 923 + 100 tokens fit the default build limits 924 / 1024
    STEP.check(_params(**{"eval.task": "benchmark"}))


@pytest.mark.parametrize("overrides, message", [
    ({"eval.batch_size": 16}, "eval.batch_size 16 > build.max_batch_size 8"),
    ({"eval.max_input_length": 1000}, "eval.max_input_length 1000 > build.max_input_len 924"),
    ({"eval.output_len": 200}, "= 1123 > build.max_seq_len 1024"),
    ({"eval.max_ite": 0}, "eval.max_ite must be >= 1"),
    ({"eval.dataset": "/nowhere/data.jsonl"}, "does not exist"),
    ({"eval.dataset": "articles.csv"}, "not sample, cnn_dailymail or a .jsonl/.json/.parquet"),
    ({"eval.task": "benchmark", "eval.scenarios": [{"batch": 0, "input_len": 1, "output_len": 1}]},
     r"eval.scenarios\[0\].batch must be >= 1"),
    ({"eval.task": "benchmark", "eval.repeats": 0}, "eval.repeats must be >= 1"),
    ({"eval.task": "benchmark", "eval.compare_hf": True}, "eval.compare_hf=true compares summaries .* set "
                                                         "eval.compare_hf=false"),
    ({"eval.task": "benchmark", "eval.bandwidth_gbps": -5.0}, r"eval.bandwidth_gbps must be a number > 0 \(GB/s\), "
                                                               "got -5.0"),
    ({"eval.task": "benchmark", "eval.bandwidth_gbps": 0.0}, "eval.bandwidth_gbps must be a number > 0"),
    ({"eval.task": "benchmark", "eval.bandwidth_gbps": float("nan")}, "eval.bandwidth_gbps must be a number > 0"),
    ({"eval.task": "benchmark", "eval.bandwidth_gbps": float("inf")}, "eval.bandwidth_gbps must be a number > 0"),
    ({"eval.task": "benchmark", "build.max_batch_size": 2,
      "eval.scenarios": [{"batch": 8, "input_len": 923, "output_len": 100}]},
     r"no eval.scenarios fit the engine's build limits \(B=8 923/100: batch of 8 prompts exceeds max_batch_size=2; "),
    ({"eval.task": "benchmark", "build.max_seq_len": 150, "build.max_input_len": 100},
     "no eval.scenarios fit"),  # the anchors' shortest scenario needs 200
])
def test_plan_check_rejects_bad_settings(overrides, message):
    with pytest.raises(StepError, match=message) as err:
        STEP.check(_params(**overrides))
    assert "\n" not in str(err.value)


def _write_records(path, records):
    """`records` in the format `path`'s suffix names: JSON Lines, one JSON array on one line, or parquet."""
    if path.suffix == ".parquet":
        import pandas as pd

        pd.DataFrame(records).to_parquet(path)
    elif path.suffix == ".json":
        path.write_text(json.dumps(records))
    else:
        path.write_text("".join(json.dumps(record) + "\n" for record in records))


@pytest.mark.parametrize("name", ["articles.jsonl", "articles.json", "articles.parquet"])
@pytest.mark.parametrize("record", [{"text": "A story.", "summary": "Story."},
                                    {"article": "A story " * 20_000, "summary": "Story."}])  # > the first read
def test_plan_check_finds_a_local_file_without_the_fields_with_the_loaders_message(tmp_path, name, record):
    path = tmp_path / name
    _write_records(path, [record] * 3)
    with pytest.raises(StepError) as loaded:
        load_articles(str(path))
    with pytest.raises(StepError, match=r"lacks field\(s\) \[") as checked:
        STEP.check(_params(**{"eval.dataset": str(path)}))
    assert str(checked.value) == str(loaded.value)


@pytest.mark.parametrize("name, text", [
    ("good.jsonl", '{"article": "A story.", "highlights": "Story."}\n{"text": "the loader checks the rest"}\n'),
    ("bad.jsonl", "{not json\n"), ("cut.json", '[{"article": "A sto'), ("strings.json", '["A story."]'),
    ("bad.parquet", "not parquet"),
])
def test_plan_check_leaves_a_file_whose_first_record_it_cannot_fault_to_the_loader(tmp_path, name, text):
    """Only the first record's fields are checked at plan time; what else is wrong the loader names, as before."""
    path = tmp_path / name
    path.write_text(text)
    STEP.check(_params(**{"eval.dataset": str(path)}))


@pytest.mark.parametrize("name, write", EMPTY_DATASETS)
def test_plan_check_finds_a_file_without_records_with_the_loaders_message(tmp_path, name, write):
    """Before convert and build run, not at the evaluate step after them."""
    path = tmp_path / name
    write(path)
    with pytest.raises(StepError) as loaded:
        load_articles(str(path))
    with pytest.raises(StepError, match="has no records") as checked:
        STEP.check(_params(**{"eval.dataset": str(path)}))
    assert str(checked.value) == str(loaded.value)


ARTICLE = json.dumps({"article": "A story about the council.", "highlights": "The council met."}).encode()
LATIN1 = json.dumps({"article": "A café story.", "highlights": "Café."}, ensure_ascii=False).encode("latin-1")


@pytest.mark.parametrize("name, data, line, byte", [
    # a record past the first, which eval.max_ite=1 never samples: datasets keeps its bytes, and passes
    ("articles.jsonl", b"\n".join([ARTICLE, ARTICLE, ARTICLE.replace(b"about", b"\xff\xfeabout"), ARTICLE]), 3, "0xFF"),
    ("latin1.jsonl", LATIN1 + b"\n" + LATIN1 + b"\n", 1, "0xE9"),
    ("articles.json", b"[\n" + b",\n".join([ARTICLE, ARTICLE.replace(b"council.", b"council\xe9.")]) + b"\n]", 3,
     "0xE9"),
])
def test_plan_and_loader_name_the_line_of_a_file_that_is_not_utf8(tmp_path, name, data, line, byte):
    """The plan finds it as it hashes the file into the key; the ranks' loader again, as the file may have changed
    since (convert and build run in between)."""
    path = tmp_path / name
    path.write_bytes(data)
    expected = f"eval.dataset {str(path)!r} is not UTF-8 text: line {line} holds byte {byte} ("
    for attempt in (lambda: STEP.environment(_params(**{"eval.dataset": str(path), "eval.max_ite": 1})),
                    lambda: load_articles(str(path))):
        with pytest.raises(StepError) as info:
            attempt()
        assert str(info.value).startswith(expected) and str(info.value).endswith("; save the file as UTF-8")


def _count_reads(path: Path, monkeypatch) -> list[int]:
    """The sizes of the reads through Path.open of `path` (read, and readinto for readers that fill a buffer)."""
    reads: list[int] = []
    real_open = Path.open

    def counting_open(self, *args, **kwargs):
        handle = real_open(self, *args, **kwargs)
        if self != path:
            return handle
        read, readinto = handle.read, getattr(handle, "readinto", None)
        handle.read = lambda size=-1: reads.append(len(text := read(size))) or text
        if readinto is not None:
            handle.readinto = lambda buffer: reads.append(size := readinto(buffer)) or size
        return handle
    monkeypatch.setattr(Path, "open", counting_open)
    return reads


def test_plan_check_reads_no_further_than_its_cap_for_a_record(tmp_path, monkeypatch):
    """Text that never makes a JSON record (a gzip file datasets can still open) is not read whole at plan time."""
    import mambapipe.evaluate.data as data

    path = tmp_path / "packed.jsonl"
    path.write_bytes(gzip.compress(random.Random(0).randbytes(1 << 20)))  # 1 MiB of no JSON text, nor UTF-8
    monkeypatch.setattr(data, "FIRST_RECORD_MAX_CHARS", 1 << 17)
    reads = _count_reads(path, monkeypatch)
    STEP.check(_params(**{"eval.dataset": str(path)}))
    assert 0 < sum(reads) <= 3 << 16  # 64 Ki then 128 Ki, and no further read past the 128 Ki cap


def test_the_plan_reads_a_local_dataset_whole_once(tmp_path, monkeypatch):
    """Hashing it into the key and checking that it is UTF-8 text are one read of a file that may be large."""
    path = tmp_path / "articles.jsonl"
    path.write_bytes(b"\n".join([ARTICLE] * 20_000))  # 1.5 MB, of which the first-record check reads 64 Ki
    reads = _count_reads(path, monkeypatch)
    params = _params(**{"eval.dataset": str(path)})
    STEP.environment(params)
    STEP.check(params)
    assert path.stat().st_size <= sum(reads) < 2 * path.stat().st_size


def test_a_compressed_dataset_is_keyed_by_all_of_its_bytes(tmp_path, monkeypatch):
    """Its bytes are no UTF-8 from the start, no problem for a file datasets decompresses: the hash reads on."""
    import hashlib

    import mambapipe.evaluate.data as data

    path = tmp_path / "packed.jsonl"
    path.write_bytes(gzip.compress(b"\n".join([ARTICLE] * 100)))
    monkeypatch.setattr(data, "_READ_CHUNK", 64)  # many chunks past the first, which is no UTF-8
    environment = STEP.environment(_params(**{"eval.dataset": str(path)}))
    assert environment["dataset_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_benchmark_runs_when_some_scenario_fits_the_engine():
    scenarios = [{"batch": 8, "input_len": 923, "output_len": 100}, {"batch": 2, "input_len": 100, "output_len": 100}]
    STEP.check(_params(**{"eval.task": "benchmark", "build.max_batch_size": 2, "eval.scenarios": scenarios,
                          "eval.bandwidth_gbps": 50.0}))


@pytest.mark.parametrize("module, package", [("datasets", "datasets"), ("rouge_score", "rouge-score")])
def test_plan_check_stops_a_summarize_run_whose_install_cannot_import_its_libraries(monkeypatch, module, package):
    monkeypatch.setitem(sys.modules, module, None)  # what a missing or broken package looks like to import
    STEP.check_imports(_params(**{"eval.task": "benchmark"}))  # the benchmark needs neither
    with pytest.raises(StepError, match=f"summarize task cannot import {package} "):
        STEP.check_imports(_params())


def _evaluation(tmp_path, metrics):
    """An evaluate artifact's directory holding these metrics."""
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    return tmp_path


@pytest.mark.parametrize("rouge1, fails", [(12.3, True), (15.0, True), (15.01, False)])
def test_accuracy_gate_is_strictly_greater(tmp_path, rouge1, fails):
    artifact = _evaluation(tmp_path, {"task": "summarize", "rouge1": rouge1})
    gate = _gate(**{"eval.check_accuracy": True})
    if not fails:
        STEP.check_gate(gate, artifact)
        return
    with pytest.raises(GateMissed, match=f"rouge1 {rouge1:.2f} <= threshold 15.00") as err:
        STEP.check_gate(gate, artifact)
    assert "\n" not in str(err.value)
    # A verdict on the cached evaluation: the run's hint offers a lower threshold, not the same command.
    assert (err.value.key, err.value.change) == ("eval.rouge1_threshold", "lower")


def test_accuracy_gate_is_off_unless_asked(tmp_path):
    artifact = _evaluation(tmp_path, {"task": "summarize", "rouge1": 1.0})
    STEP.check_gate(_gate(), artifact)
    STEP.check_gate(_gate(**{"eval.check_accuracy": True, "eval.rouge1_threshold": 0.5}), artifact)
    benchmark = _evaluation(tmp_path, {"task": "benchmark", "rows": []})
    STEP.check_gate(_gate(**{"eval.check_accuracy": True}), benchmark)


def test_the_gate_on_an_evaluation_without_its_metrics_is_one_line_and_none_asked_reads_nothing(tmp_path):
    STEP.check_gate(_gate(), tmp_path)  # no metrics.json: nothing to read without the gate
    with pytest.raises(StepError, match=r"^eval.check_accuracy cannot read .*metrics.json \(FileNotFoundError\); "
                                        r"make the evaluation again with force=\[evaluate\]$") as err:
        STEP.check_gate(_gate(**{"eval.check_accuracy": True}), tmp_path)
    assert not isinstance(err.value, GateMissed)  # no threshold changes it: the hint is the usual one


def test_local_dataset_contents_enter_the_key(tmp_path):
    """Editing a local eval.dataset file must change the evaluate key, not serve the old scores."""
    data = tmp_path / "articles.jsonl"
    data.write_text('{"article": "a b c", "highlights": "a"}\n')
    params = _params(**{"eval.dataset": str(data)})
    before = STEP.environment(params)
    data.write_text('{"article": "x y z", "highlights": "x"}\n')
    after = STEP.environment(params)
    assert before["dataset_sha256"] != after["dataset_sha256"]
    assert "dataset_sha256" in STEP.environment(_params())  # the bundled sample's too (test_eval_dataset_pin.py)


def test_a_request_outside_the_engine_limits_is_one_line_on_one_rank(monkeypatch, tmp_path):
    """At tp_size=1 the evaluation runs in this process: its LimitError (e.g. a tokenizer that is not the model's)
    must reach the runner as the StepError a launched rank's failure already is, not as a crash."""
    from mambapipe.backends.base import LimitError
    from mambapipe.evaluate import task
    from mambapipe.pipeline.step import StepContext

    def refuse(job):
        raise LimitError("prompt 0 has token id 510 outside the vocabulary [0, 510)")

    monkeypatch.setattr(task, "run_evaluation", refuse)
    ctx = StepContext(show_progress=False)
    with pytest.raises(StepError, match=r"^LimitError: prompt 0 has token id 510 outside the vocabulary"):
        STEP.run(_params(), {"build": tmp_path, "download": tmp_path}, tmp_path / "out", ctx)


def _no_space() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_rank_that_finds_the_disk_full_records_the_line_said_at_tp1(tmp_path, monkeypatch):
    """Rank 0 writes the outputs into the step's staging dir: a full disk there is recorded, for the launch that
    started the rank, as the line the runner says for an evaluation in-process (the mambapipe cache and the setting
    that moves it), not as 'unexpected OSError'."""
    from mambapipe.evaluate import task, worker
    from mambapipe.parallel import FAILURES_ENV
    from mambapipe.pipeline.store import ArtifactStore

    staging = ArtifactStore(tmp_path / "cache").new_staging("evaluate", "0123abcd")
    worker.write_job(task.EvalJob(_params(), tmp_path, tmp_path, staging, show_progress=False), staging / "job.json")

    def disk_full(job, rank):
        raise _no_space()

    monkeypatch.setattr(task, "run_evaluation", disk_full)
    (tmp_path / "failures").mkdir()
    monkeypatch.setenv(FAILURES_ENV, str(tmp_path / "failures"))
    assert worker.main([str(staging / "job.json")]) == 1
    record = json.loads((tmp_path / "failures" / "rank0.json").read_text())
    assert record["known"] and record["line"] == (
        f"no space left on device in the mambapipe cache {tmp_path / 'cache'}: free space there, or set cache_dir (or "
        "MAMBAPIPE_CACHE) to a directory on a disk with room")


def test_a_run_dir_that_fills_as_the_ranks_output_is_logged_is_named(tmp_path, monkeypatch):
    """With tp_size > 1 the ranks' output goes into the run dir's evaluate-ranks.log as it comes: a full disk met
    there names the run dir, though the runner names the mambapipe cache for what the step writes."""
    from mambapipe.pipeline.disk import filling_cache
    from mambapipe.pipeline.step import StepContext
    from mambapipe.steps import evaluate

    def launch_whose_log_fills(nprocs, module, args, launcher, log_file):
        log_file.write_text("[rank1]: a warn")  # and the rest of the line finds no room
        raise _no_space()

    monkeypatch.setattr(evaluate, "launch", launch_whose_log_fills)
    out_dir, run_dir = tmp_path / "cache" / "evaluate" / "staging", tmp_path / "run"
    out_dir.mkdir(parents=True)
    run_dir.mkdir()
    with pytest.raises(StepError) as failed, filling_cache(tmp_path / "cache"):
        STEP.run(_params(tp_size=2), {"build": tmp_path, "download": tmp_path}, out_dir,
                 StepContext(show_progress=False, run_dir=run_dir))
    assert str(failed.value) == (f"no space left on device in the run directory {run_dir}: free space there, or set "
                                 "hydra.run.dir (hydra.sweep.dir for a sweep) to a directory on a disk with room")
    assert list(out_dir.iterdir()) == []  # the ranks' job file went too


def test_a_missing_mpirun_stops_a_trtllm_tensor_parallel_plan(monkeypatch):
    """Found at run time only, it came after a 7B convert and engine build (codestral_tp2 on backend=trtllm)."""
    import shutil

    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "mpirun" else real_which(name, *a, **k))
    with pytest.raises(StepError, match="^`mpirun` is not on PATH, and backend=trtllm runs its tensor-parallel ranks"):
        STEP.check(_params(backend="trtllm", tp_size=2))
    STEP.check(_params(backend="trtllm", tp_size=1))  # one rank needs no launcher
    STEP.check(_params(tp_size=2))  # the native engine's ranks run under torchrun, which comes with torch


def test_plan_only_shows_the_command_that_launches_the_ranks(compose_config, tmp_path):
    """As it shows trtllm-build's: nothing else said that a tp_size > 1 evaluation runs its ranks under torchrun."""
    import io

    from rich.console import Console

    from mambapipe.pipeline.runner import run_recipe

    lines = {}
    for tp in (1, 2):
        console = Console(file=io.StringIO(), width=400, color_system=None)
        result = run_recipe(compose_config(f"tp_size={tp}", "plan_only=true"), tmp_path / f"tp{tp}", console=console)
        assert not result.failed, result.reason
        lines[tp] = [line for line in console.file.getvalue().splitlines() if line.startswith("  evaluate: ")]
    assert lines[1] == []
    assert lines[2] == [f"  evaluate: {sys.executable} -m torch.distributed.run --standalone --nproc-per-node=2 -m "
                        "mambapipe.evaluate.worker <staging dir>/.rank_job.json"]
    assert STEP.describe(_params(backend="trtllm", tp_size=4), {}, tmp_path)[0].startswith("mpirun -n 4 ")
