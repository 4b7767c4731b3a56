"""The jobs a sweep was asked to run, read back from its multirun.yaml, so a summary made after an
interrupted sweep can list the jobs that never started (they left no run dir to read).

Only Hydra's basic sweeper (the default) numbers its jobs in an order we can re-derive: its sweep
parameters (`hydra.sweeper.params`, then the command line's task overrides) expanded as it expands them.
For any other sweeper, or a multirun.yaml that cannot be read, the jobs are unknown (None)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra import initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_loader import ConfigLoader
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from mambapipe.config import CONFIG_DIR
from mambapipe.sweep.record import SWEEP_CONFIG

log = logging.getLogger(__name__)
BASIC_SWEEPER = f"{BasicSweeper.__module__}.{BasicSweeper.__name__}"
DEFAULT_SUBDIR = "${hydra.job.num}"


@dataclass(frozen=True)
class ExpectedJob:
    num: int  # Hydra's hydra.job.num
    overrides: list[str]
    run_dir: Optional[Path]  # where the job writes; None unless hydra.sweep.subdir is the default


def read_sweep_config(sweep_dir: Path) -> Optional[dict[str, Any]]:
    """The `hydra` part of the sweep's multirun.yaml as plain values, interpolations left as written (as
    Hydra's sweeper reads its arguments: `${hydra.job.num}` in an override means each job's own number);
    None when there is none or it cannot be read."""
    try:
        hydra = OmegaConf.to_container(OmegaConf.load(Path(sweep_dir) / SWEEP_CONFIG), resolve=False)["hydra"]
    except Exception as exc:  # noqa: BLE001 - OSError, YAML and OmegaConf errors alike: unknown
        log.debug("cannot read %s of %s: %s", SWEEP_CONFIG, sweep_dir, exc)
        return None
    return hydra if isinstance(hydra, dict) else None


def expected_jobs(sweep_dir: Path) -> Optional[list[ExpectedJob]]:
    """Every job of the sweep that last ran in `sweep_dir`, in job order; None when that cannot be known."""
    hydra = read_sweep_config(sweep_dir)
    try:
        if hydra["sweeper"]["_target_"] != BASIC_SWEEPER:
            return None
        arguments = [f"{key}={value}" for key, value in (hydra["sweeper"].get("params") or {}).items()]
        jobs = _expand(arguments + list(hydra["overrides"]["task"]))
        subdir = hydra["sweep"].get("subdir")
    except Exception as exc:  # noqa: BLE001 - a summary without the never-started jobs beats no summary
        log.debug("the jobs of %s are not known: %s", sweep_dir, exc)
        return None
    numbered_dirs = subdir == DEFAULT_SUBDIR
    return [ExpectedJob(num, overrides, Path(sweep_dir) / str(num) if numbered_dirs else None)
            for num, overrides in enumerate(jobs)]


def _expand(arguments: list[str]) -> list[list[str]]:
    """The overrides of each job, as the basic sweeper expands `arguments` (batch after batch)."""
    parser = OverridesParser.create(config_loader=_config_loader())  # glob(...) lists a group's options
    batches = BasicSweeper.split_arguments(parser.parse_overrides(arguments), max_batch_size=None)
    return [job for batch in batches for job in batch]


def _config_loader() -> ConfigLoader:
    """The running app's config loader; outside one (`mambapipe-sweep summarize`), one for our configs."""
    if GlobalHydra.instance().is_initialized():
        return GlobalHydra.instance().config_loader()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return GlobalHydra.instance().config_loader()
