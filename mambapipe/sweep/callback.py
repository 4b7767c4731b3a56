"""Hydra callback (registered in configs/config.yaml under hydra.callbacks): at the end of a multirun,
write the sweep summary and exit non-zero when any job failed.

Jobs never raise (see job.py), so Hydra finishes every job and then calls `on_multirun_end`; Hydra turns
an exception from a callback into a warning, hence `SystemExit` for the exit code.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.markup import escape

from mambapipe.pipeline.report import make_console
from mambapipe.sweep.report import summarize_sweep
from mambapipe.sweep.tables import print_table

log = logging.getLogger(__name__)


class SweepSummaryCallback(Callback):
    def __init__(self, plots: bool = True) -> None:
        self.plots = plots
        self.sweep_dir: Optional[Path] = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Resolved once: `${now:...}` in hydra.sweep.dir must give the directory the jobs used.
        self.sweep_dir = Path(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = self.sweep_dir or Path(config.hydra.sweep.dir)
        console = make_console()
        try:
            rows = summarize_sweep(sweep_dir, plots=self.plots)
        except Exception as exc:  # results exist but cannot be read back: not a green sweep
            log.error("sweep summary failed", exc_info=True)
            console.print(f"[red]FAILED[/] could not summarize {sweep_dir}: {type(exc).__name__}: {escape(str(exc))}; "
                          f"after a fix: mambapipe-sweep summarize {sweep_dir}", soft_wrap=True)
            raise SystemExit(1) from exc
        print_table(console, rows, sweep_dir)
        console.print(f"summary: {sweep_dir / 'summary.md'}")
        failed = [row.job for row in rows if row.failed]
        if failed:
            console.print(f"[red]FAILED[/] {len(failed)} of {len(rows)} jobs: {', '.join(failed)}", soft_wrap=True)
            raise SystemExit(1)
