"""The sweep summary rebuilt from run dirs: rows, CSV, Markdown, plots and the summarize command."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from matplotlib.figure import Figure
from matplotlib.image import imread
from sweep_support import STEPS, start_sweep, summarize_metrics

from mambapipe.sweep.cli import main as sweep_cli
from mambapipe.sweep.plots import plot_rouge
from mambapipe.sweep.report import summarize_sweep
from mambapipe.sweep.summary import collect_rows, find_run_dirs, varying_overrides
from mambapipe.sweep.tables import CSV_COLUMNS, count_line


def test_rows_read_statuses_metrics_and_failure_reason(sweep_dir):
    rows = collect_rows(sweep_dir).rows
    assert [r.job for r in rows] == ["0", "1", "2"]
    assert [r.status for r in rows] == ["ok", "ok", "failed"]
    assert rows[1].steps == {"download": "cached", "convert": "ran", "build": "ran", "evaluate": "ran"}
    assert rows[0].metrics["rouge1"] == 21.5 and rows[1].metrics["tokens_per_s"] == 95.5
    assert rows[1].throughput == [(1, 95.5)]
    assert rows[2].reason.startswith("build: max_seq_len 64") and rows[2].metrics["rouge1"] is None


def test_job_dirs_sort_by_number_not_text(tmp_path, job_writer):
    for num in (10, 2, 1):
        job_writer(tmp_path, num, [f"x={num}"])
    assert [d.name for d in find_run_dirs(tmp_path)] == ["1", "2", "10"]


def test_killed_job_without_run_json_is_failed(tmp_path, job_writer):
    run_dir = job_writer(tmp_path, 0, ["dtype=float32"], exit_code=None)
    (run_dir / "run.json").unlink()
    [row] = collect_rows(tmp_path).rows
    assert row.failed and "no run.json" in row.reason


def test_a_job_whose_plan_was_refused_shows_that_no_step_ran(tmp_path, job_writer):
    """run.json gives such a run's statuses as planned (cached: there to reuse), which would read as a success."""
    problem = "model.path is set but model.source=synthetic reads no path"
    job_writer(tmp_path, 0, ["model.source=synthetic"], statuses=("cached", "cached", "cached", "skipped"),
               exit_code=1, reason=problem, stopped_at_plan=True)
    job_writer(tmp_path, 1, ["model.source=local"], statuses=("failed", "skipped", "skipped", "skipped"),
               exit_code=1, reason="download: model.path=/nonexistent/dir does not exist", stopped_at_plan=True)
    summarize_sweep(tmp_path, plots=False)
    assert [r[s] for r in csv_records(tmp_path) for s in STEPS] == ["not run"] * 4 + ["refused"] + ["not run"] * 3
    text = (tmp_path / "summary.md").read_text()
    assert "| 0 | model.source=synthetic | failed | not run | not run | not run | not run |" in text
    assert "| 1 | model.source=local | failed | refused | not run | not run | not run |" in text
    assert f"- job 0: {problem}" in text


def test_a_plan_only_sweep_says_its_jobs_only_planned(tmp_path, job_writer, capsys):
    for num, dtype in enumerate(("float32", "float16")):
        job_writer(tmp_path, num, [f"dtype={dtype}"], dtype=dtype, statuses=("cached", "skipped", "skipped", "skipped"),
                   stopped_at_plan=True)
    assert sweep_cli(["summarize", str(tmp_path), "--no-plots"]) == 0  # as plan_only=true exits
    console = " ".join(capsys.readouterr().out.split())
    assert "│ 0 │ dtype=float32 │ planned │ not run │" in console
    records = csv_records(tmp_path)
    assert [(r["status"], r["download"], r["rouge1"], r["tokens_per_s"]) for r in records] == [
        ("planned", "not run", "", "")] * 2
    text = (tmp_path / "summary.md").read_text()
    assert "2 jobs planned (plan_only=true): nothing ran." in text and "| ok |" not in text


def test_counts_name_planned_jobs_beside_the_others(tmp_path, job_writer):
    job_writer(tmp_path, 0, ["plan_only=true"], statuses=("skipped",) * 4, stopped_at_plan=True)
    job_writer(tmp_path, 1, ["plan_only=false"], metrics=summarize_metrics(21.5, 120.0, 8.0))
    assert count_line(collect_rows(tmp_path).rows) == "2 jobs: 1 ok, 0 failed, 1 planned."


def test_counts_of_one_job_and_of_none_read_right(tmp_path, job_writer):
    assert count_line([]) == "0 jobs: 0 ok, 0 failed."
    job_writer(tmp_path, 0, ["plan_only=true"], statuses=("skipped",) * 4, stopped_at_plan=True)
    assert count_line(collect_rows(tmp_path).rows) == "1 job planned (plan_only=true): nothing ran."


def test_benchmark_job_reports_its_fastest_scenario(tmp_path, job_writer):
    rows = [{"batch": b, "input_len": 100, "output_len": 100, "tokens_per_s": t, "decode_ms_per_step": d,
             "prefill_ms": p} for b, t, d, p in ((1, 50.0, 20.0, 3.0), (8, 300.0, 26.6, 9.5), (64, None, None, None))]
    job_writer(tmp_path, 0, ["eval.task=benchmark"], metrics={"task": "benchmark", "rows": rows})
    [row] = collect_rows(tmp_path).rows
    assert row.metrics["tokens_per_s"] == 300.0 and row.metrics["decode_ms_per_step"] == 26.6
    assert row.metrics["throughput_of"] == "B=8 100/100" and row.metrics["ttft_ms"] == 9.5
    assert row.throughput == [(1, 50.0), (8, 300.0)]


