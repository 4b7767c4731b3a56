"""The readable table printed at the end of an evaluation."""

from __future__ import annotations

from typing import Any, Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mambapipe.evaluate.protocol import ROUGE_DECIMALS, articles, dataset_label, rouge_interval
from mambapipe.evaluate.rouge import ROUGE_TYPES

SUMMARIZE_ROWS = (("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L"), ("rougeLsum", "ROUGE-Lsum"),
                  ("samples", "samples"), ("output_tokens", "output tokens"), ("tokens_per_s", "tokens/s"),
                  ("ttft_ms", "TTFT ms"), ("decode_ms_per_step", "decode ms/step"), ("peak_memory_mb", "peak MiB"))
LOG_WIDTH = 140
BENCHMARK_COLUMNS = (("batch", "batch"), ("input_len", "in"), ("output_len", "out"), ("prefill_ms", "prefill ms"),
                     ("decode_ms_per_step", "decode ms/step"), ("tokens_per_s", "tok/s"),
                     ("floor_ms_per_step", "floor ms/step"), ("floor_pct", "% of floor"),
                     ("peak_memory_mb", "peak MiB"))


def _fmt(value: Any, key: str = "") -> str:
    """A table cell: ROUGE at a fixed precision; timings and rates at three decimals below 10, else one."""
    if value is None:
        return "-"
    if key in ROUGE_TYPES:
        return f"{value:.{ROUGE_DECIMALS}f}"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _score_cell(scores: Optional[dict[str, Any]], key: str) -> str:
    """A cell of the engine's or HF's column: a ROUGE score with its interval."""
    scores = scores or {}
    return _fmt(scores.get(key), key) + (rouge_interval(scores, key) if key in ROUGE_TYPES else "")


def summarize_table(metrics: dict[str, Any]) -> Table:
    hf: Optional[dict[str, Any]] = metrics.get("hf")
    with_hf = bool(hf) and "skipped" not in hf
    samples = f", {articles(metrics['samples'])}" if metrics.get("samples") is not None else ""
    table = Table(title=f"summarize: {dataset_label(metrics) or ''}{samples}")
    table.add_column("metric")
    table.add_column(metrics.get("backend", "engine"), justify="right")
    if with_hf:
        table.add_column("HF transformers", justify="right")
    for key, label in SUMMARIZE_ROWS:
        table.add_row(label, _score_cell(metrics, key), *([_score_cell(hf, key)] if with_hf else []))
    return table


def report_notes(metrics: dict[str, Any]) -> list[str]:
    """The lines under the table: where the floor's bandwidth comes from, which ROUGE the scores are, what peak MiB
    measures, the HF comparison. Lines, not the table's caption, which rich wraps to the width of the table."""
    notes = [f"bandwidth: {metrics.get('bandwidth_source', '?')}"] if metrics["task"] == "benchmark" else []
    if metrics.get("rouge_variant"):
        notes.append(f"ROUGE: {metrics['rouge_variant']}")
    notes.append(_peak_memory_note(metrics))
    hf: Optional[dict[str, Any]] = metrics.get("hf")
    if hf and "skipped" not in hf:
        notes.append(f"identical output tokens: {metrics['hf_token_agreement'] * 100:.1f}%")
    elif hf:
        notes.append(f"HF comparison skipped: {hf['skipped']}")
    return notes


def _peak_memory_note(metrics: dict[str, Any]) -> str:
    """What 'peak MiB' measures, as metrics.json records it for the device (peak_memory.peak_memory_meaning): e.g. on
    the CPU the whole process's resident set, not the engine's share."""
    return f"peak MiB: {metrics.get('peak_memory', '?')}"


def benchmark_table(metrics: dict[str, Any]) -> Table:
    table = Table(title="benchmark")
    for _, label in BENCHMARK_COLUMNS:
        table.add_column(label, justify="right")
    table.add_column("note")
    for row in metrics["rows"]:
        note = f"skipped: {row['skipped']}" if row.get("skipped") else ""
        table.add_row(*[_fmt(row.get(k)) for k, _ in BENCHMARK_COLUMNS], note)
    return table


def print_report(metrics: dict[str, Any]) -> None:
    """On standard output, as the run's summary is: the results, where `> file` keeps them; progress and logs go
    to standard error."""
    table = benchmark_table(metrics) if metrics["task"] == "benchmark" else summarize_table(metrics)
    console = Console(highlight=False)
    if not console.is_terminal:  # logs and pipes: rich's 80 columns would truncate the numbers
        console.width = max(console.width, LOG_WIDTH)
    console.print(table)
    for note in report_notes(metrics):
        console.print(escape(note), soft_wrap=True)
