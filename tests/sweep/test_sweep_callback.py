"""The end-of-sweep callback: writes the summary, and its exit code says whether any job failed."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from mambapipe.sweep.callback import SweepSummaryCallback


def finish(sweep_dir, plots: bool = True) -> None:
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})
    callback = SweepSummaryCallback(plots=plots)
    callback.on_multirun_start(config=config)
    callback.on_multirun_end(config=config)


def test_a_failed_job_fails_the_sweep_after_the_summary(sweep_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        finish(sweep_dir)
    assert exit_info.value.code == 1
    captured = capsys.readouterr()  # the table is the result to paste; which jobs failed, an error
    assert captured.err == "FAILED 1 of 3 jobs: 2\n"
    assert f"summary: {sweep_dir / 'summary.md'}\n" in captured.out and "FAILED" not in captured.out
    assert {"summary.md", "summary.csv", "tokens_per_s.png", "rouge.png"} <= {p.name for p in sweep_dir.iterdir()}


def test_all_jobs_ok_returns_normally(sweep_dir):
    (sweep_dir / "2" / "sweep_job.json").write_text(json.dumps({"exit_code": 0}))
    (sweep_dir / "2" / "run.json").write_text(json.dumps({"steps": []}))
    finish(sweep_dir, plots=False)
    assert (sweep_dir / "summary.csv").is_file() and not (sweep_dir / "rouge.png").exists()


def test_a_damaged_results_file_fails_its_job_not_the_summary(sweep_dir, capsys):
    (sweep_dir / "0" / "metrics.json").write_text("{truncated")
    with pytest.raises(SystemExit) as exit_info:
        finish(sweep_dir, plots=False)
    assert exit_info.value.code == 1
    assert "FAILED 2 of 3 jobs: 0, 2" in capsys.readouterr().err
    assert "- job 0: unreadable metrics.json (JSONDecodeError: " in (sweep_dir / "summary.md").read_text()


def test_a_summary_that_cannot_be_written_fails_the_sweep_with_a_rebuild_hint(sweep_dir, capsys):
    (sweep_dir / "summary.md").mkdir()  # writing it raises IsADirectoryError
    with pytest.raises(SystemExit) as exit_info:
        finish(sweep_dir, plots=False)
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(f"FAILED could not summarize {sweep_dir}: IsADirectoryError")
    assert captured.err.endswith(f"; after a fix: mambapipe-sweep summarize {sweep_dir}\n")


@pytest.mark.parametrize("filled", ["summary.csv", "summary.md", "rouge.png"])
def test_a_summary_that_fills_the_disk_fails_the_sweep_in_one_line_and_leaves_no_file_half_written(
        sweep_dir, disk_fills_writing, capsys, caplog, filled):
    """Not 'could not summarize ...: OSError: [Errno 28] ...' with the traceback logged: the jobs' results are all
    there, and the summary is to be written again once there is room."""
    disk_fills_writing(filled)
    with pytest.raises(SystemExit) as exit_info:
        finish(sweep_dir)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == (f"FAILED no space left on device in the sweep directory {sweep_dir}: free space "
                                       f"there, then: mambapipe-sweep summarize {sweep_dir}\n")
    assert not caplog.records
    assert not (sweep_dir / filled).exists() and not (sweep_dir / f".{filled}.partial").exists()


def test_a_sweep_dir_given_relative_is_printed_absolute(sweep_dir, monkeypatch, capsys):
    """`-m hydra.sweep.dir=sweep`: the summary's path on the terminal is absolute, as its run dirs and the commands a
    sweep prints are, and as summary.md names it."""
    monkeypatch.chdir(sweep_dir.parent)
    with pytest.raises(SystemExit):
        finish(sweep_dir.name, plots=False)
    assert f"summary: {sweep_dir / 'summary.md'}\n" in capsys.readouterr().out
