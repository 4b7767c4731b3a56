"""`python -m mambapipe` / `mambapipe`: start the app (mambapipe.app). Nothing but sys is imported before main's
guard: a Ctrl-C during the second or so of imports that start the app (Hydra, rich, the runner) is one line, not a
traceback, and on a busy machine even the import of dataclasses can take one."""

from __future__ import annotations

import sys


def main() -> None:
    """Run the app; a Ctrl-C that reaches this far (the runner reports one within a step, and the app a sweep's)
    ends in one line and exit 130. It may have come before any step ran (the imports, Hydra's compose, the plan)
    or after some did (between two steps, while the run is recorded), which this handler cannot tell apart."""
    try:
        if "--version" in sys.argv[1:]:  # before Hydra's, which names Hydra's version alone
            from mambapipe.pipeline.provenance import installed_version

            print(f"mambapipe {installed_version()} (Hydra {installed_version('hydra-core')})")
            return
        from mambapipe import interrupts

        interrupts.watch()
        from mambapipe.app import run_app

        run_app()
    except KeyboardInterrupt:
        from mambapipe import interrupts

        interrupts.ignore_from_here()  # a second Ctrl-C, here or as the interpreter shuts down, still exits 130
        from mambapipe.pipeline.step import INTERRUPTED_EXIT

        sys.stdout.flush()  # what the run printed comes first, where both streams show on one terminal
        print("INTERRUPTED (finished steps are cached: the same command resumes)", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
