"""Entry point of one evaluation rank under the launcher (tp_size > 1).

    python -m mambapipe.evaluate.worker <job.json>

Started by the evaluate step through `mambapipe.parallel.launch` (torchrun for the native engine,
mpirun for TensorRT-LLM). Every rank runs the same task code; only rank 0 writes files.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from mambapipe.evaluate.task import EvalJob, run_evaluation

MPI_RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")


def write_job(job: EvalJob, path: Path) -> None:
    path.write_text(json.dumps({"params": {k: job.get(k) for k in job.params}, "engine_dir": str(job.engine_dir),
                                "download_dir": str(job.download_dir), "out_dir": str(job.out_dir),
                                "show_progress": job.show_progress}, default=_plain))


def read_job(path: Path) -> EvalJob:
    raw = json.loads(path.read_text())
    return EvalJob(raw["params"], Path(raw["engine_dir"]), Path(raw["download_dir"]), Path(raw["out_dir"]),
                   raw["show_progress"])


def _plain(value: Any) -> Any:
    """JSON for OmegaConf containers that reach params (e.g. eval.scenarios)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value, resolve=True, enum_to_str=True)


def this_rank(job: EvalJob) -> int:
    if job.get("backend") == "native":
        from mambapipe.parallel import init_distributed

        rank, _ = init_distributed(job.get("device"))
        return rank
    # TensorRT-LLM ranks are MPI ranks; its runtime reads them itself, we only need to know rank 0.
    return next((int(os.environ[v]) for v in MPI_RANK_VARIABLES if v in os.environ), 0)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m mambapipe.evaluate.worker <job.json>", file=sys.stderr)
        return 2
    job = read_job(Path(argv[0]))
    run_evaluation(job, rank=this_rank(job))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
