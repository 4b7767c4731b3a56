"""A sweep whose standard output's reader went away (`python -m mambapipe -m ... | head -3`): the job that found it
says so, the sweep launches no further job, and its summary says why those did not start; under joblib, a job handed
to a worker already finds the reader gone and starts no child. The real pipe closed early is in
test_sweep_multirun.py."""

from __future__ import annotations

import csv
import io
import json
import os
import sys

import pytest
import yaml
from test_sweep_callback import finish
from test_sweep_interrupted import write_done_job, write_multirun_yaml
from test_sweep_jobs import run_job_with_a_bad_config

from mambapipe.sweep.cli import main as sweep_cli
from mambapipe.sweep.job import READER_GONE_REASON, _record_exit, stdout_reader_gone
from mambapipe.sweep.summary import NOT_RUN_UNREAD


def test_a_pipe_whose_reader_closed_it_is_found_without_a_write(monkeypatch):
    read_fd, write_fd = os.pipe()
    with open(write_fd, "w") as writer:
        monkeypatch.setattr(sys, "stdout", writer)  # in the test itself: pytest puts its capture back between phases
        assert not stdout_reader_gone()
        os.close(read_fd)
        assert stdout_reader_gone()
        monkeypatch.undo()


def test_a_file_or_a_stdout_without_a_descriptor_has_no_reader_to_lose(tmp_path, monkeypatch):
    with open(tmp_path / "results.txt", "w") as results:
        monkeypatch.setattr(sys, "stdout", results)
        assert not stdout_reader_gone()
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert not stdout_reader_gone()


@pytest.mark.parametrize("code, child_reason, expected", [
    (1, None, READER_GONE_REASON),  # rich's print to the closed pipe: exit 1 without a word
    (1, "build: a one-line reason", "build: a one-line reason"),  # it failed on its own first
    (0, None, None),  # it had printed everything before the reader went
    (-9, None, "job process killed by signal 9"),  # e.g. the OOM killer, meanwhile
])
def test_the_job_that_found_the_reader_gone_records_it(tmp_path, code, child_reason, expected):
    (tmp_path / "sweep_job.json").write_text(json.dumps({"job_num": 0, "reason": child_reason}))
    record = _record_exit(tmp_path, code, 1.0, reader_gone=True)
    assert record["reason"] == expected and record["stdout_reader_gone"] is True


def test_the_summary_says_why_the_jobs_after_it_did_not_start(tmp_path):
    sweep = tmp_path / "sweep"
    write_multirun_yaml(sweep, "recipe=quickstart", "dtype=float32,bfloat16,float16")
    write_done_job(sweep, 0, ["recipe=quickstart", "dtype=float32"], exit_code=1, reason=READER_GONE_REASON)
    record = json.loads((sweep / "0" / "sweep_job.json").read_text())
    (sweep / "0" / "sweep_job.json").write_text(json.dumps({**record, "stdout_reader_gone": True}))
    assert sweep_cli(["summarize", str(sweep), "--no-plots"]) == 1
    with open(sweep / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["status"], r["reason"]) for r in rows] == [("failed", READER_GONE_REASON),
                                                         ("not run", NOT_RUN_UNREAD), ("not run", NOT_RUN_UNREAD)]
    not_run = (sweep / "summary.md").read_text().split("## Jobs not run")[1]
    assert not_run.startswith("\n\nNot started: the sweep stopped launching jobs once standard output's reader had "
                              "gone (`| head`?).\n\n- job 1: ")


def test_a_job_that_found_the_reader_gone_before_its_child_is_not_run(tmp_path):
    """Under joblib, job 2 was handed to a worker before the reader went: its dir and record exist, yet it started no
    child. Before, it counted as failed (`no run.json`); it is one of the jobs not run, with the finish command."""
    sweep = tmp_path / "sweep"
    write_multirun_yaml(sweep, "recipe=quickstart", "dtype=float32,bfloat16,float16")
    for num, dtype in enumerate(("float32", "bfloat16")):
        write_done_job(sweep, num, ["recipe=quickstart", f"dtype={dtype}"], exit_code=1, reason=READER_GONE_REASON)
    record = json.loads((sweep / "0" / "sweep_job.json").read_text())
    (sweep / "2" / ".hydra").mkdir(parents=True)
    (sweep / "2" / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["recipe=quickstart", "dtype=float16"]))
    (sweep / "2" / "sweep_job.json").write_text(json.dumps({
        **record, "job_num": 2, "exit_code": None, "reason": NOT_RUN_UNREAD, "not_started": True,
        "stdout_reader_gone": True}))
    assert sweep_cli(["summarize", str(sweep), "--no-plots"]) == 1
    with open(sweep / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["job"], r["status"], r["reason"]) for r in rows][2] == ("2", "not run", NOT_RUN_UNREAD)
    not_run = (sweep / "summary.md").read_text().split("## Jobs not run")[1]
    assert "\n- job 2: " in not_run and "dtype=float16" in not_run


def test_a_sweep_whose_launcher_ran_every_job_ends_in_the_failed_line_not_its_table(sweep_dir, monkeypatch, capsys):
    """joblib's (or submitit's) sweep ends in the callback with the reader gone: before, its table died on the broken
    pipe (rich's exit 1, without a word); now the summary files, the FAILED line and the finish command."""
    read_fd, write_fd = os.pipe()
    with open(write_fd, "w") as writer:
        monkeypatch.setattr(sys, "stdout", writer)
        os.close(read_fd)
        with pytest.raises(SystemExit) as exit_info:
            finish(sweep_dir, plots=False)
        monkeypatch.undo()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == ("FAILED standard output's reader went away (`| head`?): 3 jobs: 2 ok, 1 failed. "
                                       f"summary: {sweep_dir / 'summary.md'}\n")
    assert (sweep_dir / "summary.csv").is_file()


def test_a_job_run_again_forgets_that_the_reader_had_gone_the_time_before(tmp_path):
    """A sweep finished by its resume command runs a job into the dir where the reader's going had stopped it; ending
    before its child (a config that cannot resolve, a Ctrl-C), it must not tell the summary that the reader went again
    (the jobs not run would read as stopped by `| head`)."""
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "sweep_job.json").write_text(json.dumps({"job_num": 0, "reason": NOT_RUN_UNREAD,
                                                               "not_started": True, "stdout_reader_gone": True}))
    record = run_job_with_a_bad_config(tmp_path)
    assert record["reason"].startswith("config: ") and record["stdout_reader_gone"] is False
