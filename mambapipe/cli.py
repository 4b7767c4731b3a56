"""`python -m mambapipe` / `mambapipe`: start the app (mambapipe.app). Nothing but sys is imported before main's
guard: a Ctrl-C during the second or so of imports that start the app (Hydra, rich, the runner) is one line, not a
traceback, and on a busy machine even the import of dataclasses can take one."""

from __future__ import annotations

import sys


def main() -> None:
    """Run the app; a Ctrl-C that reaches this far came before any step ran (the runner reports one within a
    step, and the app a sweep's), and ends in one line and exit 130."""
    try:
        from mambapipe.app import run_app

        run_app()
    except KeyboardInterrupt:
        from mambapipe.pipeline.step import INTERRUPTED_EXIT

        print("INTERRUPTED before any step ran")
        sys.exit(INTERRUPTED_EXIT)
