"""A sweep stopped by Ctrl-C: the job waits for its child and records it as interrupted, the jobs never
started are read back from multirun.yaml, and the summary lists them with the commands that finish the sweep."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf
from sweep_support import summarize_metrics, write_job

import mambapipe.app as app
import mambapipe.cli as cli
import mambapipe.sweep.callback as callback
from mambapipe.sweep.cli import main as sweep_cli
from mambapipe.sweep.expected import BASIC_SWEEPER, JOBLIB_LAUNCHER, SweepConfig
from mambapipe.sweep.job import _record_exit, _wait_through_interrupts
from mambapipe.sweep.summary import collect_rows

INTERRUPTED_LINE = "INTERRUPTED (finished steps are cached: the same command resumes)\n"
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def write_multirun_yaml(sweep_dir: Path, *task: str, params: dict | None = None, subdir: str = "${hydra.job.num}",
                        sweeper: str = BASIC_SWEEPER, hydra_overrides: tuple[str, ...] | list[str] = (),
                        config_dir: str | None = None, launcher: str = BASIC_LAUNCHER) -> None:
    """The parts of Hydra's multirun.yaml that say which jobs a sweep runs (and `-cd config_dir`) and how."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    sources = [{"path": "/repo/configs", "schema": "file", "provider": "main"}]
    sources += [{"path": config_dir, "schema": "file", "provider": "command-line"}] if config_dir else []
    hydra = {"sweep": {"dir": str(sweep_dir), "subdir": subdir}, "runtime": {"config_sources": sources},
             "sweeper": {"_target_": sweeper, "max_batch_size": None, "params": params},
             "launcher": {"_target_": launcher},
             "overrides": {"hydra": ["hydra.mode=MULTIRUN", f"hydra.sweep.dir={sweep_dir}", *hydra_overrides],
                           "task": list(task)}}
    (sweep_dir / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra}))


def test_expected_jobs_expand_as_the_basic_sweeper_does(tmp_path):
    write_multirun_yaml(tmp_path, "recipe=quickstart", "dtype=float32,bfloat16", "eval.max_ite=range(1,3)",
                        params={"seed": "1,2"})
    jobs = SweepConfig.read(tmp_path).jobs()
    assert [job.num for job in jobs] == list(range(8))
    assert jobs[0].overrides == ["seed=1", "recipe=quickstart", "dtype=float32", "eval.max_ite=1"]
    assert jobs[7].overrides == ["seed=2", "recipe=quickstart", "dtype=bfloat16", "eval.max_ite=2"]
    assert jobs[3].run_dir == tmp_path / "3"


def test_interpolations_in_the_sweep_stay_as_written(tmp_path):
    """Resolving them would bake one job's value into every job (or fail outside a job, for hydra.job.num)."""
    write_multirun_yaml(tmp_path, "eval.max_ite=1,2", "eval.output_len=${eval.max_ite}",
                        hydra_overrides=["hydra.sweep.subdir=j_${hydra.job.num}"])
    # As Hydra writes a job's overrides.yaml: the interpolation escaped, which its override parser reads back.
    assert SweepConfig.read(tmp_path).jobs()[1].overrides == ["eval.max_ite=2", "eval.output_len=$\\{eval.max_ite\\}"]
    assert SweepConfig.read(tmp_path).resume_command() == (
        "python -m mambapipe -m eval.max_ite=1,2 'eval.output_len=${eval.max_ite}' "
        f"'hydra.sweep.subdir=j_${{hydra.job.num}}' hydra.sweep.dir={tmp_path}")


def test_expected_jobs_glob_a_config_group_outside_a_running_app(tmp_path):
    write_multirun_yaml(tmp_path, "model=glob(mamba2_*)")
    jobs = SweepConfig.read(tmp_path).jobs()
    assert [job.overrides for job in jobs] == [["model=mamba2_130m"], ["model=mamba2_2p7b"]]


