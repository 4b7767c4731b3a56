"""Run the quickstart recipe with fake steps in a separate process (concurrency and kill tests).

usage: python fake_run.py CACHE_DIR RUN_DIR JOURNAL BEHAVIOUR_JSON [OVERRIDES...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from pipeline_fakes import fake_steps

from mambapipe.config import register_configs
from mambapipe.pipeline.runner import run_recipe

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"

if __name__ == "__main__":
    cache_dir, run_dir, journal, behaviour, *overrides = sys.argv[1:]
    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"cache_dir={cache_dir}", *overrides])
    result = run_recipe(cfg, run_dir, overrides, steps=fake_steps(Path(journal), **json.loads(behaviour)))
    sys.exit(1 if result.failed else 0)
