"""The sweep summary as summary.csv (every fact, for spreadsheets), summary.md (to paste into an issue)
and a rich table on the console at the end of the sweep."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Optional, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mambapipe.config import STEP_NAMES
from mambapipe.evaluate import SUMMARIZE_TASK
from mambapipe.pipeline.provenance import machine_line, software_line, utc_minute
from mambapipe.pipeline.runner import gate_hint, rerun_overrides, resume_command
from mambapipe.pipeline.store import write_atomic
from mambapipe.sweep.record import JOB_RECORD, SWEEP_CONFIG
from mambapipe.sweep.summary import (
    FAILED,
    NOT_RUN,
    NOT_RUN_REASON,
    OK,
    OVERRIDES_FILE,
    PLANNED,
    ROUGE1_INTERVAL,
    ROUGE_KEYS,
    JobRow,
    job_label,
    step_cells,
    varying_overrides,
)

CONFIG_COLUMNS = ("model", "arch", "dtype", "tp_size", "backend", "device", "max_batch_size", "eval_batch_size",
                  "task")
# The articles a summarize job scored (`dataset`, `samples`) first: ROUGE compares only over the same articles.
METRIC_COLUMNS = ("dataset", "samples", *ROUGE_KEYS, *ROUGE1_INTERVAL, "tokens_per_s", "throughput_of",
                  "decode_ms_per_step", "ttft_ms")
CSV_COLUMNS = ("job", "overrides", "status", *STEP_NAMES, *CONFIG_COLUMNS, *METRIC_COLUMNS, "reason", "run_dir")
MARKDOWN_METRICS = {"dataset": "dataset", "samples": "samples", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2",
                    "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum", "tokens_per_s": "tokens/s",
                    "throughput_of": "tokens/s of", "decode_ms_per_step": "decode ms/step"}
CONSOLE_METRICS = {"samples": "samples", "rouge1": "rouge1", "tokens_per_s": "tokens/s",
                   "decode_ms_per_step": "decode ms/step"}
# Where jobs scored other articles, their ROUGE is of other articles: said under the tables (articles_notes).
ARTICLE_FACTS = {"dataset": "datasets", "samples": "numbers of articles"}
SAMPLES_WHY = " (eval.max_ite counts batches: eval.batch_size x eval.max_ite articles are scored)"
# What a job ran with, as summary.md names it (its label and the override that sets it, where one does): one line for
# those every job shares, a column each for the others unless the overrides column says them already.
SETTINGS = {"model": ("model", None), "dtype": ("dtype", "dtype"), "tp_size": ("tp", "tp_size"),
            "device": ("device", "device"), "backend": ("backend", "backend"), "task": ("task", "eval.task")}
# Speed is measured anew by each evaluate step that runs; one cached gives back the numbers of the run that made it.
SPEED_METRICS = ("tokens_per_s", "decode_ms_per_step")
CACHED_MARK = "†"
CACHED_NOTE = (f"{CACHED_MARK} measured by an earlier run: the job's evaluate step was cached, so these are that run's "
               "numbers, with code and on a machine that the environment below need not describe (`force=[evaluate]` "
               "measures them again).")
CONSOLE_GATE_MISSED = "✗gate"  # the console table's short `gate missed` (_console_step)
# The two tasks time generation differently, and a row's tokens/s does not say which way it was timed.
SUMMARIZE_SPEED_NOTE = ("summarize tokens/s: one timed pass over the eval batches after a one-prompt warm-up, as "
                        "TensorRT-LLM's summarize.py measures it; for speed use eval.task=benchmark (the median of "
                        "eval.repeats runs after eval.warmup warm-up runs).")


def fmt(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def csv_record(row: JobRow) -> dict[str, Any]:
    return {"job": row.job, "overrides": " ".join(row.overrides), "status": row.status, **step_cells(row),
            **row.config, **row.metrics, "reason": row.reason or "", "run_dir": str(row.run_dir or "")}


def write_csv(rows: Sequence[JobRow], path: Path) -> None:
    """summary.csv, whole or not at all (as summary.md and the plots: a full disk leaves no file cut short)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(csv_record(row) for row in rows)
    write_atomic(path, text.getvalue())


def measured(rows: Sequence[JobRow], metrics: dict[str, str]) -> dict[str, str]:
    """The metric columns some job has a value for. The tables leave out the others (ROUGE in a benchmark sweep);
    summary.csv keeps every column, so its header is the same for every sweep and scripts can rely on it."""
    return {key: title for key, title in metrics.items() if any(row.metrics[key] is not None for row in rows)}


