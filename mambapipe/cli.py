"""`python -m mambapipe` / `mambapipe`: compose the recipe with Hydra and hand it to the runner."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mambapipe.config import register_configs
from mambapipe.pipeline.runner import run_recipe

register_configs()
# configs/ sits beside the package in the source tree (the editable install is the supported one). An
# absolute path, because under `python -m` Hydra would read a relative one as a module path.
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # Each job in its own child process and GPUs; a failure is recorded, never raised (Hydra would
        # stop the sweep), and the sweep summary callback sets the exit code.
        from mambapipe.sweep.job import run_isolated_job
        run_isolated_job(cfg, hydra_cfg)
        return
    result = run_recipe(cfg, run_dir=hydra_cfg.runtime.output_dir, overrides=list(hydra_cfg.overrides.task))
    if result.failed:
        sys.exit(1)
