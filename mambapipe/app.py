"""The app that mambapipe.cli starts: check the command line, compose the recipe with Hydra and hand it to the
runner."""

from __future__ import annotations

import sys
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from rich.markup import escape

from mambapipe import interrupts
from mambapipe.cli_keys import ParsedCommandLine, other_command_problem, parse_command_line, unknown_key_problem
from mambapipe.cli_paths import expand_config_dir, grammar_problem, tilde_problem
from mambapipe.cli_recipes import recipe_problem
from mambapipe.cli_values import (
    bad_value_problem,
    hydra_sweep_problem,
    spaced_sweep_problem,
    unchosen_model_problem,
    unswept_sweep_problem,
)
from mambapipe.config import CONFIG_DIR, register_configs
from mambapipe.hydra_dirs import SweepDirFull
from mambapipe.pipeline.report import end_quietly_on_broken_pipe, make_console, print_diagnostic
from mambapipe.pipeline.runner import command_line_config_dirs, command_line_overrides, run_recipe
from mambapipe.pipeline.step import INTERRUPTED_EXIT
from mambapipe.sweep.job import StdoutReaderGone

register_configs()


def run_app() -> None:
    """Run the app; a mistyped key on the command line, a recipe or model that does not exist, a value its
    key's type refuses, a sweep's values without -m or split by spaces, a sweep of Hydra's own settings, an
    unquoted ~ in a value or another override Hydra cannot parse, a mistake in a recipe file, or a recipe that
    sets model keys but picks no model (each value of a sweep, before any job runs) ends in one line on standard
    error, not a traceback, and so does a command of mambapipe-cache or mambapipe-sweep given to this one (exit 2,
    a usage error as argparse's). A Ctrl-C in a sweep ends in the summary of its jobs so far; mambapipe.cli reports
    one outside a step. So does a sweep whose standard output's reader went away (`| head`), in its summary files
    and lines on standard error, exit 1, and one whose directory's disk is full after a job, in the table of its
    jobs and one line, exit 1."""
    misplaced = other_command_problem(sys.argv[1:])
    if misplaced:
        print(misplaced, file=sys.stderr)
        sys.exit(2)
    sys.argv[1:] = argv = expand_config_dir(sys.argv[1:])  # Hydra parses sys.argv itself: the expanded -cd too
    args = parse_command_line(argv)  # once for all the checks; None where Hydra is to read the line itself
    problem = args and command_line_problem(args)
    if problem:
        print_diagnostic(make_console(stderr=True), f"[red]FAILED[/] {escape(problem)}")
        sys.exit(1)
    try:
        _hydra_app()
    except SweepDirFull as full:
        from mambapipe.sweep.callback import summarize_full_sweep

        summarize_full_sweep(make_console(), make_console(stderr=True), full)
        interrupts.ignore_from_here()  # said and decided: a Ctrl-C now would only turn exit 1 into 130
        sys.exit(1)
    except KeyboardInterrupt:
        from mambapipe.sweep.callback import summarize_interrupted_sweep

        if not summarize_interrupted_sweep(make_console(), make_console(stderr=True)):
            raise
        interrupts.ignore_from_here()
        sys.exit(INTERRUPTED_EXIT)
    except StdoutReaderGone:
        from mambapipe.sweep.callback import summarize_unread_sweep

        summarize_unread_sweep(make_console(stderr=True))
        end_quietly_on_broken_pipe()


def command_line_problem(args: ParsedCommandLine) -> Optional[str]:
    """The command line's first mistake that run_app names in one line, None for none."""
    return (tilde_problem(args) or spaced_sweep_problem(args) or grammar_problem(args) or hydra_sweep_problem(args)
            or unknown_key_problem(args) or unswept_sweep_problem(args) or bad_value_problem(args)
            or recipe_problem(args) or unchosen_model_problem(args))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _hydra_app(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # Each job in its own child process and GPUs; a failure is recorded, never raised (Hydra would
        # stop the sweep), and the sweep summary callback sets the exit code.
        from mambapipe.sweep.job import run_isolated_job
        run_isolated_job(cfg, hydra_cfg)
        return
    result = run_recipe(cfg, run_dir=hydra_cfg.runtime.output_dir,
                        overrides=command_line_overrides(hydra_cfg.overrides.task),
                        config_dirs=command_line_config_dirs(hydra_cfg.runtime.config_sources))
    # The run is over and recorded: a Ctrl-C from here on (the interpreter's shutdown takes a second) would only
    # turn its exit status into 130, and mambapipe.cli would report it as an interrupted run.
    interrupts.ignore_from_here()
    if result.failed:
        sys.exit(INTERRUPTED_EXIT if result.interrupted else 1)
