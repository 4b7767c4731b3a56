"""The sweep job: what `mambapipe.app` does for each job of `python -m mambapipe -m ...`.

Hydra's basic launcher runs every job in one process, and joblib's loky workers are reused, so each job
re-executes the pipeline in a child interpreter (`mambapipe.sweep.child`) pinned to its own GPUs. A
failed job never raises: Hydra's sweeper would stop the sweep at the first failed batch and skip the
summary. Failures are recorded in the job's sweep_job.json, and the summary callback sets the exit code.
Ctrl-C is the exception: the job waits for its child to record where it stopped, records the job as
interrupted, and lets the KeyboardInterrupt stop the sweep (`mambapipe.app` then writes the summary). So does a
Ctrl-C before the child started, and the child starts with SIGINT blocked until it can report one itself. So does
standard output's reader going away (`... | head -3`), with StdoutReaderGone: each later job would die at its
first print, unread. Under joblib the jobs are already handed to its workers, so each one not yet running finds the
reader gone itself and returns without starting its child.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from omegaconf import DictConfig, OmegaConf
from rich.markup import escape

from mambapipe import interrupts
from mambapipe.pipeline.disk import DiskFullError
from mambapipe.pipeline.provenance import utc_now
from mambapipe.pipeline.report import make_console, print_diagnostic
from mambapipe.pipeline.runner import command_line_config_dirs, command_line_overrides
from mambapipe.pipeline.step import INTERRUPTED_EXIT, first_line
from mambapipe.sweep.gpus import lease_gpus
from mambapipe.sweep.record import (
    NOT_STARTED,
    STDOUT_READER_GONE,
    SWEEP_STAMP,
    read_job_record,
    record_outcome,
    sweep_config_digest,
    update_job_record,
)
from mambapipe.sweep.summary import NOT_RUN_UNREAD

GPU_LEASES = ".gpu_leases"
# A Ctrl-C at the terminal reaches the child too; a SIGINT sent to the launcher alone does not, so it is
# passed on when the child has not stopped this long after it.
FORWARD_SIGINT_AFTER_S = 5.0
BASIC_LAUNCHER = f"{BasicLauncher.__module__}.{BasicLauncher.__name__}"  # the default: every job from this process
# Each job a SLURM array task with GPUs of its own (hydra/launcher=submitit_slurm or mambapipe_slurm). Named, not
# imported: the submitit plugin is optional.
SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
READER_GONE_REASON = "standard output's reader went away (`| head`?): the job ended at its next print"


class StdoutReaderGone(BaseException):
    """A sweep job ended with standard output's reader gone: no later job would be read, and each would die at its
    first print. A BaseException, as a Ctrl-C is: Hydra records an Exception as the job's failure and launches the
    next job; this stops its launcher, and mambapipe.app summarizes the sweep."""


def run_isolated_job(cfg: DictConfig, hydra_cfg: DictConfig) -> dict[str, Any]:
    """Run one sweep job in a child process; return (and record) its exit code and failure reason."""
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        return _run_isolated_job(cfg, hydra_cfg, run_dir)
    except KeyboardInterrupt:
        if read_job_record(run_dir).get("exit_code") is None:  # before its child started: the job never ran
            with contextlib.suppress(DiskFullError):  # the Ctrl-C is what to report
                record_outcome(run_dir, exit_code=INTERRUPTED_EXIT, reason="interrupted")
        raise  # Hydra launches no further job; mambapipe.app summarizes the sweep
    except DiskFullError as exc:  # its sweep_job.json: raised, it would stop the sweep in Hydra's traceback
        print_diagnostic(make_console(stderr=True), f"[red]FAILED[/] sweep job {hydra_cfg.job.num}: {escape(str(exc))}")
        return {"exit_code": 1, "reason": str(exc)}


def _run_isolated_job(cfg: DictConfig, hydra_cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    overrides = command_line_overrides(hydra_cfg.overrides.task)
    job_num = int(hydra_cfg.job.num)
    sweep_dir = sweep_dir_of(hydra_cfg)
    # Hydra wrote the sweep's multirun.yaml before launching any job: naming it marks this dir as this sweep's. A
    # resumed sweep's job finds the record of its last run, whose reader may have gone: this run has not seen it go.
    update_job_record(run_dir, job_num=job_num, overrides=overrides, host=socket.gethostname(),
                      launcher_pid=os.getpid(), reason=None, exit_code=None,
                      **{SWEEP_STAMP: sweep_config_digest(sweep_dir), NOT_STARTED: False, STDOUT_READER_GONE: False})
    if stdout_reader_gone():  # already (joblib hands its workers every job at once): the child would die unread
        outcome = record_outcome(run_dir, reason=NOT_RUN_UNREAD, **{NOT_STARTED: True, STDOUT_READER_GONE: True})
        _stop_basic_launcher(hydra_cfg)
        return outcome
    try:
        config_yaml = OmegaConf.to_yaml(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    except Exception as exc:  # an interpolation that cannot resolve: this job's config is bad
        if interrupts.received():  # unless a Ctrl-C stopped OmegaConf, which then may raise another error for it
            raise KeyboardInterrupt from exc
        return record_outcome(run_dir, exit_code=1, reason=f"config: {type(exc).__name__}: {first_line(exc)}")
    uses_gpu = cfg.device != "cpu"
    with lease_gpus(job_num, int(cfg.tp_size), sweep_dir / GPU_LEASES, visible=None if uses_gpu else [],
                    own_allocation=hydra_cfg.launcher._target_ == SLURM_LAUNCHER) as gpus:
        env = dict(os.environ) if gpus is None else {**os.environ, "CUDA_VISIBLE_DEVICES": gpus}
        update_job_record(run_dir, cuda_visible_devices=gpus, started=utc_now())
        started = time.perf_counter()
        config_dirs = command_line_config_dirs(hydra_cfg.runtime.config_sources)
        child, interrupted = _start_child([sys.executable, "-m", "mambapipe.sweep.child", str(run_dir),
                                           json.dumps(overrides), json.dumps(config_dirs)], env, config_yaml)
        interrupted = _wait_through_interrupts(child, job_num, interrupted)
        reader_gone = stdout_reader_gone()
        # Recorded before the lease is let go: a Ctrl-C there finds the job's end, not a job stopped before its child.
        outcome = _record_exit(run_dir, child.returncode, time.perf_counter() - started, interrupted, reader_gone)
    if interrupted:
        raise KeyboardInterrupt
    if reader_gone:
        _stop_basic_launcher(hydra_cfg)
    return outcome


def _stop_basic_launcher(hydra_cfg: DictConfig) -> None:
    """Raise StdoutReaderGone under the basic launcher. Another launcher's jobs run in other processes, where it
    would only fail this job: each of them checks the reader before starting its child instead."""
    if hydra_cfg.launcher._target_ == BASIC_LAUNCHER:
        raise StdoutReaderGone


def stdout_reader_gone() -> bool:
    """Whether standard output, which the jobs' children share, is a pipe whose reader has closed it, asked without
    writing: poll reports POLLERR on a pipe's write end once no reader is left (Linux), POLLHUP on a terminal hung up;
    a file, or a reader still there, neither."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by an object without one (a StringIO), or closed
        return False
    poller = select.poll()
    poller.register(fd, 0)  # no event asked for: POLLERR and POLLHUP are reported regardless
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _start_child(command: list[str], env: dict[str, str], config_yaml: str) -> tuple[subprocess.Popen, bool]:
    """The job's child process, handed its config, and whether a Ctrl-C came meanwhile. This thread blocks SIGINT
    meanwhile, and the child inherits the mask: a Ctrl-C during its interpreter's start-up (site, the imports) would
    be a traceback, so it unblocks SIGINT once it can report one (mambapipe.sweep.child). Here one is taken off rather
    than raised, which could lose the child the job must wait for. (The basic launcher's process and joblib's workers
    have no other thread that could take the signal instead.)"""
    unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        child = subprocess.Popen(command, stdin=subprocess.PIPE, text=True, env=env)
        _send_config(child, config_yaml)
    finally:
        interrupted = signal.SIGINT in signal.sigpending()
        if interrupted:
            signal.sigwait({signal.SIGINT})
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
    return child, interrupted


