"""Failures leave nothing that looks complete: a step that raises, a process killed mid-step, and two
processes racing for the same artifact."""

from __future__ import annotations

import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pipeline_fakes import journal_lines

from mambapipe.pipeline.runner import program_name
from mambapipe.pipeline.step import StepError
from mambapipe.pipeline.store import MANIFEST

FAKE_RUN = Path(__file__).with_name("fake_run.py")


def complete_artifacts(store, step):
    return [d for d, _ in store.artifacts(step)]


def leftovers(store, step):
    """Directories under the step's folder other than the runner's own bookkeeping."""
    step_dir = store.root / step
    return [p for p in step_dir.iterdir() if not p.name.startswith(".")] if step_dir.exists() else []


def test_step_error_leaves_nothing_and_next_run_redoes_it(pipeline):
    result = pipeline.run(convert="fail")
    assert result.failed
    assert result.reason == "convert: convert cannot do this: a one-line reason"  # verbatim
    assert [(o.name, o.status) for o in result.outcomes] == [
        ("download", "ran"), ("convert", "failed"), ("build", "skipped"), ("evaluate", "skipped")]
    assert leftovers(pipeline.store, "convert") == []
    assert not any((pipeline.store.root / "convert" / ".staging").iterdir())
    record = json.loads((result.run_dir / "run.json").read_text())
    assert record["steps"][1]["status"] == "failed" and record["steps"][1]["artifact"] is None
    assert record["reason"] == result.reason  # what a sweep summary reports after a rerun by hand
    assert pipeline.errors.startswith("run again once fixed (finished steps are cached): python -m mambapipe")
    assert pipeline.errors.endswith("\nFAILED convert: convert cannot do this: a one-line reason\n")
    assert pipeline.errors.count("\n") == 2 and "Traceback" not in pipeline.output + pipeline.errors
    assert "FAILED" not in pipeline.output and "run again" not in pipeline.output  # what to paste: the summary alone
    assert pipeline.output.rstrip().splitlines()[-1].startswith("run directory: ")
    pipeline.ran()
    again = pipeline.run()
    assert pipeline.ran() == ["convert", "build", "evaluate"]
    assert not again.failed


def test_unexpected_exception_is_summarised_with_its_type(pipeline, caplog):
    result = pipeline.run(build="crash")
    assert result.failed and result.reason == "build: unexpected RuntimeError: something broke"
    assert leftovers(pipeline.store, "build") == []
    assert any(r.exc_info for r in caplog.records)  # the traceback goes to the log



def test_a_failed_commit_leaves_no_staging_behind(pipeline, monkeypatch):
    """The step finished but moving its output into place failed (full disk, Ctrl-C): its staging
    dir, a whole artifact's worth of files, must not stay behind."""
    from mambapipe.pipeline.store import ArtifactStore

    def manifest_cut_short(self, staging, step, key, manifest, on_wait):
        (staging / MANIFEST).write_text('{"step": ')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(ArtifactStore, "commit", manifest_cut_short)
    result = pipeline.run()
    assert result.reason == f"download: no space left on device in the mambapipe cache {pipeline.store.root}: free " \
                            "space there, or set cache_dir (or MAMBAPIPE_CACHE) to a directory on a disk with room"
    assert not any((pipeline.store.root / "download" / ".staging").iterdir())
    assert complete_artifacts(pipeline.store, "download") == []


def _safetensors_disk_full() -> Exception:
    """What safetensors' save_file raises where the disk fills (measured on a full tmpfs): its own error type, the
    OS error only in its message, as Rust writes it."""
    from safetensors import SafetensorError

    return SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


