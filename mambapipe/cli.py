"""`python -m mambapipe` / `mambapipe`: start the app (mambapipe.app). Nothing but sys is imported before main's
guard: a Ctrl-C during the second or so of imports that start the app (Hydra, rich, the runner) is one line, not a
traceback, and on a busy machine even the import of dataclasses can take one."""

from __future__ import annotations

import sys


def main() -> None:
    """Run the app; a Ctrl-C that reaches this far (the runner reports one within a step, and the app a sweep's)
    ends in one line and exit 130. It may have come before any step ran (the imports, Hydra's compose, the plan)
    or after some did (between two steps, while the run is recorded), which this handler cannot tell apart. A reader
    of standard output that went away ends it quietly, as rich's console does in what the app prints through it."""
    try:
        _refuse_to_run_as_one_of_several_ranks()
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
    except BrokenPipeError:  # standard output's reader went away (`--help | head -3`) in a print rich does not make
        from mambapipe.pipeline.report import end_quietly_on_broken_pipe

        end_quietly_on_broken_pipe()


# What a launcher tells each process it starts: how many it started (the world size), and which one this is.
_LAUNCHER_VARIABLES = (("torchrun", "WORLD_SIZE", "RANK"), ("mpirun", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),
                       ("mpirun", "PMI_SIZE", "PMI_RANK"))


def _refuse_to_run_as_one_of_several_ranks() -> None:
    """mambapipe starts its own tp_size ranks (mambapipe.parallel). Started as one of several ranks itself
    (`torchrun --nproc-per-node 2 -m mambapipe`), each would run the whole pipeline and launch ranks of its own: a
    usage error (exit 2), said by the first rank alone. Its own ranks (mambapipe.evaluate.worker, mambapipe.engine)
    and a sweep's jobs (mambapipe.sweep.child, submitit's) are started otherwise, not through here."""
    import os
    import shlex

    for launcher, size_variable, rank_variable in _LAUNCHER_VARIABLES:
        size = os.environ.get(size_variable, "")
        if not (size.isdecimal() and int(size) > 1):
            continue
        if os.environ.get(rank_variable, "0") == "0":
            arguments = sys.argv[1:] if any(a.lstrip("+").startswith("tp_size=") for a in sys.argv[1:]) else \
                [*sys.argv[1:], f"tp_size={size}"]
            program = ["mambapipe"] if os.path.basename(sys.argv[0]) == "mambapipe" else ["python", "-m", "mambapipe"]
            print(f"mambapipe was started as one of {size} ranks by {launcher}, but it starts its own tp_size ranks: "
                  f"run `{shlex.join([*program, *arguments])}` without {launcher}", file=sys.stderr)
        sys.exit(2)
