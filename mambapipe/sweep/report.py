"""Write a sweep's summary files: `summarize_sweep(sweep_dir)` is what both the end-of-sweep callback
and `mambapipe-sweep summarize` call."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from mambapipe.pipeline.disk import full_disk
from mambapipe.sweep.expected import SweepConfig
from mambapipe.sweep.summary import JobRow, collect_rows
from mambapipe.sweep.tables import write_csv, write_markdown

THROUGHPUT_PLOT, ROUGE_PLOT = "tokens_per_s.png", "rouge.png"  # drawn by plots.py, which imports matplotlib


def summarize_sweep(sweep_dir: Path | str, plots: bool = True, sweep_config: Optional[SweepConfig] = None
                    ) -> list[JobRow]:
    """Rebuild summary.csv, summary.md and the PNG plots in `sweep_dir` from its run dirs (removing an earlier
    summary's plots that it does not draw); the rows. `sweep_config`: its multirun.yaml where the caller has read it
    already. Without any job run dir nothing is written: the directory is not a sweep, and its files are not ours."""
    # Absolute, as the jobs' own run dirs are (Hydra's runtime.output_dir): the summary's paths work from anywhere.
    sweep_dir = Path(os.path.abspath(sweep_dir))
    found = collect_rows(sweep_dir, sweep_config)
    rows = found.rows
    if all(row.not_run for row in rows):  # no job dir at all: not a sweep dir, or a sweep stopped
        return []  # before its first job; either way nothing to summarize
    made: list = []
    if plots:
        from mambapipe.sweep.plots import write_plots  # matplotlib costs ~1 s: only sweeps pay it

        made = write_plots([row for row in rows if not row.not_run], sweep_dir)
    _remove_stale_plots(sweep_dir, made)
    write_csv(rows, sweep_dir / "summary.csv")
    resume = found.sweep_config.resume_command() if any(row.not_run for row in rows) else None
    write_markdown(rows, sweep_dir / "summary.md", sweep_dir, made, left_out=found.earlier, resume=resume,
                   config_dirs=found.sweep_config.config_dirs(), command=found.sweep_config.command())
    return rows


def summary_disk_full(error: BaseException, sweep_dir: Path) -> Optional[str]:
    """The one line for a summary that a full disk (or a quota spent) kept summarize_sweep from writing, None for
    another error: the jobs' results are in their run dirs, so what to do is to write it again once there is room."""
    said = full_disk(error)
    if said is None:
        return None
    return f"{said} in the sweep directory {sweep_dir}: free space there, then: mambapipe-sweep summarize {sweep_dir}"


def _remove_stale_plots(sweep_dir: Path, drawn: list[Path]) -> None:
    """Remove the plots an earlier summary drew and this one did not (--no-plots, or nothing left to show), which
    would sit beside a summary.md of other numbers. Only our own files, by name: the sweep dir is the user's too."""
    for name in (THROUGHPUT_PLOT, ROUGE_PLOT):
        if sweep_dir / name not in drawn:
            (sweep_dir / name).unlink(missing_ok=True)
