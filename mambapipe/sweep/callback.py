"""Hydra callback (registered in configs/config.yaml under hydra.callbacks): at the end of a multirun,
write the sweep summary and exit non-zero when any job failed.

Jobs never raise (see job.py), so Hydra finishes every job and then calls `on_multirun_end`; Hydra turns
an exception from a callback into a warning, hence `SystemExit` for the exit code. Ctrl-C, standard output's
reader going away, and a full disk in its directory after a job (mambapipe.hydra_dirs) are the ways a sweep ends
early: Hydra then calls no callback, so `mambapipe.app` asks `summarize_interrupted_sweep`,
`summarize_unread_sweep` or `summarize_full_sweep` for the summary of the sweep this callback saw start.
A launcher whose jobs run in other processes (joblib, submitit) is not stopped by the reader going away: this
callback, called then, finds the reader gone itself and summarizes so, where the table would die on the broken pipe.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.console import Console
from rich.markup import escape

from mambapipe.hydra_dirs import SweepDirFull
from mambapipe.pipeline.report import end_quietly_on_broken_pipe, make_console, print_diagnostic
from mambapipe.sweep.expected import JOBLIB_LAUNCHER, SweepConfig
from mambapipe.sweep.job import stdout_reader_gone
from mambapipe.sweep.record import record_outcome
from mambapipe.sweep.report import summarize_sweep, summary_disk_full
from mambapipe.sweep.summary import JobRow, collect_rows, find_sweep_jobs, job_record
from mambapipe.sweep.tables import count_line, print_table

log = logging.getLogger(__name__)
KILLED_BY_JOBLIB = "interrupted: joblib killed it at the Ctrl-C"
# The sweep dir of the multirun running in this process, for the summary after a Ctrl-C (Hydra then
# calls no callback, and its config is gone by the time the interrupt reaches `mambapipe.app`).
_running_sweep_dir: Optional[Path] = None


class SweepSummaryCallback(Callback):
    def __init__(self, plots: bool = True) -> None:
        self.plots = plots
        self.sweep_dir: Optional[Path] = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _running_sweep_dir
        # Resolved once: `${now:...}` in hydra.sweep.dir must give the directory the jobs used.
        self.sweep_dir = _running_sweep_dir = _absolute(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = self.sweep_dir or _absolute(config.hydra.sweep.dir)
        errors = make_console(stderr=True)
        if stdout_reader_gone():  # the launcher ran every job (joblib's): its table would die on the broken pipe
            summarize_unread_sweep(errors, self.plots)
            end_quietly_on_broken_pipe()
        rows = _summarize(make_console(), errors, sweep_dir, self.plots)
        failed = [row.job for row in rows if not row.succeeded]
        if failed:
            print_diagnostic(errors, f"[red]FAILED[/] {len(failed)} of {len(rows)} jobs: {', '.join(failed)}")
            raise SystemExit(1)


def _absolute(sweep_dir: str) -> Path:
    """The sweep dir as every path and command a sweep prints names it, however it was given: absolute, as the jobs'
    run dirs (Hydra's runtime.output_dir), summary.md's paths and the commands that run it again are."""
    return Path(os.path.abspath(sweep_dir))


def summarize_interrupted_sweep(console: Console, errors: Console) -> bool:
    """After a Ctrl-C: the summary of the sweep running in this process on `console`, and on `errors` that it was
    interrupted and how to finish it. False when no sweep is running here (a single run)."""
    if _running_sweep_dir is None:
        return False
    sweep_config = SweepConfig.read(_running_sweep_dir)
    if sweep_config.launcher() == JOBLIB_LAUNCHER:
        _record_jobs_joblib_killed(sweep_config)
    rows = _summarize(console, errors, _running_sweep_dir, plots=True, sweep_config=sweep_config)
    if not rows:
        print_diagnostic(errors, f"[red]INTERRUPTED[/] before any job of the sweep started "
                                 f"({escape(str(_running_sweep_dir))})")
        return True
    print_diagnostic(errors, f"[red]INTERRUPTED[/] {count_line(rows)}")
    resume = sweep_config.resume_command()
    if resume and not all(row.succeeded for row in rows):  # interrupted, not run, or failed: it runs them again
        print_diagnostic(errors, f"finish it (finished steps come from the cache): {escape(resume)}")
    return True


def summarize_unread_sweep(errors: Console, plots: bool = True) -> None:
    """After a job found standard output's reader gone (job.StdoutReaderGone), or the sweep's end did: the summary
    files, without the table, which nobody would read, and on `errors` that the sweep stopped launching jobs (where it
    left some out: submitit's jobs, which print elsewhere, all run) and how to finish it."""
    sweep_config = SweepConfig.read(_running_sweep_dir)
    rows = _summarize(None, errors, _running_sweep_dir, plots=plots, sweep_config=sweep_config)
    summary = escape(str(_running_sweep_dir / "summary.md"))
    stopped = "the sweep launched no further job; " if any(row.not_run for row in rows) else ""
    print_diagnostic(errors, f"[red]FAILED[/] standard output's reader went away (`| head`?): {stopped}"
                             f"{count_line(rows)} summary: {summary}")
    resume = sweep_config.resume_command()
    if resume and not all(row.succeeded for row in rows):
        print_diagnostic(errors, f"finish it (finished steps come from the cache): {escape(resume)}")


def summarize_full_sweep(console: Console, errors: Console, full: SweepDirFull) -> None:
    """After a sweep stopped for its directory's full disk: the table of its jobs on `console` (no summary file:
    there is no room for one), and on `errors` one line of why and how to finish it."""
    sweep_config = SweepConfig.read(full.sweep_dir)
    rows = collect_rows(full.sweep_dir, sweep_config).rows
    if rows:
        print_table(console, rows, full.sweep_dir)
    resume = sweep_config.resume_command() if any(row.not_run for row in rows) else None
    then = (f"finish it (finished steps come from the cache): {resume}" if resume
            else f"mambapipe-sweep summarize {full.sweep_dir}")
    counted = f" ({count_line(rows).rstrip('.')})" if rows else ""
    print_diagnostic(errors, f"[red]FAILED[/] {escape(str(full))}: the sweep stopped{counted}; free space there, "
                             f"then {escape(then)}")


def _record_jobs_joblib_killed(sweep_config: SweepConfig) -> None:
    """Record the jobs joblib killed as interrupted. At a Ctrl-C it kills its workers and their processes before the
    KeyboardInterrupt reaches mambapipe.app: a job of this sweep that recorded its start but no end, and wrote no
    run.json, was killed so, and would read as 'did not finish (killed, or still running)'."""
    for run_dir in find_sweep_jobs(sweep_config.sweep_dir, sweep_config).current:
        record = job_record(run_dir)  # {} when there is none, or none to read: nothing to go on
        ended = record.get("exit_code") is not None or record.get("reason") or (run_dir / "run.json").exists()
        if record and not ended:
            record_outcome(run_dir, reason=KILLED_BY_JOBLIB)


def _summarize(console: Optional[Console], errors: Console, sweep_dir: Path, plots: bool,
               sweep_config: Optional[SweepConfig] = None) -> list[JobRow]:
    """Write the summary files and print the table on `console` (None: nowhere); the rows. A summary that cannot be
    written is said on `errors`, and ends the sweep with exit status 1. `sweep_config`: its multirun.yaml, where read
    already."""
    try:
        rows = summarize_sweep(sweep_dir, plots=plots, sweep_config=sweep_config)
    except Exception as exc:  # results exist but cannot be read back, or the disk is full: not a green sweep
        why = summary_disk_full(exc, sweep_dir)
        if why is None:
            log.error("sweep summary failed", exc_info=True)
            why = (f"could not summarize {sweep_dir}: {type(exc).__name__}: {exc}; after a fix: mambapipe-sweep "
                   f"summarize {sweep_dir}")
        print_diagnostic(errors, f"[red]FAILED[/] {escape(why)}")
        raise SystemExit(1) from exc
    if rows and console is not None:
        print_table(console, rows, sweep_dir)
        console.print(f"summary: {sweep_dir / 'summary.md'}")
    return rows