@pytest.mark.parametrize("error, said", [
    pytest.param(lambda: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "no space left on device", id="ENOSPC"),
    pytest.param(lambda: OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)), "disk quota exceeded", id="EDQUOT"),
    pytest.param(_safetensors_disk_full, "no space left on device", id="safetensors"),
])
@pytest.mark.parametrize("wrapped", [False, True], ids=["raised", "wrapped"])
def test_a_disk_that_fills_while_a_step_writes_names_the_cache_and_keeps_nothing(pipeline, monkeypatch, error, said,
                                                                                  wrapped):
    """Half a shard written, then the disk is full (or the quota spent): one line naming the cache and the settings
    that move it, also where the step's code said it as an error of its own (datasets' DatasetGenerationError around
    the OSError); no traceback, and neither the half-written staging dir nor an artifact left."""
    from pipeline_fakes import FakeStep

    def half_written(self, params, inputs, out_dir, ctx):
        (out_dir / "rank0.safetensors").write_bytes(b"\0" * 1024)
        if not wrapped:
            raise error()
        try:
            raise error()
        except Exception as exc:
            raise StepError("an error of the step's own that hides the disk") from exc

    pipeline.run("steps=[download]")
    monkeypatch.setattr(FakeStep, "run", half_written)
    result = pipeline.run()
    assert result.reason == (f"convert: {said} in the mambapipe cache {pipeline.store.root}: free space there, or set "
                             "cache_dir (or MAMBAPIPE_CACHE) to a directory on a disk with room")
    assert pipeline.errors.endswith(f"\nFAILED {result.reason}\n") and "Traceback" not in pipeline.errors
    assert not any((pipeline.store.root / "convert" / ".staging").iterdir())
    assert complete_artifacts(pipeline.store, "convert") == []
    assert [(o.name, o.status) for o in result.outcomes] == [
        ("download", "cached"), ("convert", "failed"), ("build", "skipped"), ("evaluate", "skipped")]


def test_an_os_error_of_another_kind_stays_a_crash(pipeline, monkeypatch):
    """Only a full disk or quota is said as one: another OSError of a step's is a bug's, its traceback logged."""
    from pipeline_fakes import FakeStep

    def refused(self, params, inputs, out_dir, ctx):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(FakeStep, "run", refused)
    result = pipeline.run()
    assert result.reason == "download: unexpected PermissionError: [Errno 13] Permission denied"


def _run_dir_full(run_dir: Path) -> str:
    return (f"no space left on device in the run directory {run_dir}: free space there, or set hydra.run.dir "
            "(hydra.sweep.dir for a sweep) to a directory on a disk with room")


@pytest.mark.parametrize("name, step, kept", [
    ("config.yaml", "", ["run.json"]),  # the first write: nothing runs that the run dir could not keep
    ("metrics.json", "evaluate: ", ["config.yaml", "run.json"]),  # the copies of the evaluate step's outputs
    ("predictions.jsonl", "evaluate: ", ["config.yaml", "metrics.json", "run.json"]),
    ("run.json", "", ["config.yaml", "metrics.json", "predictions.jsonl"]),  # a run fine otherwise goes unrecorded
])
def test_a_run_dir_that_fills_is_one_line_naming_it_and_keeps_no_file_half_written(pipeline, disk_fills_writing,
                                                                                   name, step, kept):
    """Hydra's outputs/<date>/<time> (hydra.run.dir) on a full disk: one line naming it and how to move it, not a
    traceback, nor a metrics.json cut short that the summary then fails to read back."""
    disk_fills_writing(name)
    result = pipeline.run()
    assert result.reason == step + _run_dir_full(result.run_dir)
    assert pipeline.errors.endswith(f"\nFAILED {result.reason}\n") and "Traceback" not in pipeline.errors
    assert sorted(path.name for path in result.run_dir.iterdir()) == kept  # each whole, no partial file left
    if "run.json" in kept:
        assert json.loads((result.run_dir / "run.json").read_text())["reason"] == result.reason
    if name == "config.yaml":
        assert result.outcomes == [] and pipeline.ran() == []
    else:  # the evaluation is cached all the same: the next run only copies its outputs
        assert [o.status for o in result.outcomes] == ["ran"] * 4
        assert len(complete_artifacts(pipeline.store, "evaluate")) == 1


def test_a_failed_steps_outputs_that_fill_the_run_dir_name_it_not_the_cache(pipeline, disk_fills_writing):
    """A step that failed after writing the files the run dir keeps (its metrics.json): copying them
    fills the run dir's disk, which the line names (the cache's was not full), and the staging dir still goes."""
    disk_fills_writing("metrics.json")
    result = pipeline.run(evaluate="fail")
    assert result.reason == f"evaluate: {_run_dir_full(result.run_dir)}"
    assert not any((pipeline.store.root / "evaluate" / ".staging").iterdir())
    assert complete_artifacts(pipeline.store, "evaluate") == []