def speed_notes(rows: Sequence[JobRow]) -> list[str]:
    """How the tables' tokens/s were measured, where some come from the summarize task."""
    timed_by_summarize = any(row.metrics["throughput_of"] == SUMMARIZE_TASK and row.metrics["tokens_per_s"] is not None
                             for row in rows)
    return [SUMMARIZE_SPEED_NOTE] if timed_by_summarize else []


def articles_notes(rows: Sequence[JobRow]) -> list[str]:
    """A line for each of dataset and sample count where the summarize jobs differ in it, naming which job scored
    which: their ROUGE scores are not of the same articles."""
    notes = []
    for key, what in ARTICLE_FACTS.items():
        jobs_by_value: dict[str, list[str]] = {}
        for row in rows:
            if row.metrics[key] is not None:
                jobs_by_value.setdefault(str(row.metrics[key]), []).append(row.job)
        if len(jobs_by_value) > 1:
            scored = ", ".join(f"{value} (job{'s' * (len(jobs) > 1)} {', '.join(jobs)})"
                               for value, jobs in jobs_by_value.items())
            why = SAMPLES_WHY if key == "samples" else ""
            notes.append(f"The jobs scored different {what}: {scored}; their ROUGE is not of the same articles{why}.")
    return notes


def rouge1_text(row: JobRow) -> str:
    """`21.500 [19.250-23.750]`: the job's ROUGE-1 with the bootstrap's 95% interval, where its metrics.json has one."""
    text = fmt(row.metrics["rouge1"])
    low, high = (row.metrics[key] for key in ROUGE1_INTERVAL)
    return f"{text} [{fmt(low)}-{fmt(high)}]" if text and low is not None and high is not None else text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def setting(row: JobRow, fact: str) -> Optional[str]:
    """A job's value of a SETTINGS fact as summary.md shows it; the model with its architecture."""
    value = row.config[fact]
    if fact == "model" and value is not None and row.config["arch"]:
        return f"{value} ({row.config['arch']})"
    return None if value is None else str(value)


def shared_settings(rows: Sequence[JobRow]) -> tuple[dict[str, str], list[str]]:
    """The settings every job shares ({label: value}), and the facts that differ between jobs and that the overrides
    column does not already show (each job's override of the key naming its value). A job without a config (not run)
    counts by its override of the key; one whose recipe (or model) differs from the others' may differ in anything."""
    shared, differing = {}, []
    swept = varying_overrides(list(rows))
    for fact, (label, key) in SETTINGS.items():
        values = {row.job: value for row in rows if (value := setting(row, fact) or _override(row, key)) is not None}
        unknown = len(values) < len(rows) and any(_may_set(swept_key, fact, key) for swept_key in swept)
        if len(set(values.values())) == 1 and not unknown:
            shared[label] = next(iter(values.values()))
        elif values and not _overrides_say(rows, key, values):
            differing.append(fact)
    return shared, differing


def _override(row: JobRow, key: Optional[str]) -> Optional[str]:
    """The value the job's overrides give `key`, if they set it."""
    return next((value for name, _, value in (o.partition("=") for o in row.overrides) if name == key), None)


def _may_set(swept_key: str, fact: str, key: Optional[str]) -> bool:
    """Whether a swept override may set a SETTINGS fact: its own key, a recipe (which sets any), or for the model
    a model file or one of its keys."""
    return swept_key in ("recipe", key) or (fact == "model" and swept_key.partition(".")[0] == "model")


def _overrides_say(rows: Sequence[JobRow], key: Optional[str], values: dict[str, str]) -> bool:
    """Whether each job's overrides set `key` to the job's value (`values`, by job), so the overrides show it."""
    return key is not None and all(f"{key}={values[row.job]}" in row.overrides for row in rows if row.job in values)


def measured_earlier(row: JobRow, key: str) -> bool:
    """Whether the job's `key` is a speed an earlier run measured (its evaluate step was cached)."""
    return key in SPEED_METRICS and row.metrics[key] is not None and row.steps["evaluate"] == "cached"


def _metric_cell(row: JobRow, key: str) -> str:
    if key == "rouge1":
        return rouge1_text(row)
    return f"{fmt(row.metrics[key])} {CACHED_MARK}" if measured_earlier(row, key) else fmt(row.metrics[key])


