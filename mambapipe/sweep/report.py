"""Write a sweep's summary files: `summarize_sweep(sweep_dir)` is what both the end-of-sweep callback
and `mambapipe-sweep summarize` call."""

from __future__ import annotations

import os
from pathlib import Path

from mambapipe.sweep.summary import JobRow, find_sweep_jobs, read_row
from mambapipe.sweep.tables import write_csv, write_markdown


def summarize_sweep(sweep_dir: Path | str, plots: bool = True) -> list[JobRow]:
    """Rebuild summary.csv, summary.md and the PNG plots in `sweep_dir` from its run dirs; the rows.
    Without any job run dir nothing is written: the directory is not a sweep, and its files are not ours."""
    # Absolute, as the jobs' own run dirs are (Hydra's runtime.output_dir): the summary's paths work from anywhere.
    sweep_dir = Path(os.path.abspath(sweep_dir))
    jobs = find_sweep_jobs(sweep_dir)
    rows = [read_row(sweep_dir, run_dir) for run_dir in jobs.current]
    if not rows:
        return rows
    made: list = []
    if plots:
        from mambapipe.sweep.plots import write_plots  # matplotlib costs ~1 s: only sweeps pay it

        made = write_plots(rows, sweep_dir)
    write_csv(rows, sweep_dir / "summary.csv")
    write_markdown(rows, sweep_dir / "summary.md", sweep_dir, made, left_out=jobs.earlier)
    return rows
