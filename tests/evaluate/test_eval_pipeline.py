"""The evaluate step through the real runner and native engine: tp 1 in-process, tp 2 under torchrun
via the CLI (which also checks the accuracy gate's exit code)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mambapipe.pipeline.runner import run_recipe

REPO = Path(__file__).resolve().parents[2]
SMALL_EVAL = ("eval.max_ite=2", "eval.output_len=8")
PATH_KEYS = ("kernels", "cuda_graphs", "ssm_state_dtype")  # the native engine's runtime path


def _predictions(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


def test_native_engine_summarize_agrees_with_hf(compose_config, tmp_path):
    overrides = ("model=tiny_mamba", "eval.compare_hf=true", *SMALL_EVAL)
    result = run_recipe(compose_config(*overrides), tmp_path / "run", overrides)
    assert not result.failed, result.reason
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["task"] == "summarize" and metrics["samples"] == 2 and metrics["backend"] == "native"
    # fp32 engine vs fp32 transformers on the same weights: greedy tokens should agree (the engine's
    # own tests bound the logits; a near-tie could flip one late token, hence not == 1.0).
    assert metrics["hf_token_agreement"] >= 0.9
    assert len(_predictions(tmp_path / "run")) == 2
    assert {k: metrics[k] for k in PATH_KEYS} == {"kernels": "torch", "cuda_graphs": False,
                                                  "ssm_state_dtype": "float32"}


def test_metrics_say_which_state_dtype_ran(compose_config, tmp_path):
    overrides = ("model=tiny_mamba2", "build.ssm_state_dtype=bfloat16", "eval.max_ite=1", "eval.output_len=4")
    result = run_recipe(compose_config(*overrides), tmp_path / "run", overrides)
    assert not result.failed, result.reason
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["ssm_state_dtype"] == "bfloat16" and metrics["kernels"] == "torch"


def test_a_new_accuracy_threshold_is_checked_against_the_cached_evaluation(compose_config, tmp_path):
    """A missed gate keeps the evaluation, and a threshold changed alone reuses it: before, the threshold was in the
    evaluation's key and a missed gate cached nothing, so each threshold tried evaluated again."""
    def gated(name: str, threshold: float):
        overrides = ("eval.check_accuracy=true", f"eval.rouge1_threshold={threshold}", *SMALL_EVAL)
        return run_recipe(compose_config(*overrides), tmp_path / name, overrides)

    missed = gated("missed", 15.0)  # random weights score far below it
    assert missed.reason.startswith("evaluate: rouge1 ") and " <= threshold 15.00 " in missed.reason
    passed = gated("passed", -1.0)
    assert not passed.failed and [o.status for o in passed.outcomes] == ["cached"] * 4
    assert (tmp_path / "passed" / "metrics.json").read_bytes() == (tmp_path / "missed" / "metrics.json").read_bytes()


@pytest.mark.slow
def test_tp2_under_torchrun_matches_tp1_and_the_gate_fails_the_run(compose_config, tmp_path):
    cache = tmp_path / "cache"
    tp1 = run_recipe(compose_config(f"cache_dir={cache}", *SMALL_EVAL), tmp_path / "tp1", SMALL_EVAL)
    assert not tp1.failed, tp1.reason
    cmd = [sys.executable, "-m", "mambapipe", f"cache_dir={cache}", f"hydra.run.dir={tmp_path / 'tp2'}",
           "tp_size=2", "eval.check_accuracy=true", *SMALL_EVAL]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    # Random weights score far below the default 15.0 threshold: the run must fail with exit code 1...
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "rouge1" in proc.stdout and "<= threshold 15.00" in proc.stderr.splitlines()[-1]  # the FAILED line
    # ...yet keep its outputs, which equal the single-rank run token for token.
    metrics = json.loads((tmp_path / "tp2" / "metrics.json").read_text())
    assert metrics["tp_size"] == 2 and metrics["rouge1"] <= 15.0
    ours = [p["output_ids"] for p in _predictions(tmp_path / "tp2")]
    assert ours == [p["output_ids"] for p in _predictions(tmp_path / "tp1")]


@pytest.mark.slow
def test_a_damaged_shard_under_tp2_fails_in_one_line_naming_its_rank(compose_config, tmp_path, capfd, monkeypatch):
    """Found by QA: with rank1.safetensors truncated, the run named rank 0's gloo error ('Connection closed by peer',
    its collective having lost rank 1) and printed ~120 lines: both ranks' tracebacks and torchrun's report. Now the
    line is rank 1's own, and the rest is in the run directory's evaluate-ranks.log."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # torchrun's banner says it sets it then
    overrides = ("tp_size=2", "eval.max_ite=1", "eval.output_len=2")
    built = run_recipe(compose_config(*overrides, "steps=[download,convert,build]"), tmp_path / "build")
    assert not built.failed, built.reason
    weights = Path(built.outcomes[2].artifact) / "rank1.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    capfd.readouterr()
    result = run_recipe(compose_config(*overrides), tmp_path / "run", overrides)
    log = tmp_path / "run" / "evaluate-ranks.log"
    assert re.fullmatch(re.escape(f"evaluate: rank 1 of 2 (torchrun -m mambapipe.evaluate.worker, output in {log}) "
                                  f"failed: engine weights {weights} are damaged (") + r"[^\n]*" +
                        re.escape("); rebuild the engine (force=[build])"), result.reason), result.reason
    err = capfd.readouterr().err
    assert "Traceback" not in err and "ChildFailedError" not in err and "OMP_NUM_THREADS" not in err, err
    assert f"[rank1]: engine weights {weights} are damaged" in log.read_text() and "ChildFailedError" in log.read_text()


# A sitecustomize for the ranks of a tp_size=2 evaluation: rank 0's write of metrics.json (through the partial file
# write_atomic writes first) finds the disk full after half of it.
RANK0_FINDS_THE_DISK_FULL = """\
import errno, os, pathlib, sys
if "mambapipe.evaluate.worker" in sys.orig_argv and os.environ.get("RANK") == "0":
    real_write_bytes = pathlib.Path.write_bytes
    def half_written(self, data):
        if self.name != ".metrics.json.partial":
            return real_write_bytes(self, data)
        real_write_bytes(self, data[:len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    pathlib.Path.write_bytes = half_written
"""


@pytest.mark.slow
def test_a_full_disk_met_by_rank_0_fails_the_run_in_the_line_said_at_tp1(compose_config, tmp_path, capfd,
                                                                          monkeypatch):
    """The rank's own line (the mambapipe cache and the setting that moves it, as the runner names it for a tp_size=1
    evaluation), not 'unexpected OSError' from rank 0; nothing of the evaluation left in the cache."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(RANK0_FINDS_THE_DISK_FULL)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))
    overrides = ("tp_size=2", "eval.max_ite=1", "eval.output_len=2")
    result = run_recipe(compose_config(*overrides), tmp_path / "run", overrides)
    log, cache = tmp_path / "run" / "evaluate-ranks.log", tmp_path / "cache"
    assert result.reason == (f"evaluate: rank 0 of 2 (torchrun -m mambapipe.evaluate.worker, output in {log}) failed: "
                             f"no space left on device in the mambapipe cache {cache}: free space there, or set "
                             "cache_dir (or MAMBAPIPE_CACHE) to a directory on a disk with room")
    assert "Traceback" not in capfd.readouterr().err
    assert not any((cache / "evaluate" / ".staging").iterdir()) and not (tmp_path / "run" / "metrics.json").exists()
    assert not [path for path in (cache / "evaluate").iterdir() if not path.name.startswith(".")]