def markdown_table(rows: Sequence[JobRow], differing: Sequence[str] = ()) -> list[str]:
    """The table of jobs: overrides, the `differing` settings, status, steps and metrics, speed marked where an
    earlier run measured it."""
    keys = varying_overrides(list(rows))
    metrics = measured(rows, MARKDOWN_METRICS)
    header = ["job", "overrides", *(SETTINGS[fact][0] for fact in differing), "status", *STEP_NAMES,
              *metrics.values()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.job, job_label(row, keys), *(setting(row, fact) or "" for fact in differing), row.status,
                 *step_cells(row).values(), *(_metric_cell(row, k) for k in metrics)]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def environment_lines(rows: Sequence[JobRow]) -> list[str]:
    """The code and machine the jobs ran with, from their run.json: one line each where the jobs agree, else a
    line per group of jobs that agree; then when they finished."""
    recorded = [row for row in rows if row.environment]
    if not recorded:
        return []
    lines = []
    for label, describe in (("software", software_line), ("machine", machine_line)):
        groups: dict[str, list[str]] = {}
        for row in recorded:
            groups.setdefault(describe(row.environment) or "not recorded", []).append(row.job)
        if len(groups) == 1:
            lines.append(f"- {label}: {next(iter(groups))}")
        else:
            lines.append(f"- {label}: differs between jobs")
            lines += [f"  - job{'s' * (len(jobs) > 1)} {', '.join(jobs)}: {text}" for text, jobs in groups.items()]
    finished = sorted(utc_minute(row.environment["finished"]) for row in recorded if row.environment.get("finished"))
    if finished:
        lines.append(f"- finished: {' to '.join(dict.fromkeys([finished[0], finished[-1]]))}")
    return lines


def rerun_command(row: JobRow, config_dirs: Sequence[str] = ()) -> str:
    """The command that reruns just this job into its run dir, so a later summary reports the new outcome. As a
    run's own rerun command, it forces no step the job already made again: that one comes from the cache. Where
    a gate's verdict failed the job, the setting that changes it is left to fill in: as it was, it fails the same."""
    made = {name for name, status in row.steps.items() if status == "ran"}
    return resume_command(rerun_overrides(row.overrides, row.forced, made, row.gate_verdict), row.run_dir, config_dirs)


def failure_lines(rows: Sequence[JobRow], config_dirs: Sequence[str] = ()) -> list[str]:
    """Each failed job: why, and the command that reruns just it (finished steps come from the cache)."""
    lines = []
    for row in rows:
        if not row.failed:
            continue
        lines.append(f"- job {row.job}: {row.reason}")
        if OVERRIDES_FILE in row.unreadable:  # without its overrides a rerun would run some other config
            lines.append(f"  rerun: not known ({OVERRIDES_FILE} is unreadable)")
        else:
            what = gate_hint(row.gate_verdict) if row.gate_verdict else "rerun"
            lines.append(f"  {what}: `{rerun_command(row, config_dirs)}`")
    return lines


def not_run_lines(rows: Sequence[JobRow], resume: Optional[str], config_dirs: Sequence[str] = ()) -> list[str]:
    """Each job the sweep never started, with the command that runs just it into its job dir (when its dir
    is known), then the one that runs the whole sweep again into this directory; first why the sweep stopped, where
    its summary knows more than that it did (standard output's reader had gone)."""
    why = next((row.reason for row in rows if row.not_run and row.reason not in (None, NOT_RUN_REASON)), None)
    lines = [f"{why[0].upper()}{why[1:]}.", ""] if why else []
    for row in rows:
        if not row.not_run:
            continue
        lines.append(f"- job {row.job}: `{' '.join(row.overrides)}`")
        if row.run_dir is not None:
            lines.append(f"  run: `{rerun_command(row, config_dirs)}`")
    if resume:
        lines += ["", f"Or run the whole sweep again (finished steps come from the cache): `{resume}`"]
    return lines


def count_line(rows: Sequence[JobRow]) -> str:
    """`4 jobs: 1 ok, 1 failed, 2 not run.` (`planned` and `not run` only when some are), or for a plan_only=true
    sweep `2 jobs planned (plan_only=true): nothing ran.`"""
    counts = {status: sum(row.status == status for row in rows) for status in (OK, FAILED, PLANNED, NOT_RUN)}
    jobs = f"{len(rows)} job{'' if len(rows) == 1 else 's'}"
    if rows and counts[PLANNED] == len(rows):
        return f"{jobs} planned (plan_only=true): nothing ran."
    shown = [f"{n} {status}" for status, n in counts.items() if n or status in (OK, FAILED)]
    return f"{jobs}: {', '.join(shown)}."