def _send_config(child: subprocess.Popen, config_yaml: str) -> None:
    try:
        child.stdin.write(config_yaml)
        child.stdin.close()
    except BrokenPipeError:  # the child is already gone; its exit code says why
        pass


def _wait_through_interrupts(child: subprocess.Popen, job_num: int, interrupted: bool = False) -> bool:
    """Wait until the child has ended; whether Ctrl-C came meanwhile (or `interrupted`: as it started). After the
    first Ctrl-C the child records its step as interrupted and removes what it half made, so wait for it; a second
    one kills it."""
    if interrupted:
        _say_interrupting(job_num)
    forwarded = False
    while True:
        try:
            child.wait(timeout=FORWARD_SIGINT_AFTER_S if interrupted and not forwarded else None)
            return interrupted
        except subprocess.TimeoutExpired:  # the SIGINT was this process's alone
            child.send_signal(signal.SIGINT)
            forwarded = True
        except KeyboardInterrupt:
            if interrupted:
                child.kill()
            else:
                _say_interrupting(job_num)
            interrupted = True


def _say_interrupting(job_num: int) -> None:
    print_diagnostic(make_console(stderr=True),
                     f"[yellow]interrupting[/] sweep job {job_num}: waiting for it to stop (Ctrl-C again kills it)")


def sweep_dir_of(hydra_cfg: DictConfig) -> Path:
    """The sweep dir this job's output dir was made from (Hydra: sweep.dir / sweep.subdir); read back
    from the output dir, since re-resolving `${now:...}` in a launcher's worker could name another."""
    output_dir, subdir = Path(hydra_cfg.runtime.output_dir), Path(str(hydra_cfg.sweep.subdir))
    return Path(*output_dir.parts[:len(output_dir.parts) - len(subdir.parts)])


def _record_exit(run_dir: Path, code: int, seconds: float, interrupted: bool = False,
                 reader_gone: bool = False) -> dict[str, Any]:
    facts: dict[str, Any] = {"exit_code": code, "seconds": round(seconds, 3), STDOUT_READER_GONE: reader_gone}
    if code != 0:
        facts["reason"] = _exit_reason(read_job_record(run_dir).get("reason"), code, interrupted, reader_gone)
    return record_outcome(run_dir, **facts)


def _exit_reason(child_reason: str | None, code: int, interrupted: bool, reader_gone: bool) -> str:
    if interrupted and code == -signal.SIGKILL:
        return "interrupted: killed by a second Ctrl-C"
    if interrupted and code == -signal.SIGINT:  # stopped where the child could not catch it
        return child_reason or "interrupted"
    if reader_gone and code == 1 and not child_reason:  # rich ends a print to it so, without a word
        return READER_GONE_REASON
    if code < 0:  # killed by a signal (the OOM killer sends SIGKILL): the child wrote no reason
        return f"job process killed by signal {-code}"
    return child_reason or ("interrupted" if interrupted else f"job process exited with code {code}")

