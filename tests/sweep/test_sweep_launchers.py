"""Launchers are configuration: the shipped SLURM preset composes onto Hydra's submitit launcher with one
task and tp_size GPUs per job, and the summary callback is registered for every run."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from mambapipe.config import register_configs
from mambapipe.sweep.job import SLURM_LAUNCHER

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def compose_with_hydra(*overrides: str) -> DictConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_slurm_preset_asks_one_task_with_tp_size_gpus():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose_with_hydra("hydra/launcher=mambapipe_slurm", "recipe=codestral_tp2", "hydra.launcher.partition=h200")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == SLURM_LAUNCHER  # whose jobs use their SLURM task's GPUs without leases
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.partition) == (1, 2, "h200")
    assert str(cfg.hydra.launcher.submitit_folder).startswith(str(Path(cfg.hydra.sweep.dir)))


def test_summary_callback_is_registered():
    cfg = compose_with_hydra()
    assert cfg.hydra.callbacks.sweep_summary._target_ == "mambapipe.sweep.callback.SweepSummaryCallback"