def test_a_ctrl_c_stays_one_where_the_run_dir_is_full_too(pipeline, monkeypatch, disk_fills_writing):
    """A Ctrl-C after the step wrote its outputs: the run is interrupted (resume, exit 130), not failed for the run
    dir its outputs could not be copied into."""
    from pipeline_fakes import FakeStep

    real_run = FakeStep.run

    def interrupted_after_its_outputs(self, params, inputs, out_dir, ctx):
        facts = real_run(self, params, inputs, out_dir, ctx)
        if self.name == "evaluate":
            raise KeyboardInterrupt
        return facts

    monkeypatch.setattr(FakeStep, "run", interrupted_after_its_outputs)
    disk_fills_writing("metrics.json")
    result = pipeline.run()
    assert result.interrupted and result.reason == "evaluate: interrupted"
    assert not any((pipeline.store.root / "evaluate" / ".staging").iterdir())


def test_a_run_json_that_fills_the_disk_after_a_failure_is_said_after_it(pipeline, disk_fills_writing):
    disk_fills_writing("run.json")
    result = pipeline.run(convert="fail")
    assert result.reason == ("convert: convert cannot do this: a one-line reason; run.json not written: "
                             f"{_run_dir_full(result.run_dir)}")
    assert not (result.run_dir / "run.json").exists() and not (result.run_dir / ".run.json.partial").exists()

def test_a_step_claims_what_it_reads_while_it_runs(pipeline):
    assert not pipeline.run(convert="expect-claims", build="expect-claims", evaluate="expect-claims").failed


def test_an_input_removed_between_the_plan_and_its_claim_is_one_line(pipeline, monkeypatch):
    """mambapipe-cache rm may win the race for an artifact the plan found cached: the step must not start."""
    from mambapipe.pipeline.store import ArtifactStore

    pipeline.run()
    claim = ArtifactStore.reading

    def removed_first(self, step, key, **kwargs):
        if step == "build":
            self.remove_dir(self.path(step, key))
        return claim(self, step, key, **kwargs)

    monkeypatch.setattr(ArtifactStore, "reading", removed_first)
    result = pipeline.run("force=[evaluate]")
    assert result.reason.startswith("evaluate: build ") and result.reason.endswith(
        " was removed after the plan found it (mambapipe-cache rm?); run again to remake it")


def test_failed_evaluate_keeps_its_metrics_in_the_run_dir_but_not_in_the_cache(pipeline):
    result = pipeline.run(evaluate="fail")
    assert result.failed
    assert json.loads((result.run_dir / "metrics.json").read_text())["rouge1"] == 1.5
    assert complete_artifacts(pipeline.store, "evaluate") == []


def _start(tmp: Path, run: str, behaviour: dict, *overrides: str) -> subprocess.Popen:
    args = [sys.executable, str(FAKE_RUN), str(tmp / "cache"), str(tmp / run), str(tmp / "journal.txt"),
            json.dumps(behaviour), *overrides]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sigkill_mid_step_leaves_nothing_complete(tmp_path, pipeline):
    proc = _start(tmp_path, "killed", {"convert": "sleep:60"})
    try:
        _wait_for(lambda: "convert" in journal_lines(tmp_path / "journal.txt"))
        time.sleep(0.2)  # inside the step, with its staging dir written to
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    store = pipeline.store
    assert len(complete_artifacts(store, "download")) == 1
    assert complete_artifacts(store, "convert") == [] and leftovers(store, "convert") == []
    assert any((store.root / "convert" / ".staging").iterdir())  # the half-written attempt, set apart
    pipeline.ran()
    result = pipeline.run()
    assert pipeline.ran() == ["convert", "build", "evaluate"] and not result.failed
    assert not any((store.root / "convert" / ".staging").iterdir())  # cleaned under the lock


def test_two_concurrent_runs_make_one_artifact(tmp_path, pipeline):
    """The first run holds convert until the second says it waits for it: however slowly either starts."""
    release = tmp_path / "release"
    behaviour = {"convert": f"hold:{release}"}
    procs = [_start(tmp_path, "run0", behaviour)]
    try:
        _wait_for(lambda: "convert" in journal_lines(tmp_path / "journal.txt"))
        procs.append(_start(tmp_path, "run1", behaviour))
        second_lines: list[str] = []
        reader = threading.Thread(target=lambda: second_lines.extend(procs[1].stdout))
        reader.start()
        _wait_for(lambda: any("waiting for another run" in line for line in second_lines))
        release.touch()
        reader.join(timeout=120)
        outputs = [procs[0].communicate(timeout=120)[0], "".join(second_lines)]
        procs[1].wait(timeout=120)
    finally:  # a timeout above must not leave a run holding the lock
        for proc in procs:
            proc.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs
    ran = journal_lines(tmp_path / "journal.txt")
    assert sorted(ran) == sorted(["download", "convert", "build", "evaluate"]), (ran, outputs)
    for step in ("download", "convert", "build", "evaluate"):
        assert len(complete_artifacts(pipeline.store, step)) == 1
    records = [json.loads((tmp_path / f"run{i}" / "run.json").read_text()) for i in range(2)]
    convert = sorted(r["steps"][1]["status"] for r in records)
    assert convert == ["cached", "ran"]
    assert any("waiting for another run" in out for out in outputs)


