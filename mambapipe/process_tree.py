"""Run a launcher (torchrun, mpirun, trtllm-build) so that a Ctrl-C stops it and every process it started.

A Ctrl-C at the terminal reaches the terminal's foreground process group, but a SIGINT sent to our
process alone (as a sweep job passes one on, or `kill -INT PID`) reaches neither the launcher nor its
ranks, and torchrun starts each rank in a session of its own, out of reach of any group signal. Left
alone they would run on to the end after the runner had removed their staging dir. So a KeyboardInterrupt
here is passed on to the launcher's whole process tree, found through psutil, and the runner sees it only
once every process of the tree has stopped.

The tree is sent SIGTERM, not SIGINT: a rank blocked in a collective whose peer has already exited never
returns to Python to raise KeyboardInterrupt, and torchrun kills such a rank only 30 s after passing the
signal on (measured on two H200s: a SIGINT to torchrun alone stopped a tp_size=2 evaluate in 31 s in two of
three tries). SIGTERM's default action ends a rank wherever it is; nothing in the tree has anything to
save, as the runner removes the step's staging dir.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from typing import IO, Callable, Sequence

import psutil

from mambapipe.pipeline.report import make_console

# How long a process of the tree may outlive the launcher after SIGTERM before it is killed.
STRAGGLER_WAIT_S = 5.0
# How long a stopped tree's output is still read after its launcher has exited.
DRAIN_AFTER_EXIT_S = 2.0


def run_tree(what: str, cmd: Sequence[str], stream: str, on_line: Callable[[str], None], **popen_kwargs) -> int:
    """Run `cmd`, passing each line of its `stream` ("stdout" or "stderr", which the caller pipes in
    `popen_kwargs`) to `on_line`; its exit code. On Ctrl-C the launcher and everything it started are
    sent SIGTERM and waited for, a second Ctrl-C kills them, and the KeyboardInterrupt is raised again.
    `what` names them in the message saying so."""
    with subprocess.Popen(cmd, **popen_kwargs) as proc:
        lines: IO[str] = getattr(proc, stream)
        try:
            for line in lines:
                on_line(line)
        except KeyboardInterrupt:
            make_console().print(f"[yellow]interrupted[/]: waiting for {what} to stop (Ctrl-C again kills them)")
            _stop_tree(proc, lines)
            raise
    return proc.returncode


def _stop_tree(proc: subprocess.Popen, lines: IO[str]) -> None:
    tree = _tree(proc.pid, [])
    _send(tree, signal.SIGTERM)
    # What the tree prints from here on is its shutdown messages and tracebacks: read, not shown.
    drain = threading.Thread(target=_discard, args=(lines,), daemon=True)
    drain.start()
    while True:
        try:
            proc.wait()
            break
        except KeyboardInterrupt:
            tree = _tree(proc.pid, tree)
            _send(tree, signal.SIGKILL)
    _, stragglers = psutil.wait_procs(tree, timeout=STRAGGLER_WAIT_S)
    _send(stragglers, signal.SIGKILL)
    drain.join(timeout=DRAIN_AFTER_EXIT_S)


def _tree(pid: int, known: list[psutil.Process]) -> list[psutil.Process]:
    """The launcher (first) and its descendants, with the `known` ones that have left the tree since."""
    try:
        launcher = psutil.Process(pid)
        found = [launcher, *launcher.children(recursive=True)]
    except psutil.NoSuchProcess:  # the launcher has exited; its orphans are among the known ones
        found = []
    return found + [p for p in known if p not in found]


def _send(processes: list[psutil.Process], signum: int) -> None:
    for process in processes:
        try:
            process.send_signal(signum)  # psutil checks that the pid still names the same process
        except psutil.NoSuchProcess:
            pass


def _discard(lines: IO[str]) -> None:
    try:
        for _ in lines:
            pass
    except (ValueError, OSError):  # the pipe was closed under us: a process outlived DRAIN_AFTER_EXIT_S
        pass
