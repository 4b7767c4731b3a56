"""Write a sweep's summary files: `summarize_sweep(sweep_dir)` is what both the end-of-sweep callback
and `mambapipe-sweep summarize` call."""

from __future__ import annotations

import os
from pathlib import Path

from mambapipe.sweep.summary import JobRow, collect_rows
from mambapipe.sweep.tables import write_csv, write_markdown


def summarize_sweep(sweep_dir: Path | str, plots: bool = True) -> list[JobRow]:
    """Rebuild summary.csv, summary.md and the PNG plots in `sweep_dir` from its run dirs; the rows.
    Without any job run dir nothing is written: the directory is not a sweep, and its files are not ours."""
    # Absolute, as the jobs' own run dirs are (Hydra's runtime.output_dir): the summary's paths work from anywhere.
    sweep_dir = Path(os.path.abspath(sweep_dir))
    found = collect_rows(sweep_dir)
    rows = found.rows
    if all(row.not_run for row in rows):  # no job dir at all: not a sweep dir, or a sweep stopped
        return []  # before its first job; either way nothing to summarize
    made: list = []
    if plots:
        from mambapipe.sweep.plots import write_plots  # matplotlib costs ~1 s: only sweeps pay it

        made = write_plots([row for row in rows if not row.not_run], sweep_dir)
    write_csv(rows, sweep_dir / "summary.csv")
    resume = found.sweep_config.resume_command() if any(row.not_run for row in rows) else None
    write_markdown(rows, sweep_dir / "summary.md", sweep_dir, made, left_out=found.earlier, resume=resume,
                   config_dirs=found.sweep_config.config_dirs())
    return rows
