"""`sweep_job.json`: what the sweep knows about one job beyond the runner's run.json
(exit code, the one-line failure reason, the GPUs it had), read back by the summary.

The record names the run.json it accounts for (by the runner's `finished` stamp in it): a run.json
with another stamp was written later, by a rerun of the job by hand into its run dir, and is the newer.

It also names the sweep the job ran in, by the sha256 of the sweep dir's multirun.yaml, which Hydra rewrites
at the start of every multirun: a job dir whose record names another one was left by an earlier sweep into
the same directory. Contents, not file times, so copies of a sweep dir and reruns by hand keep their jobs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

from mambapipe.pipeline.disk import filling_run_dir
from mambapipe.pipeline.store import write_atomic

JOB_RECORD = "sweep_job.json"
RUN_JSON_STAMP = "run_json_finished"  # the record's key for the `finished` of the run.json it accounts for
SWEEP_CONFIG = "multirun.yaml"  # Hydra's, in the sweep dir
SWEEP_STAMP = "multirun_yaml_sha256"  # the record's key for the digest of the sweep's multirun.yaml
STDOUT_READER_GONE = "stdout_reader_gone"  # the record's key: the job ended with standard output's reader gone
NOT_STARTED = "not_started"  # the record's key: the job found the reader gone first and started no child


def read_job_record(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / JOB_RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


def update_job_record(run_dir: Path, **facts: Any) -> dict[str, Any]:
    """Merge `facts` into the record (the child writes the reason, the parent the exit code); a full disk is a
    DiskFullError naming the job's run dir, as the runner names it for the job's other files."""
    record = {**read_job_record(run_dir), **facts}
    with filling_run_dir(Path(run_dir)):  # whole: a summary may read it meanwhile
        write_atomic(Path(run_dir) / JOB_RECORD, json.dumps(record, indent=2) + "\n")
    return record


def run_json_finished(run_dir: Path) -> Optional[str]:
    """The `finished` stamp of the run dir's run.json; None when there is none (or none to read)."""
    try:
        run = json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return run.get("finished") if isinstance(run, dict) else None


def record_outcome(run_dir: Path, **facts: Any) -> dict[str, Any]:
    """Record the job's outcome (exit code, reason, ...) as accounting for the run.json now in its run dir."""
    return update_job_record(run_dir, **facts, **{RUN_JSON_STAMP: run_json_finished(run_dir)})


def sweep_config_digest(sweep_dir: Path) -> Optional[str]:
    """The sha256 of the sweep dir's multirun.yaml; None when there is none (a sweeper that writes none)."""
    try:
        return digest_of_sweep_config((Path(sweep_dir) / SWEEP_CONFIG).read_bytes())
    except OSError:
        return None


def digest_of_sweep_config(contents: bytes) -> str:
    """What a job's record names its sweep by (SWEEP_STAMP), of multirun.yaml's contents: a job records it and the
    summary compares it (expected.SweepConfig), so both take it from here."""
    return hashlib.sha256(contents).hexdigest()
