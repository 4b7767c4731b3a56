"""`mambapipe-sweep summarize SWEEP_DIR` (or `python -m mambapipe.sweep summarize ...`): rebuild a sweep's
summary.md, summary.csv and plots from its run directories, e.g. after a job was rerun by hand or when
the sweep was interrupted. Exits 1 when any job failed or was not run, as the sweep itself does."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from rich.markup import escape

from mambapipe.pipeline.provenance import installed_version
from mambapipe.pipeline.report import make_console, print_diagnostic
from mambapipe.sweep.report import summarize_sweep, summary_disk_full
from mambapipe.sweep.summary import OVERRIDES_FILE, holds_single_runs_only
from mambapipe.sweep.tables import print_table


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mambapipe-sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    summarize = commands.add_parser("summarize", help="rebuild summary.md/.csv and plots of a sweep dir")
    summarize.add_argument("sweep_dir", type=Path, help="the multirun directory (holds multirun.yaml)")
    summarize.add_argument("--no-plots", action="store_true", help="tables only")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    console = make_console()
    sweep_dir = Path(os.path.abspath(args.sweep_dir))  # as the summary files will name it
    if not sweep_dir.is_dir():
        return _usage_error(f"{sweep_dir} is not a directory: pass the sweep dir (multirun/<date>/<time>, or the "
                            "sweep's hydra.sweep.dir)")
    if (sweep_dir / OVERRIDES_FILE).is_file():  # its summary would land among a run's own files
        return _usage_error(f"{sweep_dir} is a single run's directory (it has its own {OVERRIDES_FILE}): pass the "
                            "sweep directory above its job dirs")
    if holds_single_runs_only(sweep_dir):  # outputs/<date>/: its summary would take the user's runs for jobs
        return _usage_error(f"{sweep_dir} holds single runs (python -m mambapipe without -m), not a sweep's jobs: "
                            "pass a sweep directory (multirun/<date>/<time>, or the sweep's hydra.sweep.dir)")
    try:
        rows = summarize_sweep(sweep_dir, plots=not args.no_plots)
    except Exception as exc:  # a full disk is one line; anything else a bug's traceback
        full = summary_disk_full(exc, sweep_dir)
        if full is None:
            raise
        print_diagnostic(make_console(stderr=True), f"[red]FAILED[/] {escape(full)}")
        return 1
    if not rows:  # summarize_sweep wrote nothing
        return _usage_error(f"no job run dirs ({OVERRIDES_FILE}) under {sweep_dir}: is it a sweep directory?")
    print_table(console, rows, sweep_dir)
    console.print(f"summary: {sweep_dir / 'summary.md'}")
    return 0 if all(row.succeeded for row in rows) else 1


def _usage_error(message: str) -> int:
    """Say `message` on standard error, as argparse says its errors (`summarize DIR 2>/dev/null` shows the results
    alone), in one line however long the path; exit status 2."""
    print_diagnostic(make_console(stderr=True), f"[red]error[/] {escape(message)}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
