"""A launcher and what it starts stop together on Ctrl-C, even when the SIGINT reached our process alone and the
ranks run in sessions of their own (as torchrun starts them)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from mambapipe.process_tree import LAUNCHED_BY_ENV, STRAGGLER_WAIT_S, run_tree

# A launcher that starts one "rank" in a session of its own, both writing their pids and sleeping; argv: pid file,
# then how they take the SIGTERM a Ctrl-C sends: "default" (it ends them), "ignore" (both ignore it), "rank-ignores",
# "orphan" (the launcher exits at once, leaving the rank to init, holding the output pipe), or "stray" (besides,
# a process outside the tree and without the mark holds the pipe, its pid written third).
LAUNCHER = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    mode = sys.argv[2]
    if mode in ("ignore", "rank-ignores"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    rank = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    if mode == "rank-ignores":
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    pids = [os.getpid(), rank.pid]
    if mode == "stray":  # started by a process that exits at once: it is left to init, outside the tree
        unmarked = {k: v for k, v in os.environ.items() if k != "MAMBAPIPE_LAUNCHED_BY"}
        starter = ("import subprocess, sys; stray = subprocess.Popen([sys.executable, '-c', 'import time; "
                   "time.sleep(120)']); open(sys.argv[1], 'w').write(str(stray.pid))")
        subprocess.run([sys.executable, "-c", starter, sys.argv[1] + ".stray"], env=unmarked, check=True)
        pids.append(int(open(sys.argv[1] + ".stray").read()))
    with open(sys.argv[1], "w") as f:
        f.write(" ".join(map(str, pids)))
    print("ranks started", flush=True)
    time.sleep(0 if mode == "orphan" else 120)
""")
# Our side: run the launcher as parallel.launch runs torchrun, saying its exit code; exit 130 when the
# KeyboardInterrupt comes back.
DRIVER = textwrap.dedent("""
    import subprocess, sys
    from mambapipe.process_tree import STRAGGLER_WAIT_S, run_tree
    try:
        code = run_tree("the launcher", [sys.executable, "-c", sys.argv[1], *sys.argv[2:]], "stdout", print,
                        stdout=subprocess.PIPE, text=True)
        print("exit code", code)
    except KeyboardInterrupt:
        sys.exit(130)
""")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def _start_driver(tmp_path: Path, on_sigint: str) -> tuple[subprocess.Popen, list[int]]:
    pid_file = tmp_path / "pids"
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, LAUNCHER, str(pid_file), on_sigint],
                              start_new_session=True, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert driver.stdout.readline() == "ranks started\n"
    return driver, [int(pid) for pid in pid_file.read_text().split()]


def _wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if _alive(pid)]


def test_lines_reach_the_callback_and_the_exit_code_comes_back():
    lines: list[str] = []
    child = "import sys; print('a'); print('b', file=sys.stderr); sys.exit(3)"
    code = run_tree("a child", [sys.executable, "-c", child], "stderr", lines.append, stderr=subprocess.PIPE,
                     text=True)
    assert (code, lines) == (3, ["b\n"])


def test_a_sigint_to_our_process_alone_stops_the_launcher_and_its_ranks(tmp_path):
    driver, pids = _start_driver(tmp_path, on_sigint="default")
    os.kill(driver.pid, signal.SIGINT)  # not the group: as a sweep job passes a Ctrl-C on
    assert driver.wait(timeout=20) == 130
    assert _wait_gone(pids) == []


def test_a_rank_that_ignores_sigterm_is_killed_after_the_launcher_has_stopped(tmp_path):
    driver, pids = _start_driver(tmp_path, on_sigint="rank-ignores")
    started = time.monotonic()
    os.kill(driver.pid, signal.SIGINT)
    assert driver.wait(timeout=20) == 130 and _wait_gone(pids, timeout=1) == []
    assert time.monotonic() - started >= STRAGGLER_WAIT_S - 0.5  # it was given its time to stop


def test_a_second_ctrl_c_while_a_rank_lingers_kills_it_at_once(tmp_path):
    driver, pids = _start_driver(tmp_path, on_sigint="rank-ignores")
    os.kill(driver.pid, signal.SIGINT)
    time.sleep(1.0)
    started = time.monotonic()
    os.kill(driver.pid, signal.SIGINT)
    assert driver.wait(timeout=20) == 130 and _wait_gone(pids, timeout=1) == []
    assert time.monotonic() - started < STRAGGLER_WAIT_S - 1


def test_two_quick_ctrl_cs_still_stop_the_tree(tmp_path):
    """The second lands while the first is being handled: it must kill, not cut the handling short."""
    driver, pids = _start_driver(tmp_path, on_sigint="rank-ignores")
    os.kill(driver.pid, signal.SIGINT)
    time.sleep(0.005)
    os.kill(driver.pid, signal.SIGINT)
    assert driver.wait(timeout=20) == 130 and _wait_gone(pids, timeout=2) == []


def test_a_process_outside_the_tree_holding_the_pipe_does_not_hang_the_stop(tmp_path):
    """Nothing can find it, and the pipe it holds open must not be closed under the thread reading it, even when
    a second Ctrl-C cuts the wait short."""
    driver, pids = _start_driver(tmp_path, on_sigint="stray")
    try:
        os.kill(driver.pid, signal.SIGINT)
        time.sleep(0.5)
        os.kill(driver.pid, signal.SIGINT)
        assert driver.wait(timeout=20) == 130 and _wait_gone(pids[:2]) == []
    finally:
        os.kill(pids[2], signal.SIGKILL)  # alive: nothing could find it