def test_ctrl_c_is_recorded_and_resumable(pipeline, monkeypatch):
    from pipeline_fakes import FakeStep

    def interrupted(self, *args):
        raise KeyboardInterrupt
    monkeypatch.setattr(FakeStep, "run", interrupted)
    result = pipeline.run()
    assert result.reason == "download: interrupted" and result.interrupted
    assert json.loads((result.run_dir / "run.json").read_text())["steps"][0]["status"] == "failed"
    assert leftovers(pipeline.store, "download") == []
    assert pipeline.errors.startswith("resume (finished steps are cached): python -m mambapipe")
    assert pipeline.errors.endswith("\nFAILED download: interrupted\n") and "resume" not in pipeline.output


def test_ctrl_c_before_any_step_is_recorded_as_an_interrupted_run(pipeline, monkeypatch):
    """Hydra makes the run dir before the plan: without run.json it read as a job killed or still running."""
    from mambapipe.pipeline import runner
    from mambapipe.sweep.summary import read_row

    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(runner, "build_plan", interrupted)
    with pytest.raises(KeyboardInterrupt):  # mambapipe.cli reports it
        pipeline.run()
    run_dir = pipeline.tmp / "runs" / "0"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["reason"] == "interrupted" and record["steps"] == [] and record["stopped_at_plan"]
    row = read_row(run_dir.parent, run_dir)
    assert (row.status, row.reason) == ("failed", "interrupted") and pipeline.output == pipeline.errors == ""


