"""The child process of one sweep job: `python -m mambapipe.sweep.child RUN_DIR OVERRIDES_JSON`,
the job's resolved config as YAML on stdin. Runs the recipe exactly as a single run would, in a fresh
interpreter (no CUDA state or engine memory carried over from the previous job), and exits 1 on failure
after writing the runner's one-line reason to sweep_job.json."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

from mambapipe.config import MambapipeConfig
from mambapipe.pipeline.runner import run_recipe
from mambapipe.sweep.record import update_job_record


def main(argv: list[str]) -> int:
    run_dir, overrides = Path(argv[0]), json.loads(argv[1])
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(run_dir / "mambapipe.log")])
    # The schema first, so enum- and int-typed keys come back typed as Hydra composed them.
    cfg = OmegaConf.merge(OmegaConf.structured(MambapipeConfig), OmegaConf.create(sys.stdin.read()))
    result = run_recipe(cfg, run_dir, overrides)
    update_job_record(run_dir, reason=result.reason, pid=os.getpid())
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
