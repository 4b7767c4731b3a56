"""The child process of one sweep job: `python -m mambapipe.sweep.child RUN_DIR OVERRIDES_JSON CONFIG_DIRS_JSON`,
the job's resolved config as YAML on stdin. Runs the recipe exactly as a single run would, in a fresh
interpreter (no CUDA state or engine memory carried over from the previous job), and exits 1 on failure
after writing the runner's one-line reason to sweep_job.json (or saying in one line that a full disk kept it from
writing that); 130 when Ctrl-C stopped it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path

from rich.markup import escape

from mambapipe import interrupts
from mambapipe.pipeline.disk import DiskFullError
from mambapipe.pipeline.report import make_console, print_diagnostic
from mambapipe.pipeline.step import INTERRUPTED_EXIT, crash_summary
from mambapipe.redact import RedactingFormatter
from mambapipe.run_log import RunLogHandler
from mambapipe.sweep.record import update_job_record

log = logging.getLogger(__name__)


def main(argv: list[str]) -> int:
    """The job's exit code. The sweep starts this process with SIGINT blocked (see mambapipe.sweep.job), and main
    unblocks it where a Ctrl-C can be reported: one that came before is raised there."""
    run_dir, overrides, config_dirs = Path(argv[0]), json.loads(argv[1]), json.loads(argv[2])
    handlers = [logging.StreamHandler(), RunLogHandler(run_dir / "mambapipe.log")]
    for handler in handlers:  # as configs/hydra/job_logging/mambapipe.yaml formats a single run's records
        handler.setFormatter(RedactingFormatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=handlers)
    for library in ("torch", "httpx", "httpx2"):  # as configs/hydra/job_logging/mambapipe.yaml sets them: see there
        logging.getLogger(library).setLevel(logging.WARNING)
    try:
        return _job(run_dir, overrides, config_dirs)
    except DiskFullError as exc:  # writing sweep_job.json (the runner says its own writes of the run dir)
        print_diagnostic(make_console(stderr=True), f"[red]FAILED[/] {escape(str(exc))}")
        return 1


def _job(run_dir: Path, overrides: list[str], config_dirs: list[str]) -> int:
    try:
        update_job_record(run_dir, pid=os.getpid())
        interrupts.watch()  # as mambapipe.cli does for a single run: a Ctrl-C dropped in a __del__ stops the job too
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        result = _run(run_dir, overrides, config_dirs)
    except KeyboardInterrupt:  # outside any step (a step's own is the runner's to report): imports, the plan
        return _interrupted(run_dir)
    except DiskFullError:
        raise
    except Exception as exc:  # a bug outside any step (those the runner reports itself)
        if interrupts.received():  # or a Ctrl-C that the code it stopped turned into another error (OmegaConf does)
            return _interrupted(run_dir)
        log.error("sweep job crashed", exc_info=True)
        update_job_record(run_dir, reason=crash_summary(exc))
        return 1
    # The run is over and recorded in run.json: a Ctrl-C from here on (this interpreter's shutdown takes a
    # second) would only turn a finished job's exit status into a kill. The launcher's second Ctrl-C still kills.
    interrupts.ignore_from_here()
    try:
        update_job_record(run_dir, reason=result.reason)
    except DiskFullError as exc:  # said, unless the runner's FAILED line has said it or a Ctrl-C is what to report
        if not (result.interrupted or str(exc) in (result.reason or "")):
            raise
    if result.interrupted:
        return INTERRUPTED_EXIT
    return 1 if result.failed else 0


def _interrupted(run_dir: Path) -> int:
    interrupts.ignore_from_here()  # the launcher's second Ctrl-C still kills
    with contextlib.suppress(DiskFullError):  # the Ctrl-C is what to report: the sweep stops at it
        update_job_record(run_dir, reason="interrupted")
    return INTERRUPTED_EXIT


def _run(run_dir: Path, overrides: list[str], config_dirs: list[str]):
    # Imported here, under main's Ctrl-C guard: these imports take a second or more on a cold machine, and a
    # Ctrl-C pressed between two jobs lands in the next job's start as often as anywhere.
    from omegaconf import OmegaConf

    from mambapipe.pipeline.runner import run_recipe

    # Already composed, validated and resolved by Hydra in the parent: plain values suffice.
    return run_recipe(OmegaConf.create(sys.stdin.read()), run_dir, overrides, config_dirs=config_dirs, sweep_job=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
