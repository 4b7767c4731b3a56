"""`python -m mambapipe` / `mambapipe`: compose the recipe with Hydra and hand it to the runner."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mambapipe.config import register_configs
from mambapipe.pipeline.runner import RunFailed, run_recipe

register_configs()
# configs/ sits beside the package in the source tree (the editable install is the supported one). An
# absolute path, because under `python -m` Hydra would read a relative one as a module path.
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    result = run_recipe(cfg, run_dir=hydra_cfg.runtime.output_dir, overrides=list(hydra_cfg.overrides.task))
    if result.failed:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise RunFailed(result.reason)  # Hydra records the job as failed and carries on with the sweep
        sys.exit(1)
