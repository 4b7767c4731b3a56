"""`python -m mambapipe` / `mambapipe`: compose the recipe with Hydra and hand it to the runner."""

from __future__ import annotations

import io
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Optional

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from rich.markup import escape

from mambapipe.config import CONFIG_DIR, close_key, key_hint, register_configs, schema_key
from mambapipe.pipeline.report import make_console
from mambapipe.pipeline.runner import run_recipe

register_configs()
INTERRUPTED_EXIT = 130  # what shells report for a command stopped by Ctrl-C (128 + SIGINT)


def main() -> None:
    """Run the app; a mistyped key on the command line, or a Ctrl-C that the runner did not already report,
    ends in one line (a Ctrl-C in a sweep also in the summary of the jobs so far), not a traceback."""
    problem = unknown_key_problem(sys.argv[1:])
    if problem:
        make_console().print(f"[red]FAILED[/] {escape(problem)}", soft_wrap=True)
        sys.exit(1)
    try:
        _hydra_app()
    except KeyboardInterrupt:
        from mambapipe.sweep.callback import summarize_interrupted_sweep

        console = make_console()
        if not summarize_interrupted_sweep(console):
            console.print("[red]INTERRUPTED[/]")
        sys.exit(INTERRUPTED_EXIT)


def unknown_key_problem(argv: list[str]) -> Optional[str]:
    """The first override of `argv` that sets a key the schema lacks, as one line with the key it likely meant.
    Checked before Hydra composes: its own error for a mistyped key spans six lines and suggests `+key`, which
    would add the typo as a new key that no step reads."""
    groups = {p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir()}
    for key in _changed_keys(_overrides(argv), groups):
        meant = schema_key(key) or close_key(key, groups)
        if meant != key:
            return f"{key} is not a config key; {key_hint(meant)}"
    return None


def _overrides(argv: list[str]) -> list[str]:
    """The overrides of a command line, as Hydra's own argument parser reads them. None when Hydra will refuse
    the line itself, or when the schema may not be what they set: another config (--config-name, --config-path,
    --config-dir), a rerun, or -sc (whose `install=bash` is no override)."""
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):  # argparse's usage, --version
            args = get_args_parser().parse_args(argv)
    except SystemExit:
        return []
    if args.shell_completion or args.config_path or args.config_name or args.config_dir or args.experimental_rerun:
        return []
    return args.overrides


def _changed_keys(overrides: list[str], groups: set[str]) -> list[str]:
    """The config keys `overrides` change. Left out: overrides that do not parse (Hydra reports them),
    `+key`/`++key`/`~key` (resolve_config names added keys that nothing reads), Hydra's own keys, and config
    group choices (recipe=..., hydra/launcher=..., group@package=...)."""
    parser, keys = OverridesParser.create(), []
    for text in overrides:
        try:
            override = parser.parse_override(text)
        except HydraException:
            continue
        key = override.key_or_group
        if (override.type == OverrideType.CHANGE and override.package is None and "/" not in key
                and key not in groups and key.partition(".")[0] != "hydra"):
            keys.append(key)
    return keys


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _hydra_app(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # Each job in its own child process and GPUs; a failure is recorded, never raised (Hydra would
        # stop the sweep), and the sweep summary callback sets the exit code.
        from mambapipe.sweep.job import run_isolated_job
        run_isolated_job(cfg, hydra_cfg)
        return
    result = run_recipe(cfg, run_dir=hydra_cfg.runtime.output_dir, overrides=list(hydra_cfg.overrides.task))
    if result.failed:
        sys.exit(INTERRUPTED_EXIT if result.interrupted else 1)
