"""Run a launcher (torchrun, mpirun, trtllm-build) so that a Ctrl-C stops it and every process it started.

A Ctrl-C at the terminal reaches the terminal's foreground process group, but a SIGINT sent to our process
alone (as a sweep job passes one on, or `kill -INT PID`) reaches neither the launcher nor its ranks, and
torchrun starts each rank in a session of its own (mpirun, Open MPI 4.1, in a process group of its own),
out of reach of any group signal. Left alone they would run on to the end after the runner had removed
their staging dir. So a KeyboardInterrupt here is passed on to the launcher's whole process tree, and the
runner sees it only once every process of the tree has stopped. The tree is found through psutil: the
launcher's descendants, and every process that carries this run's mark in its environment
(`LAUNCHED_BY_ENV`), which also finds a rank that has left the tree because its parent exited. The same
mark lets a rank end itself when we are gone (`parallel`), and run_tree end the ranks of a launcher killed
outright (the OOM killer's SIGKILL), which had no chance to stop them.

The tree is sent SIGTERM, not SIGINT: a rank blocked in a collective whose peer has already exited never
returns to Python to raise KeyboardInterrupt, and torchrun kills such a rank only 30 s after passing the
signal on (measured on two H200s: a SIGINT to torchrun alone stopped a tp_size=2 evaluate in 31 s in two of
three tries). SIGTERM's default action ends a rank wherever it is; nothing in the tree has anything to
save, as the runner removes the step's staging dir.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import IO, Callable, Optional, Sequence

import psutil

# "<pid>:<start time>" of the process that ran the launcher, in the environment of everything it starts.
LAUNCHED_BY_ENV = "MAMBAPIPE_LAUNCHED_BY"
# How long a process of the tree may outlive the launcher after SIGTERM before it is killed.
STRAGGLER_WAIT_S = 5.0


def launched_by_mark() -> str:
    """This process's mark: its pid, and its start time, so that a later process given the pid is not taken for it."""
    me = psutil.Process()
    return f"{me.pid}:{me.create_time()!r}"


def run_tree(what: str, cmd: Sequence[str], stream: str, on_line: Callable[[str], None],
             env: Optional[dict[str, str]] = None, **popen_kwargs) -> int:
    """Run `cmd`, passing each line of its `stream` ("stdout" or "stderr", which the caller pipes in
    `popen_kwargs`) to `on_line`; its exit code. On Ctrl-C the launcher and everything it started are
    sent SIGTERM and waited for, a second Ctrl-C kills them, and the KeyboardInterrupt is raised again.
    `what` names them in the message saying so. Where a signal kills the launcher outright, what it started is
    ended before this returns (_end_orphans)."""
    mark = launched_by_mark()
    with subprocess.Popen(cmd, env={**(env or os.environ), LAUNCHED_BY_ENV: mark}, **popen_kwargs) as proc:
        # The launcher's end is watched beside the loop, not after it: torchrun's ranks write to its stream
        # themselves, so the loop would not end while those a launcher killed outright left running do.
        orphans = threading.Thread(target=_end_orphans, args=(proc, mark), name="mambapipe-orphans", daemon=True)
        orphans.start()
        try:
            for line in getattr(proc, stream):
                on_line(line)
            orphans.join()
        except KeyboardInterrupt:
            _stop_tree(proc, stream, mark, what)
            raise
    return proc.returncode


def _end_orphans(proc: subprocess.Popen, mark: str) -> None:
    """Once the launcher has been ended by a signal it did not handle (the OOM killer's SIGKILL, which leaves it no
    chance to stop its ranks), SIGTERM to the processes carrying `mark`, and SIGKILL to those left STRAGGLER_WAIT_S
    later: left alone they would run on (mpirun's, torchrun's), after the runner has removed their staging dir. A
    launcher that exits, even for a signal it handles (mpirun, torchrun: SIGTERM), has stopped them itself.
    After a Ctrl-C the signal may be _stop_tree's own (SIGTERM to a launcher that does not handle it): this
    thread then sends what _stop_tree sends, to the same processes, and either may reap the launcher (Popen's lock:
    _stop_tree's poll() says None while this thread waits, until this thread has reaped it)."""
    if proc.wait() >= 0:
        return
    orphans = _tree(proc, mark, [])
    _send(orphans, signal.SIGTERM)
    _, left = psutil.wait_procs(orphans, timeout=STRAGGLER_WAIT_S)
    _send(left, signal.SIGKILL)


def _stop_tree(proc: subprocess.Popen, stream: str, mark: str, what: str) -> None:
    """SIGTERM to the tree, then wait for the launcher and, STRAGGLER_WAIT_S at most, for the rest; SIGKILL to
    what is left, or to all of it at a second Ctrl-C. Meanwhile a Ctrl-C only says so: raised as an exception
    it could land before the SIGTERM, or between finding the tree and killing it, and stop nothing."""
    # A plain flag: a handler that took a lock (threading.Event's) could run while this thread holds it.
    again = _Flag()
    previous = signal.signal(signal.SIGINT, again.raise_flag)
    try:
        # Imported here, not at the top: a rank imports this module (through parallel) before its watch starts,
        # and the console's modules (rich, the plan's and so Hydra's) would hold that watch back by most of a
        # second. Imported once the flag is up, so that a second Ctrl-C during the import only says so.
        from mambapipe.pipeline.report import make_console, print_diagnostic

        print_diagnostic(make_console(stderr=True),
                         f"[yellow]interrupted[/]: waiting for {what} to stop (Ctrl-C again kills them)")
        tree = _tree(proc, mark, [])
        _send(tree, signal.SIGTERM)
        # What the tree prints from here on is its shutdown messages and tracebacks: read, not shown. The thread
        # owns the pipe: closing it while a process outside the tree still writes would block on the thread.
        threading.Thread(target=_discard, args=(getattr(proc, stream),), daemon=True).start()
        setattr(proc, stream, None)
        left = _wait_for(proc, tree, again)
        _send(_tree(proc, mark, tree) if again.raised else left, signal.SIGKILL)
        proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


class _Flag:
    raised = False

    def raise_flag(self, signum: int, frame: object) -> None:
        self.raised = True


def _wait_for(proc: subprocess.Popen, tree: list[psutil.Process], again: _Flag) -> list[psutil.Process]:
    """Wait for the launcher, then STRAGGLER_WAIT_S at most for the rest of the tree, or until `again` is raised;
    what is left of the tree."""
    deadline = None
    while not again.raised:
        time.sleep(0.05)
        if proc.poll() is None:
            continue
        _, left = psutil.wait_procs(tree, timeout=0)
        deadline = deadline or time.monotonic() + STRAGGLER_WAIT_S
        if not left or time.monotonic() > deadline:
            return left
    return tree


def _tree(proc: subprocess.Popen, mark: str, known: list[psutil.Process]) -> list[psutil.Process]:
    """The launcher and its descendants (while the launcher has not been reaped: its pid may name another
    process after that), the processes carrying `mark`, and the `known` ones."""
    found: list[psutil.Process] = []
    if proc.returncode is None:
        try:
            launcher = psutil.Process(proc.pid)
            found = [launcher, *launcher.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    for process in psutil.process_iter():
        try:
            if process.environ().get(LAUNCHED_BY_ENV) == mark and process not in found:
                found.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess):  # another user's, or gone meanwhile
            continue
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
    except (ValueError, OSError):
        pass