def test_a_rank_whose_launcher_has_exited_is_still_found_by_its_mark(tmp_path):
    """Reparented to init, it is no longer the launcher's descendant, and it still holds the output pipe."""
    driver, pids = _start_driver(tmp_path, on_sigint="orphan")
    _wait_gone(pids[:1])
    os.kill(driver.pid, signal.SIGINT)
    assert driver.wait(timeout=20) == 130 and _wait_gone(pids) == []


def test_a_launcher_killed_outright_leaves_no_rank_behind(tmp_path):
    """SIGKILL (the OOM killer's) leaves the launcher no chance to stop its rank, which ran on and, holding the output
    pipe as torchrun's ranks do, kept run_tree waiting for it (120 s here; a real torchrun's ranks likewise)."""
    driver, pids = _start_driver(tmp_path, on_sigint="default")
    try:
        os.kill(pids[0], signal.SIGKILL)
        out, _ = driver.communicate(timeout=STRAGGLER_WAIT_S)
        # stripped: print's own newline after the launcher's line is left here, unless _start_driver's read took it
        assert out.strip() == "exit code -9" and _wait_gone(pids, timeout=1) == []
    finally:  # what a failure leaves
        for pid in [driver.pid, *pids]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_second_ctrl_c_kills_a_group_that_ignores_the_first(tmp_path):
    driver, pids = _start_driver(tmp_path, on_sigint="ignore")
    os.kill(driver.pid, signal.SIGINT)
    time.sleep(1.0)
    assert driver.poll() is None and _alive(pids[0])  # the launcher is let finish its own shutdown
    os.kill(driver.pid, signal.SIGINT)
    assert driver.wait(timeout=20) == 130
    assert _wait_gone(pids) == []


SLEEPING_RANK = textwrap.dedent("""
    import os, sys, time
    from mambapipe.parallel import init_distributed
    init_distributed("cpu")
    with open(os.path.join(sys.argv[1], f"rank{os.environ['RANK']}"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)
""")
LAUNCHING_DRIVER = textwrap.dedent("""
    import sys
    from mambapipe.parallel import launch
    try:
        launch(2, "sleeping_rank", [sys.argv[1]])
    except KeyboardInterrupt:
        sys.exit(130)
""")


def _launch_sleeping_ranks(tmp_path: Path) -> tuple[subprocess.Popen, list[int]]:
    """Two torchrun ranks launched as the evaluate step launches its own, once both are running."""
    (tmp_path / "sleeping_rank.py").write_text(SLEEPING_RANK)
    driver = subprocess.Popen([sys.executable, "-c", LAUNCHING_DRIVER, str(tmp_path)], start_new_session=True,
                              stderr=subprocess.DEVNULL,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])})
    pid_files = [tmp_path / "rank0", tmp_path / "rank1"]
    deadline = time.monotonic() + 60
    while not all(f.is_file() and f.read_text() for f in pid_files) and time.monotonic() < deadline:
        time.sleep(0.1)
    return driver, [int(f.read_text()) for f in pid_files]


def test_torchrun_ranks_stop_with_a_sigint_to_our_process_alone(tmp_path):
    """The same through mambapipe.parallel.launch and a real torchrun."""
    driver, pids = _launch_sleeping_ranks(tmp_path)
    os.kill(driver.pid, signal.SIGINT)
    assert driver.wait(timeout=30) == 130
    assert _wait_gone(pids) == []


def test_ranks_end_themselves_when_the_launching_process_is_killed(tmp_path):
    """kill -9 (or the OOM killer) leaves the launching process no chance to stop its ranks. Not reaped here until
    the end, it stays a zombie meanwhile, as under a parent slow to read its status."""
    driver, pids = _launch_sleeping_ranks(tmp_path)
    os.kill(driver.pid, signal.SIGKILL)
    assert _wait_gone(pids) == []
    driver.wait(timeout=10)


# The evaluate step's rank as torchrun starts it, with its import of torch held (as it takes seconds on a busy
# machine), saying so in the file argv[1] names.
RANK_IMPORTING_TORCH = textwrap.dedent("""
    import runpy, sys, time
    marker = sys.argv.pop(1)

    class SlowTorch:
        def find_spec(self, name, path, target=None):
            if name == "torch":
                open(marker, "w").close()
                time.sleep(120)

    sys.meta_path.insert(0, SlowTorch())
    runpy.run_module("mambapipe.evaluate.worker", run_name="__main__", alter_sys=True)
""")


def test_a_rank_still_importing_torch_ends_itself_when_the_launching_process_is_killed(tmp_path):
    """The watch starts before the rank's heavy imports: started only by init_distributed, after them, it left a
    rank of a run killed in its first seconds running for seconds more."""
    caller = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    mark = f"{caller.pid}:{psutil.Process(caller.pid).create_time()!r}"
    marker = tmp_path / "importing-torch"
    rank = subprocess.Popen([sys.executable, "-c", RANK_IMPORTING_TORCH, str(marker), str(tmp_path / "job.json")],
                            env={**os.environ, LAUNCHED_BY_ENV: mark})
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and rank.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the rank never came to import torch"
        caller.kill()
        caller.wait()
        assert rank.wait(timeout=10) == 1
    finally:
        for process in (caller, rank):
            process.kill()
            process.wait()
