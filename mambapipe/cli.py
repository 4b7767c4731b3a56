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


# What a launcher tells each process it starts: how many it started (the world size), which one this is, and how many
# it started on this node (a variable of the launcher's; the world size counts the ranks of every node).
_LAUNCHER_VARIABLES = (("torchrun", "WORLD_SIZE", "RANK", "LOCAL_WORLD_SIZE"),
                       ("mpirun", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
                       ("mpirun", "PMI_SIZE", "PMI_RANK", "MPI_LOCALNRANKS"))


def _refuse_to_run_as_one_of_several_ranks() -> None:
    """mambapipe starts its own tp_size ranks (mambapipe.parallel). Started as one of several ranks itself
    (`torchrun --nproc-per-node 2 -m mambapipe`), each would run the whole pipeline and launch ranks of its own: a
    usage error (exit 2), said by the first rank alone (the others exit 0 at once), with the user's own command to
    run instead and why it starts the ranks it does (cli_ranks.ranks_reason: the recipe's tp_size, and whether the
    model splits as many ways as the launcher started ranks on a node: one engine's ranks are of one node). A
    command line that runs no step (--version, --help, --cfg job, `cache ls`: cli_keys.runs_no_step) has nothing to
    run in parallel: the first rank runs it as without the launcher. Its own ranks (mambapipe.evaluate.worker,
    mambapipe.engine) and a sweep's jobs (mambapipe.sweep.child, submitit's) are started otherwise, not through
    here."""
    import os
    import shlex

    for launcher, size_variable, rank_variable, local_size_variable in _LAUNCHER_VARIABLES:
        size = os.environ.get(size_variable, "")
        if not (size.isdecimal() and int(size) > 1):
            continue
        if os.environ.get(rank_variable, "0") != "0":
            # Quietly and with 0, whatever the command line, leaving the launcher's exit status to the first rank's:
            # a rank that failed first would make mpirun or torchrun kill the first one before it says why
            # (composing the config for the reason takes it a few tenths of a second longer).
            sys.exit(0)
        from mambapipe.cli_keys import runs_no_step  # Hydra's parser, imported under a launcher alone

        if runs_no_step(sys.argv[1:]):
            return
        local_size = os.environ.get(local_size_variable, "")
        gpus = local_size if local_size.isdecimal() and 0 < int(local_size) < int(size) else size
        nodes = f" ({gpus} on each node)" if gpus != size else ""
        from mambapipe.cli_ranks import ranks_reason  # composes the config

        program = ["mambapipe"] if os.path.basename(sys.argv[0]) == "mambapipe" else ["python", "-m", "mambapipe"]
        where = " on one node" if nodes else ""
        print(f"mambapipe was started as one of {size} ranks{nodes} by {launcher}, but it starts its own tp_size "
              f"ranks: run `{shlex.join([*program, *sys.argv[1:]])}`{where} without {launcher} "
              f"({ranks_reason(sys.argv[1:], int(gpus))})", file=sys.stderr)
        sys.exit(2)
