"""`sweep_job.json`: what the sweep knows about one job beyond the runner's run.json
(exit code, the one-line failure reason, the GPUs it had), read back by the summary."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

JOB_RECORD = "sweep_job.json"


def read_job_record(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / JOB_RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


def update_job_record(run_dir: Path, **facts: Any) -> dict[str, Any]:
    """Merge `facts` into the record (the child writes the reason, the parent the exit code)."""
    record = {**read_job_record(run_dir), **facts}
    staging = Path(run_dir) / f".{JOB_RECORD}.tmp"
    staging.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(staging, Path(run_dir) / JOB_RECORD)  # a summary made meanwhile never reads half a file
    return record
