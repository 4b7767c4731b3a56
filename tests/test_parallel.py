"""mambapipe.parallel.launch names the rank that failed first for a reason of its own, from the records its ranks
write (record_failure), and keeps the other ranks' and the launcher's reports of that failure off the terminal; the
ranks' environment. Real launches: tests/engine/test_engine_tp.py and tests/evaluate/test_eval_pipeline.py."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import signal
import socket
import tempfile
from pathlib import Path

import pytest
import torch

from mambapipe import parallel
from mambapipe.parallel import FAILURES_ENV, launch, rank_environment, record_failure
from mambapipe.pipeline.step import StepError

DAMAGED = "engine weights /c/build/k/rank1.safetensors are damaged (invalid header); rebuild the engine (force=[build])"


def _record(failures: Path, rank: int, when: float, line: str, known: bool, from_a_peer: bool) -> None:
    (failures / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "time": when, "line": line, "known": known,
                                                          "from_a_peer": from_a_peer, "traceback": f"tb {rank}\n"}))


def _fake_launcher(monkeypatch, script, code=1):
    """run_tree stands in for torchrun: `script(on_line, failures_dir)` plays what the ranks do; exit code `code`."""
    def fake_run_tree(what, cmd, stream, on_line, env, **popen_kwargs):
        script(on_line, Path(env[FAILURES_ENV]))
        return code

    monkeypatch.setattr(parallel, "run_tree", fake_run_tree)


def test_the_rank_failing_for_its_own_reason_is_named_not_the_peer_that_lost_it(tmp_path, monkeypatch, capsys):
    """Rank 0's collective failed first (its peer had gone) and torchrun names rank 0; rank 1's damaged weights are
    the cause. What follows the first record (tracebacks, torchrun's report) goes to the log alone."""
    def ranks(say, failures):
        say("progress 1/3\n")
        _record(failures, 0, 100.0, "unexpected RuntimeError: Connection closed by peer", False, True)
        say("[rank0]: Traceback (most recent call last):\n")
        _record(failures, 1, 100.5, DAMAGED, True, False)
        say(f"[rank1]: {DAMAGED}\n")
        say("Root Cause (first observed failure):\n")
        say("  rank      : 0 (local_rank: 0)\n")

    _fake_launcher(monkeypatch, ranks)
    log_file = tmp_path / "evaluate-ranks.log"
    with pytest.raises(StepError) as failed:
        launch(2, "mambapipe.evaluate.worker", ["job.json"], log_file=log_file)
    assert str(failed.value) == (f"rank 1 of 2 (torchrun -m mambapipe.evaluate.worker, output in {log_file}) failed: "
                                 f"{DAMAGED}")
    assert capsys.readouterr().err == "progress 1/3\n"
    log = log_file.read_text()
    assert log.startswith("progress 1/3\n[rank0]: Traceback") and log.endswith("rank      : 0 (local_rank: 0)\n")


def test_the_records_are_looked_for_where_a_rank_starts_a_report_not_on_every_line(tmp_path, monkeypatch):
    """Ranks write progress to standard error all run long: the failures dir is looked at for none of those lines,
    only for one that starts a report of a failure, which a rank writes after its record."""
    looked = []
    real_glob = Path.glob  # each look is noted with the line being shown (the loops' `line`)
    monkeypatch.setattr(Path, "glob", lambda path, pattern: looked.append(line) or real_glob(path, pattern))
    output = parallel._RankOutput(tmp_path, io.StringIO())
    for line in ["progress 1/3\n"] * 50 + ["[rank0]:[W1201 ProcessGroup.cpp] Warning: ...\n", "progress 2/3\n"]:
        output.show(line)
    assert looked == ["[rank0]:[W1201 ProcessGroup.cpp] Warning: ...\n"] and not output.quiet
    _record(tmp_path, 1, 1.0, DAMAGED, True, False)
    for line in (f"[rank1]: {DAMAGED}\n", "Traceback (most recent call last):\n", "progress 3/3\n"):
        output.show(line)
    assert looked[1:] == [f"[rank1]: {DAMAGED}\n"] and output.quiet


def test_with_every_failure_a_peers_the_first_is_named_with_its_traceback(tmp_path, monkeypatch, caplog):
    def ranks(say, failures):
        _record(failures, 1, 7.0, "unexpected RuntimeError: Connection reset", False, True)
        _record(failures, 0, 5.0, "unexpected RuntimeError: Connection closed by peer", False, True)

    _fake_launcher(monkeypatch, ranks)
    with pytest.raises(StepError, match=r"^rank 0 of 2 \(torchrun -m m, output in .*\) failed: unexpected "
                                        r"RuntimeError: Connection closed by peer$"):
        launch(2, "m", log_file=tmp_path / "log")
    assert "rank 0 failed:\ntb 0" in caplog.text  # a crash's traceback, as the runner logs a step's


def test_without_records_the_launchers_output_names_the_rank(monkeypatch, capsys):
    """A rank killed by a signal records nothing; without a log file everything stays on standard error."""
    def ranks(say, failures):
        say("[rank1]: MemoryError: out of memory\n")
        say("Root Cause (first observed failure):\n")
        say("  rank      : 1 (local_rank: 1)\n")

    _fake_launcher(monkeypatch, ranks)
    with pytest.raises(StepError, match=r"^rank 1 of 2 \(torchrun -m m\) failed: MemoryError: out of memory$"):
        launch(2, "m")
    assert capsys.readouterr().err.count("\n") == 3


# What torchrun (torch 2.13) wrote when rank 1 of 2 killed itself with SIGKILL amid gloo all-reduces (abridged).
TORCHRUN_RANK1_KILLED = """\
[rank0]: RuntimeError: [../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:46748.
W1201 05:17:24.442000 30453 site-packages/torch/distributed/elastic/multiprocessing/api.py:1028] Sending process \
30526 closing signal SIGTERM
E1201 05:17:24.508000 30453 site-packages/torch/distributed/elastic/multiprocessing/api.py:1002] failed \
(exitcode: -9) local_rank: 1 (pid: 30527) of binary: /usr/bin/python
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
Failures:
[1]:
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 30526)  (SIGTERM)
  traceback : Signal 15 (SIGTERM) received by PID 30526
-------------------------------------------------------
Root Cause (first observed failure):
[0]:
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 30527)  (SIGKILL)
  traceback : Signal 9 (SIGKILL) received by PID 30527
""".splitlines(keepends=True)


# Captured from Open MPI 4.1.4's mpirun (Debian's openmpi-bin) when rank 1 of 2 killed itself with SIGKILL amid gloo
# all-reduces, rank 0's traceback abridged. mpirun's own lines are its standard error too; the PID it names is 0.
MPIRUN_RANK1_KILLED = """\
[rank0]: Traceback (most recent call last):
[rank0]:     work.wait()
[rank0]: RuntimeError: [../gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:37596: Connection reset by peer.
--------------------------------------------------------------------------
Primary job  terminated normally, but 1 process returned
a non-zero exit code. Per user-direction, the job has been aborted.
--------------------------------------------------------------------------
--------------------------------------------------------------------------
mpirun noticed that process rank 1 with PID 0 on node vm exited on signal 9 (Killed).
--------------------------------------------------------------------------
""".splitlines(keepends=True)
KILLED_BY_SIGKILL = ("killed by SIGKILL (signal 9): the OS may have killed it for lack of memory (`dmesg` says so "
                     "where it did)")


@pytest.mark.parametrize("peer_recorded", [True, False])
@pytest.mark.parametrize("launcher,transcript,sigkill,sigterm", [
    ("torchrun", TORCHRUN_RANK1_KILLED, "-9 (pid: 30527)  (SIGKILL)", "-15 (pid: 30527)  (SIGTERM)"),
    ("mpirun", MPIRUN_RANK1_KILLED, "signal 9 (Killed)", "signal 15 (Terminated)"),
], ids=["torchrun", "mpirun"])
def test_a_rank_a_signal_ended_is_named_with_the_signal_not_its_peers_lost_connection(monkeypatch, peer_recorded,
                                                                                      launcher, transcript, sigkill,
                                                                                      sigterm):
    """A rank killed (the OOM killer's SIGKILL) records nothing; its peer's record, or its last line, is of losing
    it. The one line names the killed rank and the signal, as the launcher's report does (mpirun's alone named
    neither: `a rank of 2 (mpirun -m m) failed: exit code 137`)."""
    def ranks(say, failures):
        if peer_recorded:
            _record(failures, 0, 1.0, "unexpected RuntimeError: Connection closed by peer", False, True)
        for line in transcript:
            say(line)

    _fake_launcher(monkeypatch, ranks)
    monkeypatch.setattr(parallel, "launcher_problem", lambda launcher: None)  # mpirun need not be installed
    with pytest.raises(StepError) as failed:
        launch(2, "m", launcher=launcher)
    assert str(failed.value) == f"rank 1 of 2 ({launcher} -m m) failed: {KILLED_BY_SIGKILL}"
    terminated = [line.replace(sigkill, sigterm) for line in transcript]
    assert parallel.signalled_rank(terminated) == (1, signal.SIGTERM)
    assert parallel.killed_reason(signal.SIGTERM) == "killed by SIGTERM (signal 15)"


# What torchrun (torch 2.13) wrote when sent SIGTERM while its 2 ranks slept (traceback abridged); it exits 1.
TORCHRUN_SIGTERMED = """\
W1201 23:21:52.485000 25165 site-packages/torch/distributed/elastic/agent/server/api.py:753] Received 15 death \
signal, shutting down workers
W1201 23:21:52.486000 25165 site-packages/torch/distributed/elastic/multiprocessing/api.py:1028] Sending process \
25170 closing signal SIGTERM
W1201 23:21:52.486000 25165 site-packages/torch/distributed/elastic/multiprocessing/api.py:1028] Sending process \
25171 closing signal SIGTERM
Traceback (most recent call last):
  File "site-packages/torch/distributed/elastic/multiprocessing/api.py", line 86, in _terminate_process_handler
    raise SignalException(f"Process {os.getpid()} got signal: {sigval}", sigval=sigval)
torch.distributed.elastic.multiprocessing.api.SignalException: Process 25165 got signal: 15
"""
BY_THE_OS = "killed by SIGKILL (signal 9): the OS may have killed it for lack of memory (`dmesg` says so where it did)"
FROM_OUTSIDE = "sent from outside mambapipe (`kill`, a scheduler)"


@pytest.mark.parametrize("launcher,code,transcript,said", [
    ("mpirun", -9, "", f"was {BY_THE_OS}"),  # the OOM killer's choice: mpirun says nothing
    ("torchrun", -9, "", f"was {BY_THE_OS}"),
    ("mpirun", -3, "", f"was stopped by SIGQUIT (signal 3), {FROM_OUTSIDE}"),
    ("mpirun", -11, "", "was killed by SIGSEGV (signal 11)"),  # it crashed
    ("torchrun", 1, TORCHRUN_SIGTERMED, f"was stopped by SIGTERM (signal 15), {FROM_OUTSIDE}"),  # handled it
    ("torchrun", 1, TORCHRUN_SIGTERMED.replace("signal: 15", "signal: 2"),
     f"was stopped by SIGINT (signal 2), {FROM_OUTSIDE}"),  # `kill -INT` to torchrun alone
], ids=["mpirun SIGKILL", "torchrun SIGKILL", "mpirun SIGQUIT", "mpirun SIGSEGV", "torchrun SIGTERM",
        "torchrun SIGINT"])
@pytest.mark.parametrize("peer_recorded", [False, True], ids=["no record", "a peer's record"])
def test_a_launcher_a_signal_ended_is_named_not_a_rank(monkeypatch, tmp_path, launcher, code, transcript, said,
                                                       peer_recorded):
    """No rank reported a failure of its own; one may have recorded losing its peer as the launcher's end came. It
    was `a rank of 2 (mpirun -m m) failed: exit code -9`, or torchrun's SignalException line."""
    def ranks(say, failures):
        if peer_recorded:
            _record(failures, 0, 1.0, "unexpected RuntimeError: Connection closed by peer", False, True)
        for line in transcript.splitlines(keepends=True):
            say(line)

    _fake_launcher(monkeypatch, ranks, code)
    monkeypatch.setattr(parallel, "launcher_problem", lambda launcher: None)  # mpirun need not be installed
    with pytest.raises(StepError) as failed:
        launch(2, "m", launcher=launcher, log_file=tmp_path / "ranks.log")
    assert str(failed.value) == (f"{launcher}, which ran the 2 ranks (-m m, output in {tmp_path / 'ranks.log'}), "
                                 f"{said}; no rank reported a failure")


def test_mpirun_exiting_without_a_word_is_not_said_as_a_rank_failing(monkeypatch):
    """Open MPI 4.1.4's mpirun, sent SIGTERM, SIGINT or SIGHUP while its ranks slept, stopped them and exited 1
    without a word (measured through launch): it was `a rank of 2 (mpirun -m m) failed: exit code 1`."""
    _fake_launcher(monkeypatch, lambda say, failures: say("progress 1/3\n"))
    monkeypatch.setattr(parallel, "launcher_problem", lambda launcher: None)
    with pytest.raises(StepError) as failed:
        launch(2, "m", launcher="mpirun")
    assert str(failed.value) == ("mpirun, which ran the 2 ranks (-m m), exited with code 1 naming no failed rank, as "
                                 "it does when something stops it with SIGTERM, SIGINT or SIGHUP; no rank reported a "
                                 "failure")


def test_a_ranks_own_failure_is_named_though_the_launcher_was_killed_after_it(monkeypatch):
    """The OOM killer may pick mpirun while a rank reports its own failure: the rank's reason says more."""
    _fake_launcher(monkeypatch, lambda say, failures: _record(failures, 1, 1.0, DAMAGED, True, False), code=-9)
    monkeypatch.setattr(parallel, "launcher_problem", lambda launcher: None)
    with pytest.raises(StepError) as failed:
        launch(2, "m", launcher="mpirun")
    assert str(failed.value) == f"rank 1 of 2 (mpirun -m m) failed: {DAMAGED}"


# Captured from Open MPI 4.1.4's mpirun: its reports of the rank that ended the job, each for rank 1 of 2.
MPIRUN_RANK1_EXITED_3 = """\
--------------------------------------------------------------------------
Primary job  terminated normally, but 1 process returned
a non-zero exit code. Per user-direction, the job has been aborted.
--------------------------------------------------------------------------
--------------------------------------------------------------------------
mpirun detected that one or more processes exited with non-zero status, thus causing
the job to be terminated. The first process to do so was:

  Process name: [[32484,1],1]
  Exit code:    3
--------------------------------------------------------------------------
"""
MPIRUN_RANK1_CALLED_MPI_ABORT = """\
[vm:17017] [[11911,0],0] ORTE_ERROR_LOG: Data unpack would read past end of buffer in file \
../../../orte/util/show_help.c at line 501
--------------------------------------------------------------------------
MPI_ABORT was invoked on rank 1 in communicator MPI_COMM_WORLD
with errorcode 7.

NOTE: invoking MPI_ABORT causes Open MPI to kill all MPI processes.
You may or may not see output from other processes, depending on
exactly when Open MPI kills them.
--------------------------------------------------------------------------
"""
MPIRUN_RANK1_EXITED_WITHOUT_FINALIZE = """\
--------------------------------------------------------------------------
mpirun has exited due to process rank 1 with PID 0 on
node vm exiting improperly. There are three reasons this could occur:

1. this process did not call "init" before exiting, but others in
the job did. This can cause a job to hang indefinitely while it waits
for all processes to call "init". By rule, if one process calls "init",
then ALL processes must call "init" prior to termination.
"""


@pytest.mark.parametrize("transcript", [MPIRUN_RANK1_EXITED_3, MPIRUN_RANK1_CALLED_MPI_ABORT,
                                        MPIRUN_RANK1_EXITED_WITHOUT_FINALIZE],
                         ids=["non-zero exit", "MPI_Abort", "exit without MPI_Finalize"])
def test_failed_rank_reads_each_of_mpiruns_reports(transcript):
    lines = transcript.splitlines(keepends=True)
    assert parallel.failed_rank(lines) == 1 and parallel.signalled_rank(lines) is None


def test_failed_rank_reads_torchruns_root_cause_not_the_ranks_it_ended():
    lines = ["Failures:", "  rank      : 1 (local_rank: 1)", "Root Cause (first observed failure):",
             "  rank      : 0 (local_rank: 0)"]
    assert parallel.failed_rank(lines) == 0


def test_a_rank_records_its_failure_only_under_launch(tmp_path, monkeypatch):
    monkeypatch.delenv(FAILURES_ENV, raising=False)
    record_failure(StepError("x"), known=True)  # outside launch: nothing to write to, and no error
    monkeypatch.setenv(FAILURES_ENV, str(tmp_path))
    monkeypatch.setenv("RANK", "3")
    record_failure(StepError(DAMAGED), known=True)
    record = json.loads((tmp_path / "rank3.json").read_text())
    assert (record["rank"], record["line"], record["known"], record["from_a_peer"]) == (3, DAMAGED, True, False)
    assert [p.name for p in tmp_path.iterdir()] == ["rank3.json"]  # written whole, then renamed


def test_a_crash_inside_torch_distributed_is_recorded_as_a_peers_failure(tmp_path, monkeypatch):
    """A rank whose collective lost its peer raises from within torch.distributed (gloo: RuntimeError, Connection
    closed by peer); here a collective without a process group stands in for it."""
    monkeypatch.setenv(FAILURES_ENV, str(tmp_path))
    monkeypatch.setenv("RANK", "0")
    for fails, from_a_peer in ((lambda: torch.distributed.all_reduce(torch.zeros(1)), True), (lambda: 1 / 0, False)):
        try:
            fails()
        except Exception as err:
            record_failure(err, known=False)
        record = json.loads((tmp_path / "rank0.json").read_text())
        assert record["from_a_peer"] is from_a_peer and record["line"].startswith("unexpected ")
        assert "Traceback (most recent call last)" in record["traceback"]


def test_known_errors_are_said_as_the_step_says_them_in_process():
    from mambapipe.backends.base import LimitError

    assert parallel.error_line(StepError("bad thing; fix it")) == "bad thing; fix it"
    assert parallel.error_line(LimitError("prompt 0 is too long\nmore")) == "LimitError: prompt 0 is too long"


@pytest.mark.parametrize("launcher,nprocs,user_value,expected", [
    ("torchrun", 2, None, "1"),  # what torchrun would set, announcing it in a 4-line banner
    ("torchrun", 2, "8", "8"),  # the user's own
    ("torchrun", 1, None, None),  # torchrun sets none for one process
    ("mpirun", 2, None, None),  # nor does mpirun
])
def test_omp_num_threads_is_torchruns_default_set_before_torchrun_can(monkeypatch, launcher, nprocs, user_value,
                                                                      expected):
    if user_value is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", user_value)
    env = rank_environment(nprocs, launcher, "/tmp/failures")
    assert env.get("OMP_NUM_THREADS") == expected and env[FAILURES_ENV] == "/tmp/failures"


@pytest.mark.parametrize("users_base", [None, "OMPI_MCA_orte_tmpdir_base", "OMPI_MCA_orte_local_tmpdir_base",
                                        "OMPI_MCA_orte_remote_tmpdir_base", "PRTE_MCA_prte_tmpdir_base"])
def test_mpirun_keeps_its_session_in_launchs_own_directory_unless_the_user_chose_one(monkeypatch, users_base):
    """Which mpirun launch removes however it ended (test_parallel_mpirun.py kills one); torchrun keeps none."""
    for name in [name for name in os.environ if name.endswith("tmpdir_base")]:
        monkeypatch.delenv(name)
    if users_base:
        monkeypatch.setenv(users_base, "/scratch")
    env = rank_environment(2, "mpirun", "/tmp/failures")
    bases = {name: value for name, value in env.items() if name.endswith("tmpdir_base")}
    assert bases == ({users_base: "/scratch"} if users_base else {"OMPI_MCA_orte_tmpdir_base": "/tmp/failures",
                                                                   "PRTE_MCA_prte_tmpdir_base": "/tmp/failures"})
    torchrun_env = rank_environment(2, "torchrun", "/tmp/failures")
    assert {name for name in torchrun_env if name.endswith("tmpdir_base")} == ({users_base} if users_base else set())


def test_mpirun_passes_the_failures_dir_to_its_ranks():
    command = parallel.launch_command(2, "m", [], launcher="mpirun")
    assert re.search(rf"-x {FAILURES_ENV}\b", " ".join(command))


# Open MPI 4.1.4's job ids of two mpiruns (OMPI_MCA_ess_base_jobid; PMIX_NAMESPACE is the same number).
@pytest.mark.parametrize("job_variable", ["PMIX_NAMESPACE", "OMPI_MCA_ess_base_jobid"])
def test_a_users_mpirun_jobs_meet_on_ports_of_their_own(monkeypatch, job_variable):
    """Without MASTER_PORT, every rank of a job derives one port from the job's id, and two jobs two ports, where
    all took torch's 29500 (the second job's rank 0 failed: EADDRINUSE); outside MPI it stays 29500."""
    for name in ("PMIX_NAMESPACE", "OMPI_MCA_ess_base_jobid"):
        monkeypatch.delenv(name, raising=False)
    assert parallel._default_master_port() == "29500"
    ports = []
    for job in ("79429633", "7995393"):
        monkeypatch.setenv(job_variable, job)
        ports.append(parallel._default_master_port())
        assert parallel._default_master_port() == ports[-1]
    assert ports[0] != ports[1] and all(29500 <= int(port) < 32768 for port in ports)


@pytest.mark.parametrize("port_given", [True, False])
def test_a_master_port_in_use_is_one_line_saying_to_set_master_port(monkeypatch, port_given):
    """Rank 0 listens on MASTER_PORT; torch's DistNetworkError said EADDRINUSE in a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("RANK", "0")
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
        monkeypatch.setenv("MASTER_PORT", str(port))  # also so that what init_distributed sets is undone
        if not port_given:  # the job's port, as derived, is the one taken
            monkeypatch.delenv("MASTER_PORT")
            monkeypatch.setattr(parallel, "_default_master_port", lambda: str(port))
        with pytest.raises(StepError) as failed:
            parallel.init_distributed("cpu")
    chosen = "" if port_given else " (chosen from the MPI job's id, MASTER_PORT unset)"
    assert str(failed.value) == (f"rank 0 cannot listen on MASTER_PORT {port}{chosen}: another program, or another "
                                 "run's ranks, use it; set MASTER_PORT to a free port")


# Captured from Open MPI 4.1.4's mpirun failing before it started any rank: a bad OMPI_MCA_* setting (plm=bogus,
# rmaps_base_mapping_policy=bogus, orte_default_hostfile=/nonexistent/hosts; the first of its reports), an option it
# does not know.
MPIRUN_OWN_FAILURES = {
    "component": ("""\
--------------------------------------------------------------------------
A requested component was not found, or was unable to be opened.  This
means that this component is either not installed or is unable to be
used on your system (e.g., sometimes this means that shared libraries
that the component requires are unable to be found/loaded).  Note that
Open MPI stopped checking at the first component that it did not find.

Host:      vm
Framework: plm
Component: bogus
--------------------------------------------------------------------------
--------------------------------------------------------------------------
It looks like orte_init failed for some reason; your parallel process is
likely to abort.  There are many reasons that a parallel process can
--------------------------------------------------------------------------
""", "A requested component was not found, or was unable to be opened (Host: vm, Framework: plm, Component: bogus)"),
    "policy": ("""\
--------------------------------------------------------------------------
The specified mapping policy is not recognized:

  Policy: bogus

Please check for a typo or ensure that the option is a supported
one.
--------------------------------------------------------------------------
""", "The specified mapping policy is not recognized (Policy: bogus)"),
    "hostfile": ("""\
--------------------------------------------------------------------------
Open RTE was unable to open the hostfile:
    /nonexistent/hosts
Check to make sure the path and filename are correct.
--------------------------------------------------------------------------
""", "Open RTE was unable to open the hostfile: /nonexistent/hosts Check to make sure the path and filename are "
        "correct"),
    "option": ("""\
mpirun: Error: unknown option "--bogus-flag"
Type 'mpirun --help' for usage.
""", 'Error: unknown option "--bogus-flag"'),
}


@pytest.mark.parametrize("transcript,complaint", MPIRUN_OWN_FAILURES.values(), ids=MPIRUN_OWN_FAILURES.keys())
def test_mpirun_failing_before_any_rank_is_said_with_its_own_reason(monkeypatch, transcript, complaint):
    """It was `a rank of 2 (mpirun -m m) failed: exit code 1`."""
    _fake_launcher(monkeypatch, lambda say, failures: [say(line) for line in transcript.splitlines(keepends=True)])
    monkeypatch.setattr(parallel, "launcher_problem", lambda launcher: None)  # mpirun need not be installed
    for name in [name for name in os.environ if name.startswith("OMPI_MCA_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OMPI_MCA_plm", "bogus")
    with pytest.raises(StepError) as failed:
        launch(2, "m", launcher="mpirun")
    assert str(failed.value) == (f"mpirun failed before starting the 2 ranks (-m m): {complaint}; check Open MPI's "
                                 "settings in the environment: OMPI_MCA_plm")



def test_a_full_tmpdir_as_the_ranks_failures_dir_is_made_names_tmpdir(tmp_path, monkeypatch):
    """The ranks record their failures in a temporary directory; a full disk there was an OSError the runner took for
    the cache's (the step's writes go there)."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again, as a process does once

    def mkdtemp_on_a_full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp_on_a_full_disk)
    _fake_launcher(monkeypatch, lambda say, failures: pytest.fail("no rank may start"))
    with pytest.raises(StepError) as failed:
        launch(2, "mambapipe.evaluate.worker", ["job.json"])
    assert str(failed.value) == (f"no space left on device in the temporary directory {tmp_path} (TMPDIR): free "
                                 "space there, or set TMPDIR to a directory on a disk with room")