def test_expected_jobs_are_unknown_for_other_sweepers_and_unreadable_files(tmp_path):
    write_multirun_yaml(tmp_path, "dtype=float32,bfloat16", sweeper="hydra_plugins.optuna.OptunaSweeper")
    assert SweepConfig.read(tmp_path).jobs() is None
    (tmp_path / "multirun.yaml").write_text("hydra: [unclosed\n")
    assert SweepConfig.read(tmp_path).jobs() is None
    assert SweepConfig.read(tmp_path / "absent").jobs() is None


def test_a_custom_subdir_gives_jobs_without_a_known_dir(tmp_path):
    write_multirun_yaml(tmp_path, "dtype=float32,bfloat16", subdir="${hydra.job.override_dirname}")
    assert [job.run_dir for job in SweepConfig.read(tmp_path).jobs()] == [None, None]


def write_done_job(sweep_dir: Path, num: int, overrides: list[str], exit_code: int = 0,
                   reason: str | None = None) -> None:
    """A job dir as the sweep leaves it, recorded under the sweep's multirun.yaml."""
    digest = hashlib.sha256((sweep_dir / "multirun.yaml").read_bytes()).hexdigest()
    write_job(sweep_dir, num, overrides, metrics=summarize_metrics(20.0, 100.0, 9.0) if not exit_code else None,
              statuses=("ran",) * 4 if not exit_code else ("cached", "cached", "ran", "failed"),
              exit_code=exit_code, reason=reason, multirun_yaml_sha256=digest)
    record = json.loads((sweep_dir / str(num) / "sweep_job.json").read_text())
    (sweep_dir / str(num) / "sweep_job.json").write_text(json.dumps({**record, "job_num": num}))


@pytest.fixture
def interrupted_sweep(tmp_path: Path) -> Path:
    """Three jobs asked for; job 0 ran, job 1 was interrupted, job 2 never started."""
    sweep = tmp_path / "sweep"
    write_multirun_yaml(sweep, "recipe=quickstart", "dtype=float32,bfloat16,float16")
    write_done_job(sweep, 0, ["recipe=quickstart", "dtype=float32"])
    write_done_job(sweep, 1, ["recipe=quickstart", "dtype=bfloat16"], exit_code=130,
                   reason="evaluate: interrupted")
    return sweep


def test_summary_lists_the_jobs_never_started(interrupted_sweep, capsys):
    assert sweep_cli(["summarize", str(interrupted_sweep), "--no-plots"]) == 1  # not a complete sweep
    rows = list(csv.DictReader(open(interrupted_sweep / "summary.csv", newline="")))
    assert [(r["job"], r["status"]) for r in rows] == [("0", "ok"), ("1", "failed"), ("2", "not run")]
    assert rows[1]["reason"] == "evaluate: interrupted" and rows[2]["run_dir"] == str(interrupted_sweep / "2")
    markdown = (interrupted_sweep / "summary.md").read_text()
    assert "3 jobs: 1 ok, 1 failed, 1 not run." in markdown
    not_run = markdown.split("## Jobs not run")[1]
    assert "- job 2: `recipe=quickstart dtype=float16`" in not_run
    assert f"hydra.run.dir={interrupted_sweep / '2'}" in not_run
    assert (f"`python -m mambapipe -m recipe=quickstart dtype=float32,bfloat16,float16 "
            f"hydra.sweep.dir={interrupted_sweep}`") in not_run


def test_a_complete_sweep_says_nothing_of_jobs_not_run(interrupted_sweep):
    write_done_job(interrupted_sweep, 1, ["recipe=quickstart", "dtype=bfloat16"])
    write_done_job(interrupted_sweep, 2, ["recipe=quickstart", "dtype=float16"])
    assert [r.status for r in collect_rows(interrupted_sweep).rows] == ["ok", "ok", "ok"]
    assert sweep_cli(["summarize", str(interrupted_sweep), "--no-plots"]) == 0
    markdown = (interrupted_sweep / "summary.md").read_text()
    assert "3 jobs: 3 ok, 0 failed." in markdown and "not run" not in markdown


