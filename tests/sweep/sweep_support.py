"""Fixtures for the sweep tests: hand-made job run dirs (the files a sweep job leaves behind)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import yaml

STEPS = ("download", "convert", "build", "evaluate")


def write_job(sweep_dir: Path, num: int, overrides: list[str], *, dtype: str = "float32",
              model: str = "tiny-mamba2", eval_batch: int = 1, metrics: Optional[dict[str, Any]] = None,
              statuses: tuple[str, ...] = ("ran", "ran", "ran", "ran"), exit_code: Optional[int] = 0,
              reason: Optional[str] = None, multirun_yaml_sha256: Optional[str] = None,
              stopped_at_plan: bool = False, force: tuple[str, ...] = (), arch: Optional[dict[str, Any]] = None,
              environment: Optional[dict[str, Any]] = None, gate_missed: tuple[str, ...] = (),
              gate_verdict: Optional[dict[str, str]] = None) -> Path:
    """A job's run dir; `arch` goes into its config's model, `environment` (versions, git, machine, finished) into
    its run.json, whose steps named in `gate_missed` missed their gate, `gate_verdict` saying what changes it."""
    run_dir = sweep_dir / str(num)
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)  # a later sweep into the same dir writes over a job
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    shape = {"source": "synthetic", "arch": arch} if arch else {}
    config = {"model": {"name": model, **shape}, "dtype": dtype, "tp_size": 1, "backend": "native", "device": "cpu",
              "build": {"max_batch_size": 8}, "eval": {"batch_size": eval_batch, "task": "summarize"},
              "force": list(force)}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    steps = [{"name": n, "key": "k" * 64, "status": s, "seconds": 0.1, "artifact": None,
              "gate_missed": n in gate_missed} for n, s in zip(STEPS, statuses)]
    (run_dir / "run.json").write_text(json.dumps({"steps": steps, "stopped_at_plan": stopped_at_plan,
                                                  **({"gate_verdict": gate_verdict} if gate_verdict else {}),
                                                  **(environment or {})}))
    if metrics is not None:
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    if exit_code is not None:
        record = {"exit_code": exit_code, "reason": reason}
        if multirun_yaml_sha256 is not None:  # the sweep the job ran in, as a job records it
            record["multirun_yaml_sha256"] = multirun_yaml_sha256
        (run_dir / "sweep_job.json").write_text(json.dumps(record))
    return run_dir


def start_sweep(sweep_dir: Path, *overrides: str) -> str:
    """What Hydra does at the start of every multirun: (re)write multirun.yaml. Its sha256, as jobs record it."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    text = "hydra:\n  overrides:\n    task:\n" + "".join(f"    - {o}\n" for o in overrides)
    (sweep_dir / "multirun.yaml").write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()


def summarize_metrics(rouge1: float, tokens_per_s: float, decode_ms: float) -> dict[str, Any]:
    return {"task": "summarize", "rouge1": rouge1, "rouge2": rouge1 / 2, "rougeL": rouge1 * 0.8,
            "rougeLsum": rouge1 * 0.9, "tokens_per_s": tokens_per_s, "decode_ms_per_step": decode_ms,
            "ttft_ms": 12.5}


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    """A sweep of three jobs: two finished (float32, bfloat16), one failed at build."""
    root = tmp_path / "sweep"
    write_job(root, 0, ["recipe=quickstart", "dtype=float32"], metrics=summarize_metrics(21.5, 120.0, 8.0))
    write_job(root, 1, ["recipe=quickstart", "dtype=bfloat16"], dtype="bfloat16",
              metrics=summarize_metrics(20.25, 95.5, 10.0), statuses=("cached", "ran", "ran", "ran"))
    write_job(root, 2, ["recipe=quickstart", "dtype=float16"], dtype="float16",
              statuses=("cached", "ran", "failed", "skipped"), exit_code=1,
              reason="build: max_seq_len 64 < max_input_len 256: raise build.max_seq_len")
    return root


@pytest.fixture
def job_writer() -> Callable[..., Path]:
    return write_job
