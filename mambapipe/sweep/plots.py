"""PNG plots of a sweep: tokens/s against batch size per model and dtype, and ROUGE per configuration.
Drawn on bare matplotlib Figures (Agg canvas), so no display and no pyplot global state is involved."""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path
from statistics import mean
from typing import Sequence

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from mambapipe.pipeline.store import write_atomic
from mambapipe.sweep.report import ROUGE_PLOT, THROUGHPUT_PLOT
from mambapipe.sweep.summary import ROUGE_KEYS, JobRow, job_label, varying_overrides

ROUGE_NAMES = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}
SERIES_EXTRAS = ("tp_size", "backend", "device")  # added to a series name only when the sweep varies them


def fmt_score(value: float) -> str:
    return f"{value:.1f}"


def series_name(row: JobRow, rows: Sequence[JobRow]) -> str:
    config = row.config
    name = f"{config['model']} {config['dtype']}"
    for key in SERIES_EXTRAS:
        if len({r.config.get(key) for r in rows}) > 1:
            name += f" {'tp' if key == 'tp_size' else ''}{config.get(key)}"
    return name


def throughput_series(rows: Sequence[JobRow]) -> dict[str, dict[int, list[float]]]:
    """{series: {batch: [tokens/s of each job at that batch]}} over the jobs that measured any."""
    series: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for batch, tokens_per_s in row.throughput:
            series[series_name(row, rows)][batch].append(tokens_per_s)
    return series


def plot_throughput(rows: Sequence[JobRow], path: Path) -> bool:
    series = throughput_series(rows)
    batches = sorted({b for points in series.values() for b in points})
    if not batches:
        return False
    if len(batches) == 1:  # no batch axis to draw: compare the jobs instead
        return _throughput_bars(rows, batches[0], path)
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for name, points in sorted(series.items()):
        xs = sorted(points)
        line, = ax.plot(xs, [mean(points[b]) for b in xs], marker="o", label=name)
        for batch in xs:  # every job's own point, when several jobs share a batch size
            ax.scatter([batch] * len(points[batch]), points[batch], color=line.get_color(), s=12, alpha=0.5)
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlim(batches[0] / 1.5, batches[-1] * 1.5)
    ax.set_ylim(bottom=0)
    ax.set(xlabel="batch size (sequences decoded together)", ylabel="tokens/s (generated)",
           title="Throughput by batch size")
    ax.grid(True, alpha=0.3)
    ax.legend(title="model dtype", fontsize="small")
    _save(fig, path)
    return True


def _throughput_bars(rows: Sequence[JobRow], batch: int, path: Path) -> bool:
    jobs = [row for row in rows if row.throughput]
    keys = varying_overrides(list(rows))
    names = sorted({series_name(row, rows) for row in jobs})
    fig = Figure(figsize=(8, 1.4 + 0.45 * len(jobs)), layout="constrained")
    ax = fig.add_subplot()
    colors = {name: f"C{i}" for i, name in enumerate(names)}
    values = [row.throughput[0][1] for row in jobs]
    bars = ax.barh(range(len(jobs)), values, color=[colors[series_name(row, rows)] for row in jobs])
    ax.bar_label(bars, fmt="%.1f", padding=3, fontsize="small")
    ax.set_yticks(range(len(jobs)), [f"{row.job}: {job_label(row, keys)}" for row in jobs], fontsize="small")
    ax.invert_yaxis()
    ax.set_xlim(0, max(values) * 1.15)
    ax.set(xlabel="tokens/s (generated)", title=f"Throughput per configuration (all at batch size {batch})")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(handles=[Patch(color=colors[n], label=n) for n in names], title="model dtype", fontsize="small")
    _save(fig, path)
    return True


def plot_rouge(rows: Sequence[JobRow], path: Path) -> bool:
    jobs = [row for row in rows if row.config.get("task") in (None, "summarize")]
    if not any(row.metrics.get("rouge1") is not None for row in jobs):
        return False
    keys = varying_overrides(list(rows))
    fig = Figure(figsize=(8, 1.2 + 0.6 * len(jobs)), layout="constrained")
    ax = fig.add_subplot()
    height = 0.8 / len(ROUGE_KEYS)
    for i, key in enumerate(ROUGE_KEYS):
        positions = [j + (i - 1.5) * height for j in range(len(jobs))]
        bars = ax.barh(positions, [row.metrics.get(key) or 0.0 for row in jobs], height=height,
                       label=ROUGE_NAMES[key])
        texts = [("failed" if row.failed else "n/a") if i == 0 else "" for row in jobs]
        texts = [fmt_score(row.metrics[key]) if row.metrics.get(key) is not None else text
                 for row, text in zip(jobs, texts)]
        ax.bar_label(bars, labels=texts, padding=2, fontsize="x-small")
    labels = [f"{row.job}: {job_label(row, keys)}" + (" (failed)" if row.failed else "") for row in jobs]
    ax.set_yticks(range(len(jobs)), labels, fontsize="small")
    ax.invert_yaxis()  # job 0 on top, as in the tables
    # The whole scale the label names: all-zero scores (random weights) read as 0 of 100, not as 0 of 1, and the
    # plots of two sweeps compare at a glance; the bars' labels give the exact scores.
    ax.set_xlim(0, 100)
    ax.set(xlabel="score (0-100)", title="ROUGE per configuration")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    _save(fig, path)
    return True


def _save(fig: Figure, path: Path) -> None:
    """The PNG whole or not at all: one a full disk cut short would sit beside summary.md as a broken picture."""
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    write_atomic(path, png.getvalue())


def write_plots(rows: Sequence[JobRow], sweep_dir: Path) -> list[Path]:
    """Draw what the jobs measured; a plot with nothing to show is not written."""
    made = []
    for name, draw in ((THROUGHPUT_PLOT, plot_throughput), (ROUGE_PLOT, plot_rouge)):
        if draw(rows, sweep_dir / name):
            made.append(sweep_dir / name)
    return made