def test_a_job_run_by_hand_into_its_dir_counts_as_started(interrupted_sweep):
    """The `run:` command of a job not run writes its dir without a sweep record: its number is its dir's name."""
    write_job(interrupted_sweep, 2, ["recipe=quickstart", "dtype=float16"], exit_code=None)
    assert [r.status for r in collect_rows(interrupted_sweep).rows] == ["ok", "failed", "ok"]


def every_job_line(sweep_dir: Path) -> str:
    return next(line for line in (sweep_dir / "summary.md").read_text().splitlines() if line.startswith("Every job:"))


def test_every_job_names_no_setting_that_a_job_not_run_overrides_otherwise(tmp_path):
    """Found by trying the README: a dtype=float32,bfloat16 sweep stopped in its first job said `Every job: ...
    dtype float32`, beside rows of dtype=bfloat16 jobs that had not run. A setting the jobs that ran share is every
    job's only where the jobs that did not run do not override it otherwise (their overrides column shows it)."""
    sweep = tmp_path / "sweep"
    write_multirun_yaml(sweep, "recipe=quickstart", "dtype=float32,bfloat16")
    write_done_job(sweep, 0, ["recipe=quickstart", "dtype=float32"])
    sweep_cli(["summarize", str(sweep), "--no-plots"])
    assert every_job_line(sweep) == "Every job: model tiny-mamba2, tp 1, device cpu, backend native, task summarize."
    assert "| job | overrides | status |" in (sweep / "summary.md").read_text()  # dtype=... says each job's


def test_every_job_names_no_setting_that_the_recipe_of_a_job_not_run_may_set_otherwise(tmp_path):
    sweep = tmp_path / "sweep"
    write_multirun_yaml(sweep, "recipe=quickstart,mamba_130m")
    write_done_job(sweep, 0, ["recipe=quickstart"])
    sweep_cli(["summarize", str(sweep), "--no-plots"])
    assert "Every job:" not in (sweep / "summary.md").read_text()
    assert "| job | overrides | model | dtype | tp | device | backend | task | status |" in (
        sweep / "summary.md").read_text()


def test_every_job_still_names_what_a_sweep_of_other_keys_leaves_alike(tmp_path):
    """Job 1 never ran, but its overrides set neither a recipe nor a setting that the line names."""
    sweep = tmp_path / "sweep"
    write_multirun_yaml(sweep, "recipe=quickstart", "eval.max_ite=1,2")
    write_done_job(sweep, 0, ["recipe=quickstart", "eval.max_ite=1"])
    sweep_cli(["summarize", str(sweep), "--no-plots"])
    assert every_job_line(sweep) == (
        "Every job: model tiny-mamba2, dtype float32, tp 1, device cpu, backend native, task summarize.")


class ScriptedChild:
    """A child process whose `wait` plays a script: a KeyboardInterrupt or TimeoutExpired, or it exits."""

    def __init__(self, *script: object, returncode: int = 130) -> None:
        self.script, self.returncode, self.signals = list(script), returncode, []

    def wait(self, timeout: float | None = None) -> int:
        event = self.script.pop(0) if self.script else None
        if event is KeyboardInterrupt:
            raise KeyboardInterrupt
        if event is subprocess.TimeoutExpired:
            assert timeout is not None  # only a wait with a timeout can time out
            raise subprocess.TimeoutExpired("child", timeout)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)

    def kill(self) -> None:
        self.signals.append(signal.SIGKILL)


def test_the_first_ctrl_c_waits_for_the_child_that_heard_it_too(capsys):
    child = ScriptedChild(KeyboardInterrupt)
    assert _wait_through_interrupts(child, 3) is True and child.signals == []
    assert "interrupting sweep job 3" in capsys.readouterr().err


def test_a_sigint_sent_to_the_launcher_alone_is_passed_on():
    child = ScriptedChild(KeyboardInterrupt, subprocess.TimeoutExpired)
    assert _wait_through_interrupts(child, 0) is True and child.signals == [signal.SIGINT]