def test_a_ctrl_c_while_a_refused_plan_is_reported_keeps_its_record(pipeline, monkeypatch):
    """Found by review: the plan's refusal is what run.json says, not 'interrupted' with no steps."""
    from mambapipe.pipeline import runner

    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(runner, "print_summary", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(convert="bad-config")
    record = json.loads((pipeline.tmp / "runs" / "0" / "run.json").read_text())
    assert record["reason"] != "interrupted" and record["steps"] and record["stopped_at_plan"]


@pytest.mark.parametrize("behaviour, hint", [
    ({"evaluate": "fail"}, "run again once fixed (finished steps are cached)"),
    ({"build": "crash"}, "run again once fixed (finished steps are cached)"),
    ({"convert": "bad-config"}, "fix it, then run"),  # refused by the plan: no step ran
])
def test_a_failed_run_is_not_offered_a_resume(pipeline, behaviour, hint):
    """The same command fails the same way until the reason is dealt with: only Ctrl-C's run resumes as it is."""
    result = pipeline.run(**behaviour)
    assert result.failed and not result.interrupted
    assert pipeline.errors.splitlines()[0].startswith(f"{hint}: python -m mambapipe hydra.run.dir=")
    assert pipeline.errors.splitlines()[1].startswith("FAILED ") and "resume" not in pipeline.errors


def test_a_ctrl_c_that_a_step_dropped_starts_no_further_step(pipeline, monkeypatch):
    """Python drops a KeyboardInterrupt raised in a __del__; the run must still stop, not go on to exit 0."""
    from mambapipe import interrupts

    pipeline.run("steps=[download]")
    pipeline.ran()
    monkeypatch.setattr(interrupts, "_received", True)  # as the handler leaves it after a dropped Ctrl-C
    result = pipeline.run()
    assert result.interrupted and result.reason == "convert: interrupted" and pipeline.ran() == []
    assert [o.status for o in result.outcomes] == ["cached", "skipped", "skipped", "skipped"]


def test_a_ctrl_c_that_omegaconf_turns_into_another_error_stops_the_run_as_a_ctrl_c(pipeline, monkeypatch):
    """QA: OmegaConf.to_container, interrupted, sometimes raises ConfigKeyError instead (89 of 2000 tries); the run
    then failed with that error (exit 1), not as interrupted (exit 130)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError

    from mambapipe import interrupts

    def dropped_ctrl_c(*args, **kwargs):
        raise ConfigKeyError("'NoneType' object has no attribute '_invalidate_flags_cache'")
    monkeypatch.setattr(OmegaConf, "to_container", dropped_ctrl_c)
    monkeypatch.setattr(interrupts, "_received", True)  # as the handler leaves it
    with pytest.raises(KeyboardInterrupt):
        pipeline.run()
    monkeypatch.setattr(interrupts, "_received", False)  # no Ctrl-C: the error is the config's, as it was
    with pytest.raises(ConfigKeyError):
        pipeline.run()


def test_the_handler_remembers_a_ctrl_c_it_raises(monkeypatch):
    import os
    import signal

    from mambapipe import interrupts

    monkeypatch.setattr(interrupts, "_received", False)
    previous = signal.getsignal(signal.SIGINT)
    try:
        interrupts.watch()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs at the next bytecode; the sleep is cut short by it
    finally:
        signal.signal(signal.SIGINT, previous)
    assert interrupts.received()


def test_a_ctrl_c_in_a_deferred_block_is_raised_once_the_block_is_done(monkeypatch):
    """As for an import that must not stop halfway: the block runs to its end, then the KeyboardInterrupt comes."""
    import os
    import signal

    from mambapipe import interrupts

    monkeypatch.setattr(interrupts, "_received", False)
    previous = signal.getsignal(signal.SIGINT)
    done = []
    try:
        interrupts.watch()
        with pytest.raises(KeyboardInterrupt):
            with interrupts.deferred():
                with interrupts.deferred():  # nested: held until the outer block is done too
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(0.2)  # the handler runs meanwhile, and raises nothing here
                    done.append("inner")
                done.append("outer")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert done == ["inner", "outer"] and interrupts.received()


def rerun_overrides(output: str) -> list[str]:
    """The overrides of the command the failed run prints, without its hydra.run.dir."""
    line = next(line for line in output.splitlines() if line.startswith("run again once fixed"))
    return shlex.split(line.split(": ", 1)[1])[len(program_name().split()):-1]


@pytest.mark.parametrize("typed, again", [
    ("force=[download,convert,build]", "force=[build]"),
    ("force=[download, convert, build]", "force=[build]"),  # as typed in shell quotes
    ('force=["download","convert","build"]', "force=[build]"),
    ("force=['download', 'convert', 'build']", "force=[build]"),
    ("++force=[download,convert,build]", "++force=[build]"),
    ("force=[convert,download]", "force=[]"),  # every forced step made: none is forced again
])
def test_the_rerun_command_forces_no_step_the_run_already_made_again(pipeline, typed, again):
    pipeline.run()
    result = pipeline.run("dtype=float16", typed, build="fail")
    assert result.failed and rerun_overrides(pipeline.errors) == ["dtype=float16", again]


def test_the_rerun_command_forces_the_steps_a_recipe_forced_that_the_run_did_not_make(pipeline):
    pipeline.run()
    result = pipeline.run("dtype=float16", "force=[convert,build]", typed=["dtype=float16"], build="fail")
    assert result.failed and rerun_overrides(pipeline.errors) == ["dtype=float16", "force=[build]"]


def test_the_rerun_command_keeps_the_force_where_the_run_made_no_forced_step(pipeline):
    result = pipeline.run("force=[build, evaluate]", convert="fail")  # download made, but not forced
    assert result.failed and rerun_overrides(pipeline.errors) == ["force=[build, evaluate]"]


def test_a_ctrl_c_dropped_inside_a_step_fails_that_step_and_keeps_nothing(pipeline, monkeypatch):
    from pipeline_fakes import FakeStep

    from mambapipe import interrupts

    monkeypatch.setattr(interrupts, "_received", False)
    real_run = FakeStep.run

    def dropping(self, *args):
        facts = real_run(self, *args)
        if self.name == "convert":
            monkeypatch.setattr(interrupts, "_received", True)  # as the handler leaves it when a __del__ drops one
        return facts
    monkeypatch.setattr(FakeStep, "run", dropping)
    result = pipeline.run()
    assert result.interrupted and result.reason == "convert: interrupted"
    assert [o.status for o in result.outcomes] == ["ran", "failed", "skipped", "skipped"]
    assert complete_artifacts(pipeline.store, "convert") == [] and leftovers(pipeline.store, "convert") == []


def test_the_command_line_watches_for_ctrl_c_before_anything_else(monkeypatch):
    from mambapipe import app, cli, interrupts

    calls = []
    monkeypatch.setattr(interrupts, "watch", lambda: calls.append("watch"))
    monkeypatch.setattr(app, "run_app", lambda: calls.append("app"))
    cli.main()
    assert calls == ["watch", "app"]
