"""What a sweep's multirun.yaml says, for its summary: the jobs it was asked to run, so a summary made after an
interrupted sweep can list the jobs that never started (they left no run dir to read), and the command line
that runs it again (its overrides and --config-dir).

Only Hydra's basic sweeper (the default) numbers its jobs in an order we can re-derive: its sweep
parameters (`hydra.sweeper.params`, then the command line's task overrides) expanded as it expands them.
For any other sweeper, or a multirun.yaml that cannot be read, the jobs are unknown (None)."""

from __future__ import annotations

import logging
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra import initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_loader import ConfigLoader
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from mambapipe.config import CONFIG_DIR
from mambapipe.pipeline.runner import command_line_config_dirs, config_dir_arguments, hydra_quoted, program_name
from mambapipe.redact import redact
from mambapipe.sweep.record import SWEEP_CONFIG, digest_of_sweep_config

log = logging.getLogger(__name__)
BASIC_SWEEPER = f"{BasicSweeper.__module__}.{BasicSweeper.__name__}"
JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"  # a plugin: maybe not installed
DEFAULT_SUBDIR = "${hydra.job.num}"


@dataclass(frozen=True)
class ExpectedJob:
    num: int  # Hydra's hydra.job.num
    overrides: list[str]
    run_dir: Optional[Path]  # where the job writes; None unless hydra.sweep.subdir is the default


@dataclass(frozen=True)
class SweepConfig:
    """The `hydra` part of a sweep's multirun.yaml as plain values, read once for everything a summary takes
    from it, its interpolations left as written (as Hydra's sweeper reads its arguments: `${hydra.job.num}` in
    an override means each job's own number). `hydra` is None when there is no file or it cannot be read;
    `digest` (the sha256 its jobs' records name, see record.py) None when there is no file."""
    sweep_dir: Path  # absolute, as the summary's paths are
    hydra: Optional[dict[str, Any]]
    digest: Optional[str]

    @classmethod
    def read(cls, sweep_dir: Path) -> SweepConfig:
        sweep_dir = Path(os.path.abspath(sweep_dir))
        try:
            contents = (sweep_dir / SWEEP_CONFIG).read_bytes()
        except OSError as exc:
            log.debug("cannot read %s of %s: %s", SWEEP_CONFIG, sweep_dir, exc)
            return cls(sweep_dir, None, None)
        try:
            hydra = OmegaConf.to_container(OmegaConf.create(contents.decode()), resolve=False)["hydra"]
        except Exception as exc:  # noqa: BLE001 - UTF-8, YAML and OmegaConf errors alike: unknown
            log.debug("cannot read %s of %s: %s", SWEEP_CONFIG, sweep_dir, exc)
            hydra = None
        return cls(sweep_dir, hydra if isinstance(hydra, dict) else None, digest_of_sweep_config(contents))

    def jobs(self) -> Optional[list[ExpectedJob]]:
        """Every job of the sweep, in job order; None when that cannot be known."""
        try:
            if self.hydra["sweeper"]["_target_"] != BASIC_SWEEPER:
                return None
            arguments = [f"{key}={value}" for key, value in (self.hydra["sweeper"].get("params") or {}).items()]
            jobs = _expand(arguments + list(self.hydra["overrides"]["task"]))
            subdir = self.hydra["sweep"].get("subdir")
        except Exception as exc:  # noqa: BLE001 - a summary without the never-started jobs beats no summary
            log.debug("the jobs of %s are not known: %s", self.sweep_dir, exc)
            return None
        numbered_dirs = subdir == DEFAULT_SUBDIR
        return [ExpectedJob(num, overrides, self.sweep_dir / str(num) if numbered_dirs else None)
                for num, overrides in enumerate(jobs)]

    def launcher(self) -> Optional[str]:
        """The `_target_` of the sweep's launcher (`hydra/launcher=...`); None when unknown."""
        launcher = (self.hydra or {}).get("launcher")
        return launcher.get("_target_") if isinstance(launcher, dict) else None

    def config_dirs(self) -> list[str]:
        """The config dirs the sweep's command line added (--config-dir)."""
        runtime = (self.hydra or {}).get("runtime") or {}
        try:
            return command_line_config_dirs(runtime.get("config_sources") or [])
        except (KeyError, TypeError):  # a multirun.yaml not of Hydra's making
            return []

    def resume_command(self) -> Optional[str]:
        """The command that runs the sweep again, into the same directory; None without its overrides."""
        return self._command([f"hydra.sweep.dir={hydra_quoted(str(self.sweep_dir))}"])

    def command(self) -> Optional[str]:
        """The command that runs the sweep again into a directory of its own, as one reproducing it elsewhere
        would: this one's path is of no use there, and a rerun into it would write over its jobs."""
        return self._command([])

    def _command(self, more: list[str]) -> Optional[str]:
        overrides = (self.hydra or {}).get("overrides")
        if not isinstance(overrides, dict):
            return None
        kept = [o for o in overrides.get("hydra") or [] if o.partition("=")[0] not in ("hydra.mode", "hydra.sweep.dir")]
        arguments = [*config_dir_arguments(self.config_dirs()), *(overrides.get("task") or []), *kept, *more]
        # summary.md, to paste, records it: a token in hydra.launcher.setup (SLURM's `export HF_TOKEN=...`) is ***
        return " ".join([program_name(), "-m", *(shlex.quote(redact(argument)) for argument in arguments)])


def _expand(arguments: list[str]) -> list[list[str]]:
    """The overrides of each job, as the basic sweeper expands `arguments` (batch after batch)."""
    parser = OverridesParser.create(config_loader=_config_loader())  # glob(...) lists a group's options
    batches = BasicSweeper.split_arguments(parser.parse_overrides(arguments), max_batch_size=None)
    return [job for batch in batches for job in batch]


def _config_loader() -> ConfigLoader:
    """The running app's config loader; outside one (`mambapipe-sweep summarize`), one for our configs."""
    if GlobalHydra.instance().is_initialized():
        return GlobalHydra.instance().config_loader()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return GlobalHydra.instance().config_loader()