def test_a_second_ctrl_c_kills_the_child():
    child = ScriptedChild(KeyboardInterrupt, KeyboardInterrupt, returncode=-signal.SIGKILL)
    assert _wait_through_interrupts(child, 0) is True and child.signals == [signal.SIGKILL]


def test_without_ctrl_c_the_child_just_ends():
    assert _wait_through_interrupts(ScriptedChild(returncode=0), 0) is False


@pytest.mark.parametrize("code, child_reason, expected", [
    (130, "evaluate: interrupted", "evaluate: interrupted"),
    (130, None, "interrupted"),
    (-signal.SIGINT, None, "interrupted"),
    (-signal.SIGINT, "download: interrupted", "download: interrupted"),  # killed while it shut down
    (-signal.SIGKILL, None, "interrupted: killed by a second Ctrl-C"),
    (0, None, None),  # it finished before it heard the Ctrl-C
])
def test_an_interrupted_job_records_why(tmp_path, code, child_reason, expected):
    (tmp_path / "sweep_job.json").write_text(json.dumps({"job_num": 1, "reason": child_reason}))
    record = _record_exit(tmp_path, code, 1.0, interrupted=True)
    assert record["reason"] == expected and record["exit_code"] == code


def test_ctrl_c_outside_a_step_is_one_line_and_exit_130(monkeypatch, capsys):
    monkeypatch.setattr(callback, "_running_sweep_dir", None)
    monkeypatch.setattr(app, "_hydra_app", lambda: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    captured = capsys.readouterr()
    assert stopped.value.code == 130 and captured.out == "" and captured.err == INTERRUPTED_LINE


def test_ctrl_c_in_a_sweep_prints_its_summary_and_how_to_finish_it(interrupted_sweep, monkeypatch, capsys):
    monkeypatch.setattr(callback, "_running_sweep_dir", interrupted_sweep)
    monkeypatch.setattr(app, "_hydra_app", lambda: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    captured = capsys.readouterr()  # the jobs' table is the result; that the sweep stopped and how to finish it, not
    assert stopped.value.code == 130 and "│ ok " in captured.out and "INTERRUPTED" not in captured.out
    assert captured.err.startswith("INTERRUPTED 3 jobs: 1 ok, 1 failed, 1 not run.\nfinish it (finished steps come ")
    assert f"hydra.sweep.dir={interrupted_sweep}" in captured.err and (interrupted_sweep / "summary.md").is_file()


@pytest.mark.parametrize("started", [True, False])
def test_a_sweep_dir_given_relative_is_named_absolute_as_a_runs_resume_command_names_its(
        tmp_path, monkeypatch, capsys, started):
    """`-m hydra.sweep.dir=sweep`, and a recipe found with `-cd recipes`: the finish command, the summary's path and
    the line of a sweep stopped before its first job name them absolute, however they were typed, as a single run's
    resume command names its hydra.run.dir and --config-dir (Hydra's runtime.output_dir and config_sources are
    absolute), and as summary.md names them: one form for every path and command a run or sweep prints."""
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "sweep"
    write_multirun_yaml(sweep, "recipe=mine", "dtype=float32,bfloat16", hydra_overrides=["hydra.sweep.dir=sweep"],
                        config_dir=str(tmp_path / "recipes"))
    if started:
        write_done_job(sweep, 0, ["recipe=mine", "dtype=float32"], exit_code=130, reason="build: interrupted")
    callback.SweepSummaryCallback().on_multirun_start(OmegaConf.create({"hydra": {"sweep": {"dir": "sweep"}}}))
    monkeypatch.setattr(app, "_hydra_app", lambda: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(SystemExit):
        cli.main()
    captured = capsys.readouterr()
    if started:
        assert f"summary: {sweep / 'summary.md'}\n" in captured.out
        assert captured.err.endswith(f"python -m mambapipe -m --config-dir {tmp_path / 'recipes'} recipe=mine "
                                     f"dtype=float32,bfloat16 hydra.sweep.dir={sweep}\n")
    else:
        assert captured.err == f"INTERRUPTED before any job of the sweep started ({sweep})\n"


def test_a_child_stopped_before_the_runner_took_over_records_the_interrupt(tmp_path, monkeypatch):
    """Ctrl-C between two jobs lands in the next child's start (its imports): a record, exit 130, no traceback."""
    calls: list = []
    monkeypatch.setattr(signal, "signal", lambda sig, handler: calls.append((sig, handler)))
    assert run_child(tmp_path, monkeypatch, lambda: (_ for _ in ()).throw(KeyboardInterrupt)) == 130
    assert json.loads((tmp_path / "sweep_job.json").read_text())["reason"] == "interrupted"
    assert calls[-1] == (signal.SIGINT, signal.SIG_IGN)  # it exits 130 now, whatever Ctrl-C comes


def test_a_child_whose_run_is_over_ignores_a_late_ctrl_c(tmp_path, monkeypatch):
    """Its interpreter's shutdown takes a second: a Ctrl-C then must not record a finished job as killed."""
    from types import SimpleNamespace

    finished = SimpleNamespace(reason=None, interrupted=False, failed=False)
    monkeypatch.setattr(signal, "signal", lambda sig, handler: calls.append((sig, handler)))
    calls: list = []
    assert run_child(tmp_path, monkeypatch, lambda: finished) == 0
    assert calls[-1] == (signal.SIGINT, signal.SIG_IGN)  # after the watcher, mambapipe.interrupts', set first


def run_child(tmp_path: Path, monkeypatch, run) -> int:
    """mambapipe.sweep.child's main, its run of the recipe replaced by `run`."""
    import logging

    from mambapipe.sweep import child

    monkeypatch.setattr(child, "_run", lambda *args: run())
    monkeypatch.setattr(logging.root, "handlers", [])  # main's basicConfig adds its handlers to a clean root
    try:
        return child.main([str(tmp_path), "[]", "[]"])
    finally:
        for handler in logging.root.handlers:
            handler.close()


def test_commands_that_finish_a_sweep_name_its_config_dir(tmp_path):
    """A recipe of the user's own, found with -cd, must be found again by the commands that finish the sweep."""
    sweep = tmp_path / "sweep"
    write_multirun_yaml(sweep, "recipe=mine", "dtype=float32,bfloat16", config_dir="/home/me/recipes")
    write_done_job(sweep, 0, ["recipe=mine", "dtype=float32"], exit_code=130, reason="build: interrupted")
    assert sweep_cli(["summarize", str(sweep), "--no-plots"]) == 1
    markdown = (sweep / "summary.md").read_text()
    assert markdown.count("python -m mambapipe --config-dir /home/me/recipes recipe=mine dtype=") == 2  # rerun, run
    resume = SweepConfig.read(sweep).resume_command()
    assert resume.startswith("python -m mambapipe -m --config-dir /home/me/recipes recipe=mine ")


def test_a_child_records_a_ctrl_c_that_came_while_the_sweep_held_it_back(tmp_path, monkeypatch):
    """The sweep starts the child with SIGINT blocked (its start-up would print a traceback); main unblocks it
    where it can report one, as interrupted, and exits 130."""
    import threading
    from types import SimpleNamespace

    from mambapipe import interrupts

    monkeypatch.setattr(interrupts, "_received", False)
    previous_handler, previous_mask = signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, [])
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # the Ctrl-C during the child's start-up
    try:
        code = run_child(tmp_path, monkeypatch, lambda: SimpleNamespace(reason=None, interrupted=False, failed=False))
    finally:
        if signal.SIGINT in signal.sigpending():  # still blocked: main never let it through
            signal.sigwait({signal.SIGINT})
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        signal.signal(signal.SIGINT, previous_handler)
    record = json.loads((tmp_path / "sweep_job.json").read_text())
    assert code == 130 and record["reason"] == "interrupted" and isinstance(record["pid"], int)


def test_a_ctrl_c_the_child_saw_turned_into_another_error_is_recorded_as_interrupted(tmp_path, monkeypatch):
    """OmegaConf, stopped by a Ctrl-C, may raise ConfigKeyError for it: not 'unexpected ConfigKeyError', exit 1."""
    from omegaconf.errors import ConfigKeyError

    from mambapipe import interrupts

    def interrupted_run():
        monkeypatch.setattr(interrupts, "_received", True)  # as the handler leaves it
        raise ConfigKeyError("'NoneType' object has no attribute '_invalidate_flags_cache'")
    assert run_child(tmp_path, monkeypatch, interrupted_run) == 130
    assert json.loads((tmp_path / "sweep_job.json").read_text())["reason"] == "interrupted"


def write_started_job(sweep_dir: Path, num: int, overrides: list[str]) -> Path:
    """A job dir as a job killed while it ran leaves it: its start recorded, no end, no run.json."""
    digest = hashlib.sha256((sweep_dir / "multirun.yaml").read_bytes()).hexdigest()
    run_dir = sweep_dir / str(num)
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run_dir / "sweep_job.json").write_text(json.dumps({"job_num": num, "overrides": overrides, "reason": None,
                                                         "exit_code": None, "multirun_yaml_sha256": digest}))
    return run_dir


@pytest.mark.parametrize("launcher, reason", [
    (JOBLIB_LAUNCHER, "interrupted: joblib killed it at the Ctrl-C"),  # it kills its workers' processes at a Ctrl-C
    ("hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",  # its jobs may still run
     "no run.json: the job did not finish (killed, or still running)"),
])
def test_ctrl_c_with_every_job_started_prints_how_to_finish_the_sweep(tmp_path, monkeypatch, capsys, launcher, reason):
    """QA: under joblib both jobs ran when the Ctrl-C came; no job was 'not run', and no finish command was printed."""
    sweep = tmp_path / "sweep"
    write_multirun_yaml(sweep, "eval.output_len=20,21", launcher=launcher)
    write_started_job(sweep, 0, ["eval.output_len=20"])
    write_started_job(sweep, 1, ["eval.output_len=21"])
    monkeypatch.setattr(callback, "_running_sweep_dir", sweep)
    monkeypatch.setattr(app, "_hydra_app", lambda: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    err = capsys.readouterr().err
    assert stopped.value.code == 130 and "INTERRUPTED 2 jobs: 0 ok, 2 failed." in err
    assert "finish it (finished steps come from the cache): python -m mambapipe -m eval.output_len=20,21 " in err
    assert [row["reason"] for row in csv.DictReader(open(sweep / "summary.csv", newline=""))] == [reason] * 2


def test_ctrl_c_reads_the_sweeps_multirun_yaml_once(tmp_path, monkeypatch, capsys):
    """The summary after a Ctrl-C reads multirun.yaml for the launcher, the jobs killed, the rows and the jobs'
    sweep (its digest) alike: once, not once for each (under joblib it was read four times)."""
    sweep = tmp_path / "sweep"
    write_multirun_yaml(sweep, "eval.output_len=20,21", launcher=JOBLIB_LAUNCHER)
    write_started_job(sweep, 0, ["eval.output_len=20"])
    opened = []
    real_open = io.open
    monkeypatch.setattr(io, "open", lambda path, *args, **kwargs: opened.append(Path(path).name) or
                        real_open(path, *args, **kwargs))
    monkeypatch.setattr(callback, "_running_sweep_dir", sweep)
    monkeypatch.setattr(app, "_hydra_app", lambda: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(SystemExit):
        cli.main()
    assert "INTERRUPTED 2 jobs: 0 ok, 1 failed, 1 not run." in capsys.readouterr().err
    assert opened.count("multirun.yaml") == 1


def test_ctrl_c_after_every_job_succeeded_prints_no_finish_command(tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    write_multirun_yaml(sweep, "dtype=float32")
    write_done_job(sweep, 0, ["dtype=float32"])
    monkeypatch.setattr(callback, "_running_sweep_dir", sweep)
    monkeypatch.setattr(app, "_hydra_app", lambda: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(SystemExit):
        cli.main()
    err = capsys.readouterr().err
    assert "INTERRUPTED 1 job: 1 ok, 0 failed." in err and "finish it" not in err