def test_summarize_on_a_full_disk_says_so_in_one_line(sweep_dir, disk_fills_writing, capsys):
    disk_fills_writing("summary.md")
    assert sweep_cli(["summarize", str(sweep_dir), "--no-plots"]) == 1
    assert capsys.readouterr().err == (f"FAILED no space left on device in the sweep directory {sweep_dir}: free space "
                                       f"there, then: mambapipe-sweep summarize {sweep_dir}\n")


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        sweep_cli(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out == f"mambapipe-sweep {metadata.version('mambapipe')}\n"


def test_summarizing_a_sweep_does_not_import_torch():
    """The summary labels benchmark rows as the benchmark does, from a module kept apart from its torch."""
    code = "import sys, mambapipe.sweep.cli, mambapipe.sweep.report; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_benchmark_sweep_shows_no_empty_rouge_columns_but_keeps_the_csv_schema(tmp_path, job_writer, capsys):
    for num, batch in enumerate((1, 8)):
        rows = [{"batch": batch, "input_len": 100, "output_len": 100, "tokens_per_s": 50.0 * batch,
                 "decode_ms_per_step": 20.0, "prefill_ms": 3.0}]
        job_writer(tmp_path, num, [f"eval.scenarios.0.batch={batch}"], metrics={"task": "benchmark", "rows": rows})
    assert sweep_cli(["summarize", str(tmp_path), "--no-plots"]) == 0
    console = capsys.readouterr().out
    assert "tokens/s" in console and "rouge1" not in console
    assert "400.000 (B=8" in console and "reason" not in console  # which scenario; no empty column
    header = (tmp_path / "summary.md").read_text().split("| job |")[1].splitlines()[0]
    assert header == " overrides | status | download | convert | build | evaluate | tokens/s | tokens/s of | " \
                     "decode ms/step |"
    with open(tmp_path / "summary.csv", newline="") as handle:
        assert tuple(csv.DictReader(handle).fieldnames) == CSV_COLUMNS  # the same columns in every sweep


def test_the_tables_say_how_the_summarize_task_timed_its_tokens_per_s(sweep_dir, tmp_path, job_writer, capsys):
    """One pass after a one-prompt warm-up, unlike the benchmark task's median: a reader cannot tell from the row."""
    sweep_cli(["summarize", str(sweep_dir), "--no-plots"])
    console = " ".join(capsys.readouterr().out.split())
    note = "summarize tokens/s: one timed pass over the eval batches after a one-prompt warm-up"
    assert note in (sweep_dir / "summary.md").read_text() and note in console
    # A benchmark-only sweep: no such tokens/s, no note.
    job_writer(tmp_path / "bench", 0, ["eval.task=benchmark"], metrics={"task": "benchmark", "rows": [
        {"batch": 1, "input_len": 8, "output_len": 8, "tokens_per_s": 50.0}]})
    summarize_sweep(tmp_path / "bench", plots=False)
    assert "summarize tokens/s" not in (tmp_path / "bench" / "summary.md").read_text()


def test_labels_keep_only_the_overrides_that_vary(sweep_dir):
    assert varying_overrides(collect_rows(sweep_dir).rows) == {"dtype"}


def test_csv_has_one_row_per_job_with_every_fact(sweep_dir):
    summarize_sweep(sweep_dir, plots=False)
    with open(sweep_dir / "summary.csv", newline="") as handle:
        records = list(csv.DictReader(handle))
    assert [r["status"] for r in records] == ["ok", "ok", "failed"]
    assert records[0]["overrides"] == "recipe=quickstart dtype=float32"
    assert float(records[1]["rouge1"]) == 20.25 and float(records[1]["decode_ms_per_step"]) == 10.0
    assert records[2]["build"] == "failed" and records[2]["evaluate"] == "skipped"
    assert records[2]["reason"].startswith("build:") and records[2]["dtype"] == "float16"


def test_markdown_lists_jobs_failures_and_rerun_commands(sweep_dir):
    summarize_sweep(sweep_dir)
    text = (sweep_dir / "summary.md").read_text()
    assert "3 jobs: 2 ok, 1 failed." in text
    assert "| 1 | dtype=bfloat16 | ok | cached | ran | ran | ran | 20.250 |" in text
    assert "- job 2: build: max_seq_len 64 < max_input_len 256" in text
    assert f"rerun: `python -m mambapipe recipe=quickstart dtype=float16 hydra.run.dir={sweep_dir / '2'}`" in text
    assert "![tokens_per_s](tokens_per_s.png)" in text and "![rouge](rouge.png)" in text


@pytest.mark.parametrize("batches", [(1,), (1, 4, 16)])
def test_plots_are_real_pngs(tmp_path, job_writer, batches):
    for num, (batch, dtype) in enumerate((b, d) for b in batches for d in ("float32", "bfloat16")):
        job_writer(tmp_path, num, [f"eval.batch_size={batch}", f"dtype={dtype}"], dtype=dtype, eval_batch=batch,
                   metrics=summarize_metrics(10.0 + num, 40.0 * batch + num, 5.0))
    summarize_sweep(tmp_path)
    for name in ("tokens_per_s.png", "rouge.png"):
        image = imread(tmp_path / name)  # (H, W, 4)
        assert image.shape[0] > 200 and image.shape[1] > 500
        assert image[..., :3].std() > 0.05  # something drawn, not a blank canvas


@pytest.mark.parametrize("rouge1", [0.0, 0.4, 35.0])
def test_the_rouge_axis_spans_the_0_to_100_scale_its_label_names(tmp_path, job_writer, monkeypatch, rouge1):
    figures = []
    monkeypatch.setattr(Figure, "savefig", lambda figure, *args, **kwargs: figures.append(figure))
    job_writer(tmp_path, 0, ["dtype=float32"], metrics=summarize_metrics(rouge1, 40.0, 5.0))
    assert plot_rouge(collect_rows(tmp_path).rows, tmp_path / "rouge.png")
    [axes] = figures[0].axes
    assert axes.get_xlabel() == "score (0-100)" and axes.get_xlim() == (0.0, 100.0)


def test_no_metrics_means_no_plots(tmp_path, job_writer):
    job_writer(tmp_path, 0, ["dtype=float32"], statuses=("ran", "failed", "skipped", "skipped"), exit_code=1,
               reason="convert: boom")
    summarize_sweep(tmp_path)
    assert not list(tmp_path.glob("*.png")) and (tmp_path / "summary.md").is_file()


def test_a_summary_without_plots_removes_its_earlier_plots_only(sweep_dir):
    summarize_sweep(sweep_dir)
    (sweep_dir / "mine.png").write_bytes(b"the user's own")
    assert sweep_cli(["summarize", str(sweep_dir), "--no-plots"]) == 1  # job 2 failed
    assert sorted(p.name for p in sweep_dir.glob("*.png")) == ["mine.png"]  # no plot of other numbers stays
    assert "## Plots" not in (sweep_dir / "summary.md").read_text()


def test_a_plot_with_nothing_left_to_show_is_removed(sweep_dir):
    summarize_sweep(sweep_dir)
    for run_dir in (sweep_dir / "0", sweep_dir / "1"):  # rerun as benchmark jobs: no ROUGE any more
        (run_dir / "metrics.json").write_text(json.dumps({"task": "benchmark", "rows": [
            {"batch": 1, "input_len": 8, "output_len": 8, "tokens_per_s": 50.0}]}))
    summarize_sweep(sweep_dir)
    assert sorted(p.name for p in sweep_dir.glob("*.png")) == ["tokens_per_s.png"]


def test_summarize_command_exit_codes(sweep_dir, tmp_path, capsys):
    assert sweep_cli(["summarize", str(sweep_dir)]) == 1  # job 2 failed
    assert "build: max_seq_len 64" in capsys.readouterr().out  # the reason, on the console too
    json_record = sweep_dir / "2" / "sweep_job.json"
    json_record.write_text(json.dumps({"exit_code": 0, "reason": None}))
    (sweep_dir / "2" / "run.json").write_text(json.dumps({"steps": []}))
    assert sweep_cli(["summarize", str(sweep_dir), "--no-plots"]) == 0
    capsys.readouterr()
    assert sweep_cli(["summarize", str(tmp_path / "nowhere")]) == 2
    (tmp_path / "empty").mkdir()
    assert sweep_cli(["summarize", str(tmp_path / "empty")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # usage errors go to standard error, as argparse's do
    [nowhere, empty] = captured.err.splitlines()  # each error is one line, however long the path
    assert nowhere.endswith("nowhere is not a directory: pass the sweep dir (multirun/<date>/<time>, or the sweep's "
                            "hydra.sweep.dir)")
    assert "no job run dirs" in empty and empty.endswith("is it a sweep directory?")


def test_console_table_shows_overrides_and_reasons_verbatim(tmp_path, job_writer, capsys):
    """List overrides look like rich markup tags; the table must print them as typed."""
    job_writer(tmp_path, 0, ["steps=[evaluate]"], statuses=("cached", "cached", "cached", "failed"), exit_code=1,
               reason="evaluate: cannot load the tokenizer; re-run the download step (force=[download])")
    job_writer(tmp_path, 1, ["steps=[build,evaluate]"], metrics=summarize_metrics(21.5, 120.0, 8.0))
    assert sweep_cli(["summarize", str(tmp_path), "--no-plots"]) == 1
    out = " ".join(capsys.readouterr().out.split())  # the table may wrap long cells
    assert "steps=[evaluate]" in out and "steps=[build,evaluate]" in out and "(force=[download])" in out


def test_a_job_whose_gate_missed_says_so_beside_its_step_status(tmp_path, job_writer, capsys):
    """A job failed by the accuracy gate on a cached evaluation: its evaluate cell said `cached`, as an ok job's. Now
    `cached, gate missed` in summary.md, summary.csv and the console; its speeds are still marked as measured
    earlier. Its rerun line was the job's command, which fails the same way from the cache; now it leaves the
    threshold to fill in (run.json's gate_verdict), and forces nothing the job made (forced, it ran)."""
    gate = ("evaluate: rouge1 21.50 <= threshold 90.00 (eval.check_accuracy); metrics.json is in the run directory; "
            "compare with eval.compare_hf=true or lower eval.rouge1_threshold")
    job_writer(tmp_path, 0, ["eval.rouge1_threshold=90", "force=[evaluate]"], statuses=("cached",) * 3 + ("ran",),
               gate_missed=("evaluate",), force=("evaluate",), metrics=summarize_metrics(21.5, 120.0, 8.0),
               exit_code=1, reason=gate,
               gate_verdict={"step": "evaluate", "key": "eval.rouge1_threshold", "change": "lower"})
    job_writer(tmp_path, 1, ["eval.rouge1_threshold=10"], statuses=("cached",) * 4,
               metrics=summarize_metrics(21.5, 120.0, 8.0))
    assert sweep_cli(["summarize", str(tmp_path), "--no-plots"]) == 1
    console = " ".join(capsys.readouterr().out.split())
    assert "│ failed │ ran ✗gate │" in console and "│ ok │ cached │" in console  # the console's short form
    markdown = (tmp_path / "summary.md").read_text()
    assert "| failed | cached | cached | cached | ran, gate missed | 21.500 | 10.750 |" in markdown
    assert "| ok | cached | cached | cached | cached | 21.500 | 10.750 |" in markdown
    assert "| 120.000 |" in markdown and "| 120.000 † |" in markdown  # measured by job 0, by an earlier run for 1
    assert (f"- job 0: {gate}\n  evaluate's result is cached: a lower eval.rouge1_threshold is checked against it in "
            "about a second: `python -m mambapipe 'eval.rouge1_threshold=<lower>' 'force=[]' "
            f"hydra.run.dir={tmp_path / '0'}`") in markdown
    assert [record["evaluate"] for record in csv_records(tmp_path)] == ["ran, gate missed", "cached"]


def test_a_gate_missed_status_stays_on_one_line_of_a_120_column_console(tmp_path, job_writer, capsys, monkeypatch):
    """At 120 columns, with the reason column a gate-missed job brings and ROUGE-1's interval, the console's evaluate
    cell read `cached, gate` over `missed`. The console says `cached ✗gate` (red on a terminal) on one line; the
    files keep `cached, gate missed`."""
    monkeypatch.setenv("COLUMNS", "120")
    metrics = {**summarize_metrics(21.5, 120.0, 8.0), "rouge1_low": 19.25, "rouge1_high": 23.75}
    overrides = ["eval.rouge1_threshold=90", "force=[evaluate]", "dtype=bfloat16"]
    gate = ("evaluate: rouge1 21.50 <= threshold 90.00 (eval.check_accuracy); metrics.json is in the run directory; "
            "compare with eval.compare_hf=true or lower eval.rouge1_threshold")
    job_writer(tmp_path, 0, overrides, statuses=("cached",) * 4, gate_missed=("evaluate",), metrics=metrics,
               exit_code=1, reason=gate)
    job_writer(tmp_path, 1, ["eval.rouge1_threshold=10", "dtype=float16"], statuses=("cached",) * 4, metrics=metrics)
    assert sweep_cli(["summarize", str(tmp_path), "--no-plots"]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("│")]
    assert max(map(len, lines)) <= 120
    table = [line.split("│") for line in lines]
    assert [(cells[1].strip(), cells[4].strip()) for cells in table if cells[1].strip()] == [
        ("0", "cached ✗gate"), ("1", "cached")]
    assert all(cells[4].strip() == "" for cells in table if not cells[1].strip())  # no second line of a status
    assert [record["evaluate"] for record in csv_records(tmp_path)] == ["cached, gate missed", "cached"]
    assert "| failed | cached | cached | cached | cached, gate missed |" in (tmp_path / "summary.md").read_text()


def csv_records(sweep_dir):
    with open(sweep_dir / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


DAMAGED_FILES = [
    ("run.json", ""),  # `: > run.json`
    ("run.json", '{"steps": [{"name": "download"'),  # cut off mid-write
    ("run.json", "[1, 2]"),
    ("metrics.json", "{truncated"),
    ("sweep_job.json", ""),
    ("config.yaml", ""),
    ("config.yaml", "model: {name: [tiny"),
    (".hydra/overrides.yaml", "- dtype=float32\n- [unclosed"),
]


@pytest.mark.parametrize("name, text", DAMAGED_FILES)
def test_a_damaged_file_fails_its_job_and_names_the_file(sweep_dir, name, text):
    (sweep_dir / "0" / name).write_text(text)
    rows = collect_rows(sweep_dir).rows
    assert rows[0].failed and rows[0].reason.startswith(f"unreadable {name} (")
    assert [r.status for r in rows[1:]] == ["ok", "failed"] and rows[2].reason.startswith("build:")


def test_summarize_reports_a_damaged_job_instead_of_crashing(sweep_dir, capsys):
    (sweep_dir / "1" / "run.json").write_text("")
    assert sweep_cli(["summarize", str(sweep_dir), "--no-plots"]) == 1
    assert "unreadable run.json (empty file)" in " ".join(capsys.readouterr().out.split())
    records = csv_records(sweep_dir)
    assert [r["status"] for r in records] == ["ok", "failed", "failed"]
    assert records[1]["reason"] == "unreadable run.json (empty file)" and float(records[1]["rouge1"]) == 20.25


def test_a_job_with_unreadable_overrides_gets_no_rerun_command(sweep_dir):
    (sweep_dir / "2" / ".hydra" / "overrides.yaml").write_text("[unclosed")
    summarize_sweep(sweep_dir, plots=False)
    text = (sweep_dir / "summary.md").read_text()
    assert "- job 2: unreadable .hydra/overrides.yaml (" in text
    assert "rerun: not known (.hydra/overrides.yaml is unreadable)" in text and "hydra.run.dir=" not in text


RERUN_FINISHED = "2026-12-01T10:00:00.000+00:00"


def rerun_by_hand(run_dir, statuses, reason=None, metrics=None):
    """What `python -m mambapipe <the job's overrides> hydra.run.dir=<run_dir>` leaves: a new run.json
    (and metrics.json); the sweep's sweep_job.json stays as the sweep wrote it."""
    steps = [{"name": name, "key": "k" * 64, "status": status, "seconds": 0.1, "artifact": None}
             for name, status in zip(STEPS, statuses)]
    (run_dir / "run.json").write_text(json.dumps({"steps": steps, "reason": reason, "finished": RERUN_FINISHED}))
    if metrics is not None:
        (run_dir / "metrics.json").write_text(json.dumps(metrics))


def test_a_job_rerun_by_hand_reports_its_new_outcome(sweep_dir):
    rerun_by_hand(sweep_dir / "2", ("cached", "cached", "ran", "ran"), metrics=summarize_metrics(19.0, 80.0, 9.0))
    row = collect_rows(sweep_dir).rows[2]
    assert (row.status, row.reason, row.steps["build"], row.metrics["rouge1"]) == ("ok", None, "ran", 19.0)
    assert sweep_cli(["summarize", str(sweep_dir), "--no-plots"]) == 0


def test_a_failed_rerun_by_hand_reports_its_own_reason(sweep_dir):
    rerun_by_hand(sweep_dir / "2", ("skipped",) * 4, reason="tp_size=3 does not fit the model")
    row = collect_rows(sweep_dir).rows[2]
    assert row.failed and row.reason == "tp_size=3 does not fit the model"


def test_the_sweep_record_stands_for_the_run_json_it_accounts_for(sweep_dir):
    """Killed after the runner wrote run.json: the record knows that run.json, so its verdict is the newer."""
    run_dir = sweep_dir / "0"
    rerun_by_hand(run_dir, ("ran",) * 4)
    (run_dir / "sweep_job.json").write_text(json.dumps({"exit_code": -9, "reason": "job process killed by signal 9",
                                                        "run_json_finished": RERUN_FINISHED}))
    row = collect_rows(sweep_dir).rows[0]
    assert row.failed and row.reason == "job process killed by signal 9"


def test_rerun_command_reruns_the_job_into_its_run_dir(tmp_path, job_writer):
    sweep = tmp_path / "my sweep,v2~"  # a space for the shell; a comma and a tilde for Hydra's grammar
    overrides = ["recipe=quickstart", "eval.task=summarize"]
    job_writer(sweep, 0, overrides, statuses=("ran", "failed", "skipped", "skipped"), exit_code=1, reason="boom")
    summarize_sweep(sweep, plots=False)
    command = shlex.split(re.search(r"rerun: `(.*)`", (sweep / "summary.md").read_text())[1])
    assert command[:3 + len(overrides)] == ["python", "-m", "mambapipe", *overrides]
    run_dir_override = OverridesParser.create().parse_override(command[-1])
    assert (run_dir_override.key_or_group, run_dir_override.value()) == ("hydra.run.dir", str(sweep / "0"))


def test_rerun_command_forces_no_step_the_job_already_made_again(tmp_path, job_writer):
    """As a run's own rerun command: what the job made comes from the cache, the rest is still forced."""
    job_writer(tmp_path, 0, ["dtype=float16", "force=[build, evaluate]"], force=("build", "evaluate"),
               statuses=("cached", "cached", "ran", "failed"), exit_code=1, reason="evaluate: boom")
    job_writer(tmp_path, 1, ["recipe=forcing"], force=("convert",), statuses=("cached", "ran", "failed", "skipped"),
               exit_code=1, reason="build: boom")  # a recipe's force
    summarize_sweep(tmp_path, plots=False)
    commands = [shlex.split(c) for c in re.findall(r"rerun: `(.*)`", (tmp_path / "summary.md").read_text())]
    assert [c[3:-1] for c in commands] == [["dtype=float16", "force=[evaluate]"], ["recipe=forcing", "force=[]"]]


def test_summarize_leaves_a_directory_that_is_not_a_sweep_alone(tmp_path, capsys):
    (tmp_path / "summary.md").write_text("my notes\n")
    assert sweep_cli(["summarize", str(tmp_path)]) == 2
    assert "is it a sweep directory?" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["summary.md"]
    assert (tmp_path / "summary.md").read_text() == "my notes\n"


def test_a_relative_sweep_dir_is_summarized_with_absolute_paths(sweep_dir, monkeypatch):
    monkeypatch.chdir(sweep_dir.parent)
    assert sweep_cli(["summarize", sweep_dir.name, "--no-plots"]) == 1
    assert [r["run_dir"] for r in csv_records(sweep_dir)] == [str(sweep_dir / job) for job in "012"]
    assert f"Sweep directory: `{sweep_dir}`" in (sweep_dir / "summary.md").read_text()


def files_under(directory):
    return {p.relative_to(directory): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def test_summarize_refuses_a_single_run_dir_and_writes_nothing(tmp_path, job_writer, capsys):
    """A plain `python -m mambapipe` run dir has its own .hydra/overrides.yaml: it is no sweep, nor its own job."""
    run_dir = job_writer(tmp_path, 0, ["recipe=quickstart"], metrics=summarize_metrics(21.5, 120.0, 8.0),
                         exit_code=None)  # a single run writes no sweep_job.json
    before = files_under(run_dir)
    assert sweep_cli(["summarize", str(run_dir)]) == 2
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert captured.out == ""
    assert "is a single run's directory" in line and line.endswith("pass the sweep directory above its job dirs")
    assert summarize_sweep(run_dir, plots=False) == []  # the end-of-sweep path: no job `.` either
    assert files_under(run_dir) == before


def test_summarize_refuses_a_folder_of_single_runs_and_writes_nothing(tmp_path, job_writer, capsys):
    """outputs/<date>/ of plain `python -m mambapipe` runs: run dirs, none of them a sweep's job (no sweep_job.json),
    and no multirun.yaml. Summarized, they would pass for one sweep's jobs, rerun without their own --config-dir."""
    day = tmp_path / "outputs" / "2026-11-29"
    for time in ("10-00-00", "11-30-00"):
        job_writer(day, time, ["recipe=quickstart"], metrics=summarize_metrics(21.5, 120.0, 8.0), exit_code=None)
    before = files_under(tmp_path)
    for directory in (day, day.parent):
        assert sweep_cli(["summarize", str(directory)]) == 2
        captured = capsys.readouterr()
        [line] = captured.err.splitlines()
        assert captured.out == ""
        assert line == (f"error {directory} holds single runs (python -m mambapipe without -m), not a sweep's jobs: "
                        "pass a sweep directory (multirun/<date>/<time>, or the sweep's hydra.sweep.dir)")
    assert files_under(tmp_path) == before


def test_a_sweep_dir_is_known_by_its_multirun_yaml_or_its_jobs_records(tmp_path, job_writer):
    """Only Hydra's basic sweeper writes multirun.yaml; every sweep's job writes its sweep_job.json first."""
    job_writer(tmp_path / "other_sweeper", 0, ["dtype=float32"], metrics=summarize_metrics(21.5, 120.0, 8.0))
    start_sweep(tmp_path / "basic", "dtype=float32")
    job_writer(tmp_path / "basic", 0, ["dtype=float32"], metrics=summarize_metrics(21.5, 120.0, 8.0), exit_code=None)
    for sweep in ("other_sweeper", "basic"):
        assert sweep_cli(["summarize", str(tmp_path / sweep), "--no-plots"]) == 0
        assert (tmp_path / sweep / "summary.md").is_file()


def reuse_sweep_dir(sweep_dir, job_writer) -> str:
    """`-m hydra.sweep.dir=D eval.max_ite=1,2,3`, then `-m hydra.sweep.dir=D eval.output_len=3,4`: Hydra rewrites
    D/multirun.yaml and jobs 0 and 1, and job 2 of the first sweep stays. The second sweep's multirun.yaml sha256."""
    first = start_sweep(sweep_dir, "eval.max_ite=1,2,3")
    for num in range(3):
        job_writer(sweep_dir, num, [f"eval.max_ite={num + 1}"], multirun_yaml_sha256=first,
                   metrics=summarize_metrics(10.0, 50.0, 5.0))
    second = start_sweep(sweep_dir, "eval.output_len=3,4")
    for num in range(2):
        job_writer(sweep_dir, num, [f"eval.output_len={num + 3}"], multirun_yaml_sha256=second,
                   metrics=summarize_metrics(20.0, 60.0, 5.0))
    return second


def assert_only_the_latest_sweep_is_summarized(sweep_dir):
    assert [r.overrides for r in collect_rows(sweep_dir).rows] == [["eval.output_len=3"], ["eval.output_len=4"]]
    assert sweep_cli(["summarize", str(sweep_dir), "--no-plots"]) == 0
    assert [r["job"] for r in csv_records(sweep_dir)] == ["0", "1"]
    text = (sweep_dir / "summary.md").read_text()
    assert "2 jobs: 2 ok, 0 failed." in text and "eval.max_ite" not in text
    assert "1 job dir left out, from an earlier sweep into this directory: `2`" in text


def test_job_dirs_of_an_earlier_sweep_into_the_same_dir_are_left_out_and_counted(tmp_path, job_writer):
    reuse_sweep_dir(tmp_path / "sweep", job_writer)
    assert_only_the_latest_sweep_is_summarized(tmp_path / "sweep")


def test_a_copy_of_a_reused_sweep_dir_is_summarized_alike_whatever_its_file_times(tmp_path, job_writer):
    reuse_sweep_dir(tmp_path / "sweep", job_writer)
    subprocess.run(["cp", "-r", str(tmp_path / "sweep"), str(tmp_path / "copy")], check=True)  # new mtimes
    copy = tmp_path / "copy"
    os.utime(copy / "multirun.yaml", (0, 0))  # older than every job dir: file times must play no part
    os.utime(copy / "2" / ".hydra" / "overrides.yaml", (4e9, 4e9))  # ... even the stale job's newer
    assert_only_the_latest_sweep_is_summarized(copy)


def test_a_job_rerun_by_hand_into_a_reused_sweep_dir_still_counts(tmp_path, job_writer):
    """A rerun by hand rewrites .hydra/, run.json and metrics.json, not the sweep's sweep_job.json."""
    sweep = tmp_path / "sweep"
    reuse_sweep_dir(sweep, job_writer)
    rerun_by_hand(sweep / "1", ("cached", "cached", "ran", "failed"), reason="evaluate: boom")
    rows = collect_rows(sweep).rows
    assert [r.job for r in rows] == ["0", "1"] and rows[1].reason == "evaluate: boom"


def test_without_multirun_yaml_every_job_dir_counts(tmp_path, job_writer):
    sweep = tmp_path / "sweep"
    reuse_sweep_dir(sweep, job_writer)
    (sweep / "multirun.yaml").unlink()  # nothing to compare the jobs' records with
    assert [r.job for r in collect_rows(sweep).rows] == ["0", "1", "2"]


def test_a_job_dir_without_a_recorded_sweep_counts(tmp_path, job_writer):
    """Jobs of an older mambapipe recorded no multirun.yaml: nothing tells they are stale, so they stay."""
    sweep = tmp_path / "sweep"
    current = start_sweep(sweep, "dtype=float32,bfloat16")
    job_writer(sweep, 0, ["dtype=float32"], multirun_yaml_sha256=current)
    job_writer(sweep, 1, ["dtype=bfloat16"])  # no multirun_yaml_sha256 in its sweep_job.json
    job_writer(sweep, 2, ["dtype=float16"], exit_code=None)  # no sweep_job.json at all
    (sweep / "2" / "sweep_job.json").write_text("{damaged")  # read as unknown here, reported failed as ever
    assert [r.job for r in collect_rows(sweep).rows] == ["0", "1", "2"]


def test_the_docs_name_every_summary_csv_column():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "sweeps.md").read_text()
    paragraph = docs.split("`summary.csv` has every fact")[1].split("\n\n")[0]
    assert [c for c in CSV_COLUMNS if f"`{c}`" not in paragraph] == []


def test_the_docs_example_summary_has_the_table_a_summarize_sweep_gets(tmp_path, job_writer):
    """docs/sweeps.md pastes a real summary.md: its table must have the columns summary.md writes now (the pasted one
    went stale, without dataset, samples and ROUGE-1's interval, when those were added)."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "sweeps.md").read_text()
    example = docs.split("````markdown\n")[1].split("````")[0]
    job_writer(tmp_path, 0, ["dtype=float32"], metrics=scored(4))
    job_writer(tmp_path, 1, ["dtype=bfloat16"], metrics=scored(4))
    header = next(line for line in summary_md(tmp_path).splitlines() if line.startswith("| job |"))
    assert f"\n{header}\n" in example
    assert re.search(r"\| sample \| 4 \| \d+\.\d{3} \[\d+\.\d{3}-\d+\.\d{3}\] \|", example)


def test_the_console_table_says_which_jobs_numbers_an_earlier_run_measured(tmp_path, job_writer):
    import io

    from rich.console import Console

    from mambapipe.sweep.tables import print_table

    metrics = {"task": "summarize", "rouge1": 20.0, "tokens_per_s": 100.0}
    job_writer(tmp_path, 0, ["dtype=float32"], metrics=metrics, statuses=("cached",) * 4)
    job_writer(tmp_path, 1, ["dtype=bfloat16"], metrics=metrics)
    console = Console(file=io.StringIO(), width=200)
    print_table(console, collect_rows(tmp_path).rows)
    lines = [line.split("│") for line in console.file.getvalue().splitlines() if line.startswith("│")]
    assert [(cells[1].strip(), cells[4].strip()) for cells in lines] == [("0", "cached"), ("1", "ran")]


MAMBA1 = {"mamba_version": "Mamba1", "hidden_size": 96, "num_layers": 3, "vocab_size": 1024}
MAMBA2 = {"mamba_version": "Mamba2", "hidden_size": 64, "num_layers": 2, "vocab_size": 512}


def environment(commit: str = "0f45781e1463aee9705bf9ba61491aa31dc48437", dirty: bool = False, host: str = "node1",
                gpus: tuple[str, ...] = (), finished: str = "2026-11-30T23:11:59.262+00:00") -> dict:
    """What a run.json says of the code and machine a job ran with."""
    return {"versions": {"mambapipe": "0.1.0", "torch": "2.13.0", "transformers": "5.24.0", "omegaconf": "2.3.1"},
            "git_commit": commit, "git_dirty": dirty, "finished": finished,
            "machine": {"host": host, "cpu": "AMD EPYC", "cpus": 16, "cuda_devices": list(gpus)}}


def write_sweep_config(sweep_dir: Path, task: list[str], config_dir: str) -> None:
    """multirun.yaml as Hydra writes it for `python -m mambapipe -m --config-dir CONFIG_DIR TASK...`."""
    sources = [{"path": "hydra.conf", "schema": "pkg", "provider": "hydra"},
               {"path": config_dir, "schema": "file", "provider": "command-line"}]
    hydra = {"overrides": {"hydra": ["hydra.mode=MULTIRUN", f"hydra.sweep.dir={sweep_dir}"], "task": task},
             "runtime": {"config_sources": sources}}
    (sweep_dir / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra}))


def summary_md(sweep_dir: Path) -> str:
    summarize_sweep(sweep_dir, plots=False)
    return (sweep_dir / "summary.md").read_text()


def environment_block(text: str) -> list[str]:
    return text.split("## Environment\n\n")[1].split("\n\n")[0].splitlines()


def test_the_markdown_says_the_command_model_and_environment_of_the_sweep(tmp_path, job_writer):
    """Found by QA: pasted into a PR, summary.md said neither how to run the sweep again, nor which model, device,
    backend, code and machine its numbers are of."""
    metrics = summarize_metrics(20.0, 100.0, 5.0)
    for num, dtype in enumerate(("float32", "bfloat16")):
        job_writer(tmp_path, num, ["recipe=m1", f"dtype={dtype}", "eval.max_ite=2"], model="my-m1", dtype=dtype,
                   arch=MAMBA1, metrics=metrics, environment=environment(finished=f"2026-11-30T23:1{num}:00+00:00"))
    write_sweep_config(tmp_path, ["recipe=m1", "dtype=float32,bfloat16", "eval.max_ite=2"], "/home/me/recipes")
    text = summary_md(tmp_path)
    assert ("Command: `python -m mambapipe -m --config-dir /home/me/recipes recipe=m1 dtype=float32,bfloat16 "
            "eval.max_ite=2`") in text  # into a sweep dir of its own: this one's path means nothing elsewhere
    assert ("Every job: model my-m1 (synthetic Mamba1, hidden 96, 3 layers, vocab 1024), tp 1, device cpu, "
            "backend native, task summarize.") in text
    assert "| job | overrides | status |" in text  # dtype differs, but the overrides column says so already
    assert environment_block(text) == [
        "- software: mambapipe 0.1.0 (git 0f45781e1463, clean), torch 2.13.0, transformers 5.24.0",
        "- machine: node1: AMD EPYC (16 CPUs)",
        "- finished: 2026-11-30 23:10 UTC to 2026-11-30 23:11 UTC"]


def test_the_markdown_groups_the_jobs_by_environment_where_they_differ(tmp_path, job_writer):
    job_writer(tmp_path, 0, ["dtype=float32"], metrics=summarize_metrics(20.0, 100.0, 5.0),
               environment=environment(gpus=("NVIDIA H200",)))
    job_writer(tmp_path, 1, ["dtype=bfloat16"], dtype="bfloat16", metrics=summarize_metrics(20.0, 90.0, 5.0),
               environment=environment(dirty=True, gpus=("NVIDIA H200",)))
    job_writer(tmp_path, 2, ["dtype=float16"], dtype="float16", metrics=summarize_metrics(20.0, 80.0, 5.0),
               environment=environment(dirty=True, host="node2", gpus=("NVIDIA H100",)))
    assert environment_block(summary_md(tmp_path)) == [
        "- software: differs between jobs",
        "  - job 0: mambapipe 0.1.0 (git 0f45781e1463, clean), torch 2.13.0, transformers 5.24.0",
        "  - jobs 1, 2: mambapipe 0.1.0 (git 0f45781e1463, dirty), torch 2.13.0, transformers 5.24.0",
        "- machine: differs between jobs",
        "  - jobs 0, 1: node1: AMD EPYC (16 CPUs), 1 × NVIDIA H200",
        "  - job 2: node2: AMD EPYC (16 CPUs), 1 × NVIDIA H100",
        "- finished: 2026-11-30 23:11 UTC"]


def test_a_setting_that_differs_and_no_override_names_gets_a_column(tmp_path, job_writer):
    """A model sweep's overrides name the model files, not the architectures; a recipe sweep names neither."""
    job_writer(tmp_path, 0, ["recipe=a"], model="tiny-mamba", arch=MAMBA1, metrics=summarize_metrics(1.0, 9.0, 1.0))
    job_writer(tmp_path, 1, ["recipe=b"], model="tiny-mamba2", arch=MAMBA2, dtype="bfloat16",
               metrics=summarize_metrics(1.0, 9.0, 1.0))
    text = summary_md(tmp_path)
    assert "Every job: tp 1, device cpu, backend native, task summarize." in text
    assert "| job | overrides | model | dtype | status |" in text
    assert ("| 1 | recipe=b | tiny-mamba2 (synthetic Mamba2, hidden 64, 2 layers, vocab 512) | bfloat16 | ok |"
            in text)


def test_the_markdown_marks_speed_an_earlier_run_measured(tmp_path, job_writer):
    """Found by QA: a cached evaluate's tokens/s sat unmarked beside those this sweep measured. ROUGE, which does
    not depend on the run, is not marked."""
    job_writer(tmp_path, 0, ["dtype=float32"], metrics=summarize_metrics(21.5, 120.0, 8.0), statuses=("cached",) * 4)
    job_writer(tmp_path, 1, ["dtype=bfloat16"], dtype="bfloat16", metrics=summarize_metrics(20.25, 95.5, 10.0))
    text = summary_md(tmp_path)
    assert ("| 0 | dtype=float32 | ok | cached | cached | cached | cached | 21.500 | 10.750 | 17.200 | 19.350 | "
            "120.000 † | summarize | 8.000 † |") in text
    assert "| 95.500 | summarize | 10.000 |" in text
    assert "\n† measured by an earlier run: the job's evaluate step was cached" in text


def test_no_mark_note_where_every_number_is_this_sweeps_and_no_environment_where_none_is_recorded(sweep_dir):
    text = summary_md(sweep_dir)
    assert "†" not in text and "## Environment" not in text  # run.json of a mambapipe before they were recorded
    assert "Command: not known (the sweep dir has no readable multirun.yaml)" in text


def scored(samples: int, dataset: str = "sample", rouge1: float = 20.0, **pin: str) -> dict:
    """A summarize job's metrics.json with the articles it scored and rouge1's interval."""
    protocol = {"dataset": dataset, **pin, "samples": samples, "batch_size": 1, "max_ite": samples}
    return summarize_metrics(rouge1, 100.0, 8.0) | {"samples": samples, "dataset": dataset, "protocol": protocol,
                                                    "rouge1_low": rouge1 / 2, "rouge1_high": rouge1 + 2.25}


def test_the_tables_give_the_articles_each_job_scored_and_say_where_jobs_differ(tmp_path, job_writer, capsys):
    """`eval.max_ite=5 eval.batch_size=1,4` scores 5 articles and 20: nothing said so beside rouge1 0.000 and 0.742."""
    job_writer(tmp_path, 0, ["eval.batch_size=1"], metrics=scored(5, rouge1=0.0))
    job_writer(tmp_path, 1, ["eval.batch_size=4"], eval_batch=4, metrics=scored(20, rouge1=0.742))
    job_writer(tmp_path, 2, ["eval.batch_size=4"], eval_batch=4,
               metrics=scored(20, "cnn_dailymail", commit="0123456789abcdef" * 2 + "01234567"))
    assert sweep_cli(["summarize", str(tmp_path), "--no-plots"]) == 0
    console = " ".join(capsys.readouterr().out.split())
    text = (tmp_path / "summary.md").read_text()
    assert "| ok | ran | ran | ran | ran | sample | 5 | 0.000 [0.000-2.250] |" in text
    assert "| ok | ran | ran | ran | ran | cnn_dailymail@0123456789ab | 20 | 20.000 [10.000-22.250] |" in text
    samples_note = ("The jobs scored different numbers of articles: 5 (job 0), 20 (jobs 1, 2); their ROUGE is not "
                    "of the same articles (eval.max_ite counts batches: eval.batch_size x eval.max_ite articles are "
                    "scored).")
    datasets_note = ("The jobs scored different datasets: sample (jobs 0, 1), cnn_dailymail@0123456789ab (job 2); "
                     "their ROUGE is not of the same articles.")
    assert f"\n\n{datasets_note}\n\n{samples_note}\n" in text
    assert samples_note in console and datasets_note in console and "0.742 [" in console
    with open(tmp_path / "summary.csv", newline="") as handle:
        records = list(csv.DictReader(handle))
    assert [(r["dataset"], r["samples"], r["rouge1_low"], r["rouge1_high"]) for r in records] == [
        ("sample", "5", "0.0", "2.25"), ("sample", "20", "0.371", "2.992"),
        ("cnn_dailymail@0123456789ab", "20", "10.0", "22.25")]


def test_no_articles_note_where_every_job_scored_the_same_ones(sweep_dir, tmp_path, job_writer):
    job_writer(tmp_path, 0, ["dtype=float32"], metrics=scored(20))
    job_writer(tmp_path, 1, ["dtype=bfloat16"], metrics=scored(20))
    text = summary_md(tmp_path)
    assert "| sample | 20 |" in text and "different" not in text
    assert "| dataset |" not in summary_md(sweep_dir)  # metrics.json from before they were recorded: no columns
