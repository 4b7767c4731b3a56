"""Entry point of one evaluation rank under the launcher (tp_size > 1).

    python -m mambapipe.evaluate.worker <job.json>

Started by the evaluate step through `mambapipe.parallel.launch` (torchrun for the native engine,
mpirun for TensorRT-LLM). Every rank runs the same task code; only rank 0 writes files. A rank that fails records
why (mambapipe.parallel.record_failure); a known error (what the step says in one line at tp_size=1 too) it says in
one line rather than a traceback. A full disk is one: rank 0 writes its outputs into the step's staging dir, and so
names the mambapipe cache as the runner does for a step run in-process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mambapipe.parallel import (
    end_with_the_launching_process,
    error_line,
    init_distributed,
    launcher_rank,
    record_failure,
    shutdown_distributed,
)

if TYPE_CHECKING:  # the task's module imports torch, which takes seconds: main starts the rank's watch first
    from mambapipe.evaluate.task import EvalJob


def write_job(job: EvalJob, path: Path) -> None:
    """The job as JSON for the ranks (params are plain values: the runner resolves them so)."""
    path.write_text(json.dumps({"params": job.params, "engine_dir": str(job.engine_dir),
                                "download_dir": str(job.download_dir), "out_dir": str(job.out_dir),
                                "show_progress": job.show_progress, "dataset_revision": job.dataset_revision,
                                "hub_local_only": job.hub_local_only, "dataset_sha256": job.dataset_sha256}))


def read_job(path: Path) -> EvalJob:
    from mambapipe.evaluate.task import EvalJob

    raw = json.loads(path.read_text())
    return EvalJob(raw["params"], Path(raw["engine_dir"]), Path(raw["download_dir"]), Path(raw["out_dir"]),
                   raw["show_progress"], raw["dataset_revision"], raw["hub_local_only"], raw["dataset_sha256"])


def this_rank(job: EvalJob) -> int:
    if job.params["backend"] == "native":
        rank, _ = init_distributed(job.params["device"])
        return rank
    # TensorRT-LLM ranks are MPI ranks; its runtime reads them itself, we only need to know rank 0.
    return launcher_rank()


def main(argv: list[str]) -> int:
    # First, so that a rank whose run is killed during the seconds its imports take still ends within a second.
    end_with_the_launching_process()
    if len(argv) != 1:
        print("usage: python -m mambapipe.evaluate.worker <job.json>", file=sys.stderr)
        return 2
    from mambapipe.backends.base import LimitError
    from mambapipe.evaluate.task import run_evaluation
    from mambapipe.pipeline.disk import filling_cache
    from mambapipe.pipeline.step import StepError
    from mambapipe.pipeline.store import staging_cache

    job = read_job(Path(argv[0]))
    try:
        with filling_cache(staging_cache(job.out_dir)):
            run_evaluation(job, rank=this_rank(job))
    except (StepError, LimitError) as err:
        record_failure(err, known=True)
        print(f"[rank{launcher_rank()}]: {error_line(err)}", file=sys.stderr)
        return 1
    except Exception as err:
        record_failure(err, known=False)
        raise
    finally:
        shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