def left_out_line(left_out: Sequence[Path], sweep_dir: Path) -> str:
    """Job dirs of an earlier sweep into the same directory: not in the tables, but said, so none goes missing."""
    names = ", ".join(f"`{run_dir.relative_to(sweep_dir)}`" for run_dir in left_out)
    count = f"{len(left_out)} job dir{'s' if len(left_out) > 1 else ''}"
    return (f"{count} left out, from an earlier sweep into this directory: {names} "
            f"({JOB_RECORD} names a {SWEEP_CONFIG} other than this sweep's).")


def write_markdown(rows: Sequence[JobRow], path: Path, sweep_dir: Path, plots: Sequence[Path],
                   left_out: Sequence[Path] = (), resume: Optional[str] = None,
                   config_dirs: Sequence[str] = (), command: Optional[str] = None) -> None:
    """summary.md, made to be pasted whole: what ran (the sweep's command, the settings its jobs share), each job,
    the environment, failures and plots. `command` runs the sweep again (None: not known)."""
    rerun = f"`{command}`" if command else "not known (the sweep dir has no readable multirun.yaml)"
    lines = ["# Sweep summary", "", f"Sweep directory: `{sweep_dir}`", "", f"Command: {rerun}", "", count_line(rows),
             ""]
    if left_out:
        lines += [left_out_line(left_out, sweep_dir), ""]
    shared, differing = shared_settings(rows)
    if shared:
        lines += ["Every job: " + ", ".join(f"{label} {value}" for label, value in shared.items()) + ".", ""]
    lines += markdown_table(rows, differing)
    if any(measured_earlier(row, key) for row in rows for key in measured(rows, MARKDOWN_METRICS)):
        lines += ["", CACHED_NOTE]
    lines += [line for note in (*articles_notes(rows), *speed_notes(rows)) for line in ("", note)]
    if environment := environment_lines(rows):
        lines += ["", "## Environment", "", *environment]
    if any(row.failed for row in rows):
        lines += ["", "## Failed jobs", "", *failure_lines(rows, config_dirs)]
    if any(row.not_run for row in rows):
        lines += ["", "## Jobs not run", "", *not_run_lines(rows, resume, config_dirs)]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    write_atomic(path, "\n".join(lines) + "\n")


def _console_number(row: JobRow, key: str) -> str:
    """A metric as the console table shows it: a benchmark's tokens/s with the scenario it is of (`4294.0 (B=2
    16/8)`), which summary.md gives a column of its own, as jobs of one sweep may have their best in different ones."""
    text = rouge1_text(row) if key == "rouge1" else fmt(row.metrics[key])
    scenario = row.metrics["throughput_of"]
    if key == "tokens_per_s" and text and scenario and scenario != SUMMARIZE_TASK:
        return f"{text} ({scenario})"
    return text


def _console_step(row: JobRow, name: str) -> str:
    """A step's status as the console table shows it: `cached ✗gate` where its artifact failed its gate. The
    files' `cached, gate missed` is 19 columns wide: beside the reason column that such a job brings (which says what
    the gate missed) and ROUGE-1's interval, a 120-column table wrapped it onto two lines."""
    status = row.steps[name]
    return f"{status} [red]{CONSOLE_GATE_MISSED}[/]" if name in row.gates_missed else status


def print_table(console: Console, rows: Sequence[JobRow], sweep_dir: Optional[Path] = None) -> None:
    keys = varying_overrides(list(rows))
    metrics = measured(rows, CONSOLE_METRICS)
    table = Table(title=f"sweep summary{f' ({sweep_dir})' if sweep_dir else ''}", title_justify="left")
    # `evaluate` says whether the numbers were measured by this sweep (ran) or an earlier run (cached).
    reasons = any(row.reason for row in rows)  # a column only where some job has one
    for column in ("job", "overrides", "status", "evaluate", *metrics.values(), *(["reason"] if reasons else [])):
        table.add_column(column)
    for row in rows:
        color = {OK: "green", FAILED: "red", PLANNED: "cyan"}.get(row.status, "yellow")
        status = f"[{color}]{row.status}[/]"
        # Overrides and reasons are user text: `steps=[evaluate]` is not rich markup.
        numbers = (_console_number(row, key) for key in metrics)
        table.add_row(row.job, escape(job_label(row, keys)), status, _console_step(row, "evaluate"), *numbers,
                      *([escape(row.reason or "")] if reasons else []))
    console.print(table)
    for note in (*articles_notes(rows), *speed_notes(rows)):
        console.print(note, markup=False)
