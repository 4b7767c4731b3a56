"""A Hydra callback (configs/config.yaml's hydra.callbacks) that checks for room on the disk of the run directory,
or of a sweep's, before Hydra writes its own files there: a run's .hydra/ (config.yaml, hydra.yaml, overrides.yaml)
and a sweep's multirun.yaml. Hydra writes them before any code of ours runs, so a full disk there was Hydra's
traceback of an OSError, with an empty file left behind. Its callbacks' hooks come before those writes: on_run_start
before a run's, on_multirun_start before multirun.yaml. A disk that fills in the moment between the check and
Hydra's write still ends in Hydra's report.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ContextManager

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.markup import escape

from mambapipe.pipeline.disk import DiskFullError, check_room, filling_run_dir, filling_sweep_dir
from mambapipe.pipeline.report import make_console, print_diagnostic


class RoomForHydraCallback(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = Path(os.path.abspath(config.hydra.run.dir))  # `${now:...}` resolves once: Hydra's dir too
        _stop_if_full(run_dir, filling_run_dir(run_dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(os.path.abspath(config.hydra.sweep.dir))
        _stop_if_full(sweep_dir, filling_sweep_dir(sweep_dir))


def _stop_if_full(directory: Path, naming: ContextManager[None]) -> None:
    """Check for room in `directory`; a full disk is one line (`naming` says which directory it is), and exit 1:
    SystemExit, which Hydra lets through where it turns a callback's Exception into a warning."""
    try:
        with naming:
            check_room(directory)
    except DiskFullError as exc:
        print_diagnostic(make_console(stderr=True), f"[red]FAILED[/] {escape(str(exc))}")
        raise SystemExit(1) from exc
