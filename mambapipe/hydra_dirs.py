"""A Hydra callback (configs/config.yaml's hydra.callbacks) that checks for room on the disk of the run directory,
or of a sweep's, before Hydra writes its own files there: a run's .hydra/ (config.yaml, hydra.yaml, overrides.yaml)
and a sweep's multirun.yaml. Hydra writes them before any code of ours runs, so a full disk there was Hydra's
traceback of an OSError, with an empty file left behind. Its callbacks' hooks come before those writes: on_run_start
before a run's, on_multirun_start before multirun.yaml, and a sweep job's on_job_end before the next job's .hydra/.
A disk that fills in the moment between the check and Hydra's write still ends in Hydra's report. The same check
finds a directory that cannot be made or written at all (read-only, not the user's, below a file, under /proc),
which was Hydra's traceback of the OSError too: one line naming it and why, and the setting that moves it.

A sweep whose directory's disk fills stops after the job that ended, in one line (SweepDirFull, which mambapipe.app
reports), not in a failure of every job left. Only where the jobs run in the sweep's own process (Hydra's basic
launcher): joblib's workers and submitit's jobs call on_job_end in processes of their own, where each job that finds
the disk full still fails on its own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ContextManager, NoReturn, Optional

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig
from rich.markup import escape

from mambapipe.pipeline.disk import (
    DiskFullError,
    check_room,
    filling_run_dir,
    filling_sweep_dir,
    full_disk,
    why_unwritable,
)
from mambapipe.pipeline.report import make_console, print_diagnostic


class SweepDirFull(BaseException):
    """No room left in a running sweep's directory after one of its jobs: raised between two jobs to stop the sweep,
    as a KeyboardInterrupt stops it, and reported by mambapipe.app. A BaseException: Hydra turns a callback's
    Exception into a warning, and would go on to the next job, whose .hydra/ does not fit."""

    def __init__(self, said: str, sweep_dir: Path) -> None:
        super().__init__(f"{said} in the sweep directory {sweep_dir}")
        self.sweep_dir = sweep_dir


class RoomForHydraCallback(Callback):
    def __init__(self) -> None:
        self.sweep_dir: Optional[Path] = None
        self.sweep_pid: Optional[int] = None  # the process that started the sweep

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = Path(os.path.abspath(config.hydra.run.dir))  # `${now:...}` resolves once: Hydra's dir too
        _stop_unless_writable(run_dir, filling_run_dir(run_dir), "run")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir, self.sweep_pid = Path(os.path.abspath(config.hydra.sweep.dir)), os.getpid()
        _stop_unless_writable(self.sweep_dir, filling_sweep_dir(self.sweep_dir), "sweep")

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN or self.sweep_pid != os.getpid():  # a single run; another process
            return
        try:
            check_room(self.sweep_dir)
        except OSError as exc:
            said = full_disk(exc)
            if said is None:  # not ours to judge here: the next job's own writes will say what it is
                return
            raise SweepDirFull(said, self.sweep_dir) from exc


def _stop_unless_writable(directory: Path, naming: ContextManager[None], which: str) -> None:
    """Check for room in `directory` (Hydra's hydra.`which`.dir: run or sweep), making it where missing; a full disk
    (`naming` says which directory it is), or a directory that cannot be made or written, is one line, and exit 1."""
    try:
        with naming:
            check_room(directory)
    except DiskFullError as exc:
        _stop(str(exc), exc)
    except OSError as exc:  # not a full disk: a place Hydra could not make or write either
        why = why_unwritable(directory, exc)
        _stop(f"the {which} directory {directory} {why}; set hydra.{which}.dir to a directory you can write to", exc)


def _stop(said: str, cause: BaseException) -> NoReturn:
    """`said` on standard error, and exit 1: SystemExit, which Hydra lets through where it turns a callback's
    Exception into a warning."""
    print_diagnostic(make_console(stderr=True), f"[red]FAILED[/] {escape(said)}")
    raise SystemExit(1) from cause
