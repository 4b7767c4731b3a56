"""Real sweeps of the quickstart recipe, run as users run them (`python -m mambapipe -m ...`), with the
basic and the joblib launcher: every job in its own process, one shared cache, failures recorded and
the summary written (and rebuilt later by `python -m mambapipe.sweep summarize`)."""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
TINY_EVAL = ("recipe=quickstart", "eval.max_ite=1", "eval.output_len=4")
STEPS = ("download", "convert", "build", "evaluate")
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def sweep_env(tmp_path: Path) -> dict[str, str]:
    # Run from tmp_path, `-m mambapipe` would import whichever checkout is installed, not the one under test.
    python_path = os.pathsep.join(filter(None, [str(SOURCE_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "MAMBAPIPE_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": python_path}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=sweep_env(tmp_path), capture_output=True,
                          text=True, timeout=400)


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def job_records(sweep: Path, n: int) -> list[dict]:
    return [json.loads((sweep / str(i) / "sweep_job.json").read_text()) for i in range(n)]


def test_basic_launcher_sweep_keeps_going_past_failures(tmp_path):
    # tp_size=3 does not fit the model; the two tp_size=1 jobs are the same config on purpose.
    out = run(tmp_path, "-m", "mambapipe", "-m", *TINY_EVAL, "tp_size=3,1,1", "hydra.sweep.dir=sweep")
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    # Why it failed is on standard error (job 0's own line, from its process, and the sweep's), the tables alone on
    # standard output: `python -m mambapipe -m ... > results.txt` shows the failure on the terminal.
    assert "\nFAILED convert: tp_size=3 does not fit" in out.stderr and "FAILED 1 of 3 jobs: 0\n" in out.stderr
    assert "FAILED" not in out.stdout and "fix it, then run" not in out.stdout
    sweep = tmp_path / "sweep"
    assert out.stdout.endswith(f"\nsummary: {sweep / 'summary.md'}\n")  # absolute, as typed or not (9019b6e)
    rows = csv_rows(sweep / "summary.csv")
    assert [r["status"] for r in rows] == ["failed", "ok", "ok"]  # jobs after a failure still ran
    assert "tp_size=3 does not fit" in rows[0]["reason"] and rows[0]["convert"] == "refused"  # by the plan
    assert all(float(r["tokens_per_s"]) > 0 and r["rouge1"] != "" for r in rows[1:])
    # One cache: job 1 made every artifact, job 2 (same config) reused them all.
    assert [[r[s] for s in STEPS] for r in rows[1:]] == [["ran"] * 4, ["cached"] * 4]
    records = job_records(sweep, 3)
    assert len({r["launcher_pid"] for r in records}) == 1  # the basic launcher: one process for all jobs
    assert len({r["pid"] for r in records}) == 3  # ... yet each job ran in a process of its own
    assert {p.name for p in sweep.glob("*.png")} == {"tokens_per_s.png", "rouge.png"}

    before = (sweep / "summary.csv").read_text()
    for name in ("summary.csv", "summary.md", "tokens_per_s.png", "rouge.png"):
        (sweep / name).unlink()
    rebuilt = run(tmp_path, "-m", "mambapipe.sweep", "summarize", "sweep")
    assert rebuilt.returncode == 1 and (sweep / "summary.csv").read_text() == before
    assert (sweep / "rouge.png").is_file() and "- job 0: convert: tp_size=3" in (sweep / "summary.md").read_text()


def test_joblib_sweep_runs_jobs_in_parallel_on_one_cache(tmp_path):
    out = run(tmp_path, "-m", "mambapipe", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY_EVAL,
              "build.max_batch_size=1,2", "hydra.sweep.dir=sweep")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in out.stdout + out.stderr
    rows = csv_rows(tmp_path / "sweep" / "summary.csv")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    # Both jobs started together: one made each shared artifact, the other waited on its lock and reused it.
    assert sorted(r["download"] for r in rows) == ["cached", "ran"]
    assert sorted(r["convert"] for r in rows) == ["cached", "ran"]
    assert [r["build"] for r in rows] == ["ran", "ran"]
    assert len({r["pid"] for r in job_records(tmp_path / "sweep", 2)}) == 2


def test_a_reused_sweep_dir_is_summarized_as_its_latest_sweep(tmp_path):
    """The second sweep into one dir leaves job 1 of the first; a rerun by hand and a copy keep the second's jobs."""
    first = run(tmp_path, "-m", "mambapipe", "-m", *TINY_EVAL[:2], "eval.output_len=3,4", "hydra.sweep.dir=sweep")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = run(tmp_path, "-m", "mambapipe", "-m", *TINY_EVAL[:2], "eval.output_len=5", "hydra.sweep.dir=sweep")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    sweep = tmp_path / "sweep"
    assert (sweep / "1" / "run.json").is_file()  # Hydra left it there
    rerun = run(tmp_path, "-m", "mambapipe", *TINY_EVAL[:2], "eval.output_len=5", f"hydra.run.dir={sweep / '0'}")
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    subprocess.run(["cp", "-r", "sweep", "copy"], cwd=tmp_path, check=True)
    for directory in ("sweep", "copy"):
        rebuilt = run(tmp_path, "-m", "mambapipe.sweep", "summarize", directory, "--no-plots")
        assert rebuilt.returncode == 0, rebuilt.stdout[-3000:] + rebuilt.stderr[-3000:]
        rows = csv_rows(tmp_path / directory / "summary.csv")
        assert [(r["job"], r["overrides"].split()[-1], r["evaluate"]) for r in rows] == [("0", "eval.output_len=5",
                                                                                           "cached")]
        assert "1 job dir left out, from an earlier sweep" in (tmp_path / directory / "summary.md").read_text()


def test_ctrl_c_stops_the_sweep_with_its_summary_and_no_traceback(tmp_path):
    """Ctrl-C at the terminal (SIGINT to the whole process group) while job 1 of 3 runs."""
    sweep = tmp_path / "sweep"
    # A new session, as a terminal's foreground group; SIGINT at its default (a shell's `&` would ignore it).
    sweep_process = subprocess.Popen(
        [sys.executable, "-m", "mambapipe", "-m", *TINY_EVAL[:2], "eval.output_len=4,5,6", "hydra.sweep.dir=sweep"],
        cwd=tmp_path, env=sweep_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    job_record, deadline = sweep / "1" / "sweep_job.json", time.monotonic() + 300
    while not (job_record.is_file() and "pid" in json.loads(job_record.read_text())):  # job 1's child runs
        assert sweep_process.poll() is None and time.monotonic() < deadline, sweep_process.communicate()[0]
        time.sleep(0.05)
    os.killpg(sweep_process.pid, signal.SIGINT)
    out = sweep_process.communicate(timeout=120)[0]
    assert sweep_process.returncode == 130, out[-3000:]
    assert "Traceback" not in out and "INTERRUPTED 3 jobs: 1 ok, 1 failed, 1 not run." in out, out[-3000:]
    rows = csv_rows(sweep / "summary.csv")
    assert [r["status"] for r in rows] == ["ok", "failed", "not run"]
    assert rows[1]["reason"].endswith("interrupted")
    assert not (sweep / "2").exists()  # no job started after the Ctrl-C
    assert not [p for p in (tmp_path / "cache").rglob(".staging/*")]  # nothing half-made left in the cache


def _sweep_whose_stdout_reader_goes_away(tmp_path: Path, launcher: list[str], counts: str) -> Path:
    """A 3-job sweep (with `launcher`'s overrides) whose standard output's reader closes the pipe after job 0's first
    line, as `| head -1` does; checked to end in exit 1 with the FAILED line (`counts` its jobs' failed and not run)
    and the finish command, without a traceback. Its sweep dir."""
    sweep = tmp_path / "sweep"
    sweep_process = subprocess.Popen(
        [sys.executable, "-m", "mambapipe", "-m", *TINY_EVAL[:2], "eval.output_len=4,5,6", *launcher,
         "hydra.sweep.dir=sweep"],
        cwd=tmp_path, env=sweep_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert sweep_process.stdout.readline().startswith("mambapipe model tiny-mamba2")
    sweep_process.stdout.close()
    err = sweep_process.communicate(timeout=400)[1]
    assert sweep_process.returncode == 1 and "Traceback" not in err, err[-3000:]
    assert ("FAILED standard output's reader went away (`| head`?): the sweep launched no further job; 3 jobs: 0 ok, "
            f"{counts}. summary: {sweep / 'summary.md'}\n") in err, err[-3000:]
    assert f"finish it (finished steps come from the cache): python -m mambapipe -m {' '.join(TINY_EVAL[:2])} " in err
    return sweep


def test_a_sweep_whose_stdout_reader_goes_away_launches_no_further_job(tmp_path):
    """`python -m mambapipe -m ... | head -1`: the reader closes the pipe after job 0's first line. Job 0 ended at its
    next print (rich's exit 1, without a word); before, the sweep went on to start jobs 1 and 2, each of which died
    so at its first line, and recorded all three as `job process exited with code 1`."""
    sweep = _sweep_whose_stdout_reader_goes_away(tmp_path, [], "1 failed, 2 not run")
    assert [(r["status"], r["reason"]) for r in csv_rows(sweep / "summary.csv")] == [
        ("failed", "standard output's reader went away (`| head`?): the job ended at its next print"),
        *[("not run", "not started: the sweep stopped launching jobs once standard output's reader had gone "
                      "(`| head`?)")] * 2]
    assert job_records(sweep, 1)[0]["stdout_reader_gone"] is True
    assert not (sweep / "1").exists() and not (sweep / "2").exists()  # never launched


def test_a_joblib_sweep_whose_stdout_reader_goes_away_starts_no_further_job_and_says_so(tmp_path):
    """The same under joblib, which hands its two workers jobs 0 and 1 at once and job 2 when one is free: both die at
    their next print; job 2 finds the reader gone and starts no child. Before, job 2 ran (and died at its first line)
    and the end-of-sweep table died on the broken pipe, silently: exit 1 without the FAILED line."""
    sweep = _sweep_whose_stdout_reader_goes_away(tmp_path, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                                                 "2 failed, 1 not run")
    assert [(r["status"], r["reason"]) for r in csv_rows(sweep / "summary.csv")] == [
        *[("failed", "standard output's reader went away (`| head`?): the job ended at its next print")] * 2,
        ("not run", "not started: the sweep stopped launching jobs once standard output's reader had gone (`| head`?)")]
    records = job_records(sweep, 3)
    assert [r["not_started"] for r in records] == [False, False, True] and "started" not in records[2]  # no child
    assert len({r["launcher_pid"] for r in records[:2]}) == 2  # joblib's workers, not the sweep's process
    assert "- job 2: " in (sweep / "summary.md").read_text().split("## Jobs not run")[1]


def test_a_job_a_ctrl_c_stops_in_a_step_leaves_resuming_it_to_the_sweeps_finish_command(tmp_path,
                                                                                     ctrl_c_while_download_waits):
    """Ctrl-C while job 0 waits in its download step, on the artifact's lock that this test holds: the job says it
    failed there, but not `resume ... hydra.run.dir=<sweep>/0` beside the sweep's `finish it: ...`."""
    planned = run(tmp_path, "-m", "mambapipe", *TINY_EVAL, "plan_only=true", "hydra.run.dir=plan")
    download_key = json.loads((tmp_path / "plan" / "run.json").read_text())["steps"][0]["key"]
    code, out = ctrl_c_while_download_waits(
        [sys.executable, "-m", "mambapipe", "-m", *TINY_EVAL, "build.max_batch_size=1,2", "hydra.sweep.dir=sweep"],
        tmp_path, sweep_env(tmp_path), tmp_path / "cache", download_key)
    assert planned.returncode == 0 and code == 130, out[-3000:]
    assert "FAILED download: interrupted" in out and "resume (finished steps are cached)" not in out, out[-3000:]
    assert f"finish it (finished steps come from the cache): python -m mambapipe -m {' '.join(TINY_EVAL)} " in out


# A sitecustomize: Python imports it as it starts up (site), where a Ctrl-C used to be a KeyboardInterrupt traceback.
CTRL_C_AS_JOB_1_STARTS = """\
import os, signal, sys
if sys.orig_argv[1:3] == ["-m", "mambapipe.sweep.child"] and os.path.basename(sys.orig_argv[3]) == "1":
    os.killpg(0, signal.SIGINT)  # Ctrl-C at the terminal: the whole process group, the sweep too
"""


def test_ctrl_c_as_a_job_starts_stops_the_sweep_with_its_summary_and_no_traceback(tmp_path):
    """The Ctrl-C is sent by job 1's child process itself, as its interpreter starts: no timing to miss."""
    sweep, hook = tmp_path / "sweep", tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(CTRL_C_AS_JOB_1_STARTS)
    env = sweep_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(hook), env["PYTHONPATH"]])
    sweep_process = subprocess.Popen(
        [sys.executable, "-m", "mambapipe", "-m", *TINY_EVAL[:2], "eval.output_len=4,5,6", "hydra.sweep.dir=sweep"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    out = sweep_process.communicate(timeout=400)[0]
    assert sweep_process.returncode == 130, out[-3000:]
    assert "Traceback" not in out and "INTERRUPTED 3 jobs: 1 ok, 1 failed, 1 not run." in out, out[-3000:]
    assert [(r["status"], r["reason"]) for r in csv_rows(sweep / "summary.csv")] == [
        ("ok", ""), ("failed", "interrupted"), ("not run", "not started: the sweep stopped before this job")]
    assert json.loads((sweep / "1" / "sweep_job.json").read_text())["exit_code"] == 130  # it reported the Ctrl-C


def test_a_sweep_dir_on_a_full_disk_is_one_line_before_hydra_writes_there(tmp_path, run_on_a_full_disk):
    """Hydra writes multirun.yaml before any job: a full disk there was Hydra's traceback and an empty multirun.yaml."""
    out = run_on_a_full_disk(["-m", *TINY_EVAL, "dtype=float32,bfloat16", "hydra.sweep.dir=full/sweep"], tmp_path,
                             sweep_env(tmp_path), tmp_path / "full")
    assert out.returncode == 1 and out.stdout == "", out.stdout + out.stderr
    assert out.stderr == (f"FAILED no space left on device in the sweep directory {tmp_path / 'full' / 'sweep'}: free "
                          "space there, or set hydra.sweep.dir to a directory on a disk with room\n")
    assert not (tmp_path / "full").exists()


@pytest.mark.parametrize("sweep_dir, why", [
    ("/proc/nope", "cannot be created (No such file or directory)"),  # refused even to root
    ("{tmp}/a-file/sweep", "cannot be created: {tmp}/a-file is not a directory"),  # Hydra's NotADirectoryError
])
def test_a_sweep_dir_that_cannot_be_made_is_one_line_naming_it(tmp_path, sweep_dir, why):
    """Not a full disk, yet no place for multirun.yaml: that was Hydra's traceback of its mkdir, no job started."""
    (tmp_path / "a-file").write_text("")
    sweep_dir, why = sweep_dir.format(tmp=tmp_path), why.format(tmp=tmp_path)
    out = run(tmp_path, "-m", "mambapipe", "-m", *TINY_EVAL, "dtype=float32,bfloat16", f"hydra.sweep.dir={sweep_dir}")
    assert out.returncode == 1 and out.stdout == "", out.stdout + out.stderr
    assert out.stderr == (f"FAILED the sweep directory {sweep_dir} {why}; set hydra.sweep.dir to a directory you can "
                          "write to\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # no job ran: no cache


@pytest.mark.parametrize("error, why", [(errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied")])
def test_a_sweep_dir_on_a_read_only_or_forbidden_disk_is_one_line_naming_it(tmp_path, run_where_writes_are_refused,
                                                                           error, why):
    (tmp_path / "ro").mkdir()
    out = run_where_writes_are_refused(["-m", *TINY_EVAL, "dtype=float32,bfloat16", "hydra.sweep.dir=ro"], tmp_path,
                                       sweep_env(tmp_path), tmp_path / "ro", error)
    assert out.returncode == 1 and out.stdout == "", out.stdout + out.stderr
    assert out.stderr == (f"FAILED the sweep directory {tmp_path / 'ro'} cannot be written to ({why}); set "
                          "hydra.sweep.dir to a directory you can write to\n")


def test_a_sweep_dir_that_fills_stops_the_sweep_in_one_line_with_its_summary(tmp_path, run_on_a_full_disk):
    """The disk is full once job 0 has run: the sweep stops there, said once with how to finish it, where job 1 met
    the full disk in Hydra's write of its .hydra/ (a traceback, and no summary), and every job after it would fail."""
    sweep = tmp_path / "sweep"
    out = run_on_a_full_disk(["-m", *TINY_EVAL[:2], "eval.output_len=4,5,6", "hydra.sweep.dir=sweep"], tmp_path,
                             sweep_env(tmp_path), sweep, after_job=0)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stderr.count("no space left on device") == 1, out.stderr[-3000:]
    assert out.stderr.endswith(
        f"FAILED no space left on device in the sweep directory {sweep}: the sweep stopped (3 jobs: 1 ok, 0 failed, "
        f"2 not run); free space there, then finish it (finished steps come from the cache): python -m mambapipe -m "
        f"{' '.join(TINY_EVAL[:2])} eval.output_len=4,5,6 hydra.sweep.dir={sweep}\n"), out.stderr[-3000:]
    assert out.stdout.count("│ not run │") == 2, out.stdout  # the table of jobs 1 and 2, on standard output
    assert not (sweep / "1").exists() and not (sweep / "summary.md").exists()  # no job, no file started
