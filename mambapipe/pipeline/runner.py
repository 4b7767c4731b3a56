"""`run_recipe(cfg)`: plan, run the steps that are not cached, record the run.

The run directory gets the resolved `config.yaml`, `run.json`, and the evaluate step's
`metrics.json` / `predictions.jsonl`, each written whole or not at all. Artifacts live in the cache (see store.py),
never in the run dir.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

from filelock import Timeout
from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.console import Console
from rich.markup import escape

from mambapipe import hub, interrupts
from mambapipe.pipeline.disk import DiskFullError, filling_cache, filling_run_dir
from mambapipe.pipeline.keys import short
from mambapipe.pipeline.plan import CACHED, RUN, Plan, PlannedStep, build_plan, upstream_params
from mambapipe.pipeline.provenance import git_state, machine, utc_now, versions
from mambapipe.pipeline.report import make_console, print_diagnostic, print_plan, print_summary
from mambapipe.pipeline.resolve import Resolved, resolve_config
from mambapipe.pipeline.step import GateMissed, Step, StepContext, StepError, crash_summary
from mambapipe.pipeline.store import ArtifactStore, write_atomic
from mambapipe.redact import redact

log = logging.getLogger(__name__)
RUN_DIR_FILES = ("metrics.json", "predictions.jsonl")
PLANNED_ONLY = "plan_only=true: nothing ran; without it the steps the plan marks run would run"
HYDRA_PLAIN_VALUE = re.compile(r"[\w/.+\-@%:]+", re.ASCII)  # read back verbatim by Hydra's override grammar


@dataclass
class StepOutcome:
    name: str
    key: str
    status: str  # cached | ran | failed | skipped
    seconds: float
    artifact: Optional[str]
    # Its artifact, cached or ran, failed the step's gate: the run's reason. Apart from `status`, which still says
    # where the artifact came from (a sweep's tables mark cached speeds by it); the summaries show both.
    gate_missed: bool = False


@dataclass
class RunResult:
    outcomes: list[StepOutcome]
    reason: Optional[str]  # one line; None on success
    run_dir: Path
    interrupted: bool = False  # by Ctrl-C, within a step

    @property
    def failed(self) -> bool:
        return self.reason is not None


def run_recipe(cfg: DictConfig, run_dir: Path | str, overrides: Sequence[str] = (),
               steps: Optional[Sequence[Step]] = None, console: Optional[Console] = None,
               config_dirs: Sequence[str] = (), errors: Optional[Console] = None, sweep_job: bool = False) -> RunResult:
    """Plan and run the pipeline `cfg` describes; `steps` defaults to the four real steps. `overrides` and
    `config_dirs` (the command line's --config-dir) are the command the resume line repeats. The plan, progress and
    summary go to `console` (standard output's), why the run failed and how to run it again to `errors` (standard
    error's). A `sweep_job`'s Ctrl-C stops its sweep, whose finish command resumes the job: it prints no resume line
    of its own, which would offer a second command to choose from."""
    console = console or make_console()
    errors = errors or make_console(stderr=True)
    command = CommandLine(list(overrides), list(config_dirs), sweep_job)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _interrupt_recorded(run_dir):
        resolved, plan, config_problem = _plan(cfg, run_dir, steps, console)
    if plan is None:  # no plan can be made without the config, e.g. a mandatory value left ???
        return _finish(console, errors, run_dir, None, [], config_problem, command, stopped_at_plan=True)
    if plan.problems or resolved.config["plan_only"]:
        refused = plan.refused_steps()  # failed, not skipped: so a summary filtered on failed steps finds them
        outcomes = [StepOutcome(p.name, p.key, "failed", 0.0, None) if p.name in refused else _not_run(plan, p)
                    for p in plan.steps]
        reason = "; ".join(plan.problems) if plan.problems else None
        return _finish(console, errors, run_dir, resolved.config, outcomes, reason, command, stopped_at_plan=True)
    outcomes, reason, interrupted, verdict = _execute(plan, run_dir, list(overrides), console)
    return _finish(console, errors, run_dir, resolved.config, outcomes, reason, command, stopped_at_plan=False,
                   interrupted=interrupted, verdict=verdict)


def _plan(cfg: DictConfig, run_dir: Path, steps: Optional[Sequence[Step]],
          console: Console) -> tuple[Optional[Resolved], Optional[Plan], Optional[str]]:
    """The resolved config and the printed plan; (None, None, the reason) where the config cannot be resolved."""
    if steps is None:
        from mambapipe.steps import load_steps
        steps = load_steps()
    # A reused run dir (hydra.run.dir=...) must not show an earlier run's files, whichever step this run stops at.
    for name in (*RUN_DIR_FILES, *(name for step in steps for name in getattr(step, "run_dir_files", ()))):
        (run_dir / name).unlink(missing_ok=True)
    try:
        resolved = resolve_config(cfg)
    except StepError as exc:
        return None, None, f"config: {exc}"
    try:
        _write_into_run_dir(run_dir, "config.yaml", OmegaConf.to_yaml(resolved.config))
    except DiskFullError as exc:  # nothing the run made could be kept there
        return None, None, str(exc)
    hub.forget_unreachable()  # an earlier run in this process may have found it down
    plan = build_plan(resolved, steps, ArtifactStore(resolved.config["cache_dir"]))
    print_plan(console, plan, show_notes=resolved.config["plan_only"])
    return resolved, plan, None


@contextlib.contextmanager
def _interrupt_recorded(run_dir: Path) -> Iterator[None]:
    """A Ctrl-C before any step ran (the imports of the steps, the plan) is recorded, as a run dir without a
    run.json reads as a run killed or still going; mambapipe.cli reports it. Only around the planning: a run that
    stopped at its plan has its own record, which a Ctrl-C while it is printed must not replace."""
    try:
        yield
    except KeyboardInterrupt:
        with interrupts.deferred(), contextlib.suppress(DiskFullError):  # the Ctrl-C is what to report
            _record(run_dir, _run_record([], "interrupted", stopped_at_plan=True, device=None))
        raise


def _not_run(plan: Plan, planned: PlannedStep) -> StepOutcome:
    cached = planned.action == CACHED
    artifact = str(plan.artifact(planned.name)) if cached else None
    return StepOutcome(planned.name, planned.key, "cached" if cached else "skipped", 0.0, artifact)


def _execute(plan: Plan, run_dir: Path, overrides: list[str],
             console: Console) -> tuple[list[StepOutcome], Optional[str], bool, Optional[dict[str, str]]]:
    """Run the plan's steps in order; the outcomes, the failure reason, whether Ctrl-C stopped it, and the gate's
    verdict where that is the reason (run.json's gate_verdict: a rerun must change the setting it names)."""
    outcomes: list[StepOutcome] = []
    reason: Optional[str] = None
    interrupted = False
    verdict: Optional[dict[str, str]] = None
    for planned in plan.steps:
        if reason is None and planned.action == RUN and interrupts.received():  # dropped by code before (a __del__)
            reason, interrupted = f"{planned.name}: interrupted", True
        if reason is not None:
            outcomes.append(StepOutcome(planned.name, planned.key, "skipped", 0.0, None))
            continue
        if planned.action == RUN:
            outcome, reason, interrupted = _run_or_fail(plan, planned, run_dir, overrides, console)
        else:
            outcome = _not_run(plan, planned)
        outcomes.append(outcome)
        if outcome.artifact:  # its files the run dir keeps (the evaluate step's), made by this run or an earlier one
            try:
                _publish(Path(outcome.artifact), run_dir)
                missed = _missed_gate(planned, Path(outcome.artifact), console)
            except DiskFullError as exc:  # the artifact is whole in the cache: the next run only copies them
                reason = f"{planned.name}: {exc}"
                continue
            if missed is not None:
                outcome.gate_missed, reason = True, f"{planned.name}: {missed}"
                if isinstance(missed, GateMissed):
                    verdict = {"step": planned.name, "key": missed.key, "change": missed.change}
    return outcomes, reason, interrupted, verdict


def _missed_gate(planned: PlannedStep, artifact: Path, console: Console) -> Optional[StepError]:
    """Why the step's gate (evaluate's accuracy gate) refuses its artifact, else None. Checked on every run, cached
    or not: the gate's settings are in no key, so a cached artifact has never met this run's."""
    if not hasattr(planned.step, "check_gate"):
        return None
    try:
        planned.step.check_gate(planned.gate, artifact)
    except StepError as exc:
        console.print(f"[red]✗ {planned.name}[/] gate missed")
        return exc
    return None


def _run_or_fail(plan: Plan, planned: PlannedStep, run_dir: Path, overrides: list[str],
                 console: Console) -> tuple[StepOutcome, Optional[str], bool]:
    """Run the step; its outcome, the failure reason (None where it succeeded), and whether Ctrl-C stopped it."""
    started = time.perf_counter()
    interrupted = False
    try:
        return _run_step(plan, planned, run_dir, overrides, console), None, False
    except StepError as exc:
        reason = f"{planned.name}: {exc}"
    except KeyboardInterrupt:  # the staging dir is already gone; record the run and say how to resume
        reason, interrupted = f"{planned.name}: interrupted", True
    except Exception as exc:  # a bug, not bad input: keep the traceback for the log
        log.error("step %s crashed", planned.name, exc_info=True)
        reason = f"{planned.name}: {crash_summary(exc)}"
    seconds = time.perf_counter() - started
    console.print(f"[red]✗ {planned.name}[/] failed after {seconds:.1f}s")
    return StepOutcome(planned.name, planned.key, "failed", round(seconds, 3), None), reason, interrupted


def _run_step(plan: Plan, planned: PlannedStep, run_dir: Path, overrides: list[str],
              console: Console) -> StepOutcome:
    store, name, key = plan.store, planned.name, planned.key
    console.print(f"[bold]▶ {name}[/] {short(key)} ({escape(planned.reason)})")
    lock = store.lock(name, key)
    try:
        lock.acquire(timeout=0.5)
    except Timeout:
        console.print(f"  waiting for another run that is making {name} {short(key)} ...")
        lock.acquire()
    try:
        if store.is_complete(name, key) and name not in plan.resolved.config["force"]:
            console.print(f"[green]✓ {name}[/] made by another run meanwhile: cached")
            return StepOutcome(name, key, "cached", 0.0, str(store.path(name, key)))
        store.clear_staging(name, key)
        # A step writes into its staging dir alone; a write into a Hugging Face cache, or of a failed step's files
        # into the run dir, names that directory itself.
        with filling_cache(store.root):
            seconds, facts, staging = _call_step(plan, planned, run_dir, console)
            try:
                manifest = _manifest(plan, planned, seconds, facts, overrides)
                artifact = store.commit(staging, name, key, manifest, on_wait=lambda: console.print(
                    f"  waiting for the runs reading the old {name} {short(key)} ..."))
            except BaseException:  # e.g. Ctrl-C or a full disk: don't leave a whole artifact's worth in staging
                shutil.rmtree(staging, ignore_errors=True)
                raise
    finally:
        lock.release()
    console.print(f"[green]✓ {name}[/] ran in {seconds:.1f}s")
    return StepOutcome(name, key, "ran", round(seconds, 3), str(artifact))


def _call_step(plan: Plan, planned: PlannedStep, run_dir: Path,
               console: Console) -> tuple[float, dict[str, Any], Path]:
    """Run the step in a fresh staging dir; on any failure (or Ctrl-C) the staging dir goes away,
    after the files the run dir keeps (the metrics of a step that failed after writing them) are copied out."""
    staging = plan.store.new_staging(planned.name, planned.key)
    inputs = {name: plan.artifact(name) for name in planned.step.needs}
    ctx = StepContext(show_progress=_progress_wanted(plan.resolved.config["progress"]),
                      environment=planned.environment, run_dir=run_dir)
    started = time.perf_counter()
    try:
        with contextlib.ExitStack() as claims:  # what the step reads stays while it reads it (mambapipe-cache rm)
            for name, key in planned.inputs.items():
                claims.enter_context(plan.store.reading(name, key, on_wait=lambda name=name, key=key: console.print(
                    f"  waiting for a forced re-run that is replacing {name} {short(key)} ...")))
                if not plan.store.is_complete(name, key):
                    raise StepError(f"{name} {short(key)} was removed after the plan found it (mambapipe-cache rm?); "
                                    "run again to remake it")
            facts = planned.step.run(planned.params, inputs, staging, ctx) or {}
            if interrupts.received():  # a Ctrl-C the step's code dropped (a __del__): its output may be cut short
                raise KeyboardInterrupt
    except BaseException as failure:
        try:
            _publish(staging, run_dir)
        except DiskFullError:  # the reason now (the step's could point to a metrics.json that is not there),
            if not isinstance(failure, KeyboardInterrupt):  # but a Ctrl-C stays one: the run resumes, exit 130
                raise
        finally:  # also where the copy fails (the run dir on the same full disk)
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return time.perf_counter() - started, facts, staging


def _progress_wanted(setting: Optional[bool]) -> bool:
    """The `progress` setting decided: null shows bars only on a terminal."""
    return sys.stderr.isatty() if setting is None else setting


def _manifest(plan: Plan, planned: PlannedStep, seconds: float, facts: dict[str, Any],
              overrides: list[str]) -> dict[str, Any]:
    # `upstream`: what the artifact was made from, so that it can be told what it is once those artifacts are gone
    return {"step": planned.name, "key": planned.key, "version": planned.step.version,
            "params": planned.params, "inputs": planned.inputs, "upstream": upstream_params(plan.steps, planned),
            "environment": planned.environment, "created": utc_now(), "seconds": round(seconds, 3), "facts": facts,
            **git_state(), "overrides": overrides}


def _publish(source_dir: Path, run_dir: Path) -> None:
    for name in RUN_DIR_FILES:
        if (source_dir / name).is_file():
            _write_into_run_dir(run_dir, name, (source_dir / name).read_bytes())


def _write_into_run_dir(run_dir: Path, name: str, data: str | bytes) -> None:
    """Write a file of the run dir whole or not at all (a metrics.json cut short would stop _finish, which reads it
    back, and mislead a sweep summary); a full disk is a DiskFullError naming the run dir."""
    with filling_run_dir(run_dir):
        write_atomic(run_dir / name, data)


@dataclass
class CommandLine:
    """What a run's command line said: its overrides, and the config dirs it added with --config-dir (where a
    recipe of the user's own may live, so a command that repeats the run must name them too); and whether a sweep
    ran it as one of its jobs (with its own command line, which the sweep's finish command repeats)."""
    overrides: list[str]
    config_dirs: list[str]
    sweep_job: bool = False


def command_line_overrides(task: ListConfig) -> list[str]:
    """The command line's overrides (Hydra's hydra.overrides.task) as typed: read item by item, OmegaConf resolves a
    `${...}` in one (`tp_size=${oc.env:NGPUS}`), which the rerun commands should repeat, not its value, and which
    raised for a variable unset before the run could say so in its plan."""
    return OmegaConf.to_container(task, resolve=False)


def command_line_config_dirs(config_sources: Iterable[Any]) -> list[str]:
    """The dirs of Hydra's runtime.config_sources that the command line added (--config-dir)."""
    return [source["path"] for source in config_sources if source["provider"] == "command-line"]


def resume_command(overrides: Sequence[str], run_dir: Path, config_dirs: Sequence[str] = ()) -> str:
    """The command that runs `overrides` again into `run_dir` (finished steps come from the cache). Its arguments are
    redacted (mambapipe.redact), as a sweep's summary.md records it too: a token typed on the command line is ***."""
    arguments = [*config_dir_arguments(config_dirs), *overrides, f"hydra.run.dir={hydra_quoted(str(run_dir))}"]
    return " ".join([program_name(), *(shlex.quote(redact(argument)) for argument in arguments)])


def program_name() -> str:
    """How the user started mambapipe: the console script, or `python -m mambapipe` (also for any other tool)."""
    return "mambapipe" if Path(sys.argv[0]).name == "mambapipe" else "python -m mambapipe"


def config_dir_arguments(config_dirs: Sequence[str]) -> list[str]:
    return [argument for config_dir in config_dirs for argument in ("--config-dir", config_dir)]


def hydra_quoted(value: str) -> str:
    """`value` as Hydra's override grammar reads it back verbatim: quoted unless plain (unquoted, `,` in a
    path would make a sweep and `~` or `é` a parse error)."""
    return value if HYDRA_PLAIN_VALUE.fullmatch(value) else hydra_in_quotes(value)


def hydra_in_quotes(value: str) -> str:
    """The string `value` in quotes, as Hydra's override grammar reads it back verbatim (also where unquoted it
    would read as a number or a bool): `\\"` is a quote, and backslashes before a quote, or before the closing
    one, are doubled."""
    escaped = re.sub(r'(\\*)("|\Z)', lambda m: m[1] * 2 + ("\\" + m[2] if m[2] else ""), value)
    return f'"{escaped}"'


def _finish(console: Console, errors: Console, run_dir: Path, config: Optional[dict[str, Any]],
            outcomes: list[StepOutcome], reason: Optional[str], command: CommandLine, stopped_at_plan: bool,
            interrupted: bool = False, verdict: Optional[dict[str, str]] = None) -> RunResult:
    """Record the run, print its summary on `console` (the results to paste) and, where it failed, the command that
    runs it again and why on `errors`; `config` is the resolved config, None where it could not be resolved. Where
    the reason is a gate's `verdict`, that command changes the gate's setting: as it was, it would fail the same."""
    record = _run_record(outcomes, reason, stopped_at_plan, config["device"] if config else None, verdict)
    try:
        _record(run_dir, record)
    except DiskFullError as exc:
        reason, verdict = _unrecorded(reason, exc), None  # a rerun as it was may then pass: the usual hint
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    print_summary(console, outcomes, metrics, config, record)
    if stopped_at_plan and reason is None:  # plan_only=true: its summary's `skipped` steps are those marked run
        console.print(PLANNED_ONLY)
    console.print(f"run directory: {run_dir}")
    if reason is not None:
        made = {outcome.name for outcome in outcomes if outcome.status == "ran"}
        forced = config["force"] if config else []
        rerun = resume_command(rerun_overrides(command.overrides, forced, made, verdict), run_dir, command.config_dirs)
        hint = gate_hint(verdict) if verdict is not None else _rerun_hint(stopped_at_plan, interrupted)
        if not (interrupted and command.sweep_job):  # a failed job's rerun line is the console's only one
            print_diagnostic(errors, f"{hint}: {escape(rerun)}")
        print_diagnostic(errors, f"[red]FAILED[/] {escape(reason)}")
    return RunResult(outcomes, reason, run_dir, interrupted)


def _run_record(outcomes: list[StepOutcome], reason: Optional[str], stopped_at_plan: bool,
                device: Optional[str], verdict: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """The run dir's run.json. `reason` and `finished` let a sweep summary tell a rerun by hand from the sweep's own
    run of a job; `stopped_at_plan` that no step started, so the statuses are the plan's (cached: there to reuse);
    `device` the config's (None where it could not be resolved), for the machine record; `gate_verdict` the setting
    that changes a missed gate's verdict, where that is the reason, for a sweep summary's rerun line."""
    return {"steps": [asdict(o) for o in outcomes], "reason": reason, "gate_verdict": verdict,
            "stopped_at_plan": stopped_at_plan, "finished": utc_now(), "versions": versions(), **git_state(),
            "machine": machine(device)}


def _record(run_dir: Path, record: dict[str, Any]) -> None:
    _write_into_run_dir(run_dir, "run.json", json.dumps(record, indent=2) + "\n")


def _unrecorded(reason: Optional[str], full: DiskFullError) -> str:
    """The run's reason once its run.json could not be written for a full disk: the reason it had and that, unless
    the reason (the run dir found full before) says it already. A run fine otherwise fails: nothing would say how it
    went once its output has scrolled away."""
    if reason is None:
        return str(full)
    return reason if str(full) in reason else f"{reason}; run.json not written: {full}"


def unforced_where_made(overrides: Sequence[str], forced: Sequence[str], made: set[str]) -> list[str]:
    """The overrides to run again with: a step the run was forced to make (`forced`: the config's `force`, which the
    command line or a recipe set) and `made` is forced no more, so that the rerun takes it from the cache, as the
    hint says finished steps are. The command line's `force` overrides, however written, get the steps still to
    force; where it has none (a recipe's force), one is added."""
    still = [name for name in forced if name not in made]
    if len(still) == len(forced):
        return list(overrides)
    return with_override(overrides, "force", f"[{','.join(still)}]")


def with_override(overrides: Sequence[str], key: str, value: str) -> list[str]:
    """The overrides with `key` set to `value`: in place of the command line's own (`+`/`++` kept), else added."""
    if not any(_sets(override, key) for override in overrides):
        return [*overrides, f"{key}={value}"]
    return [f"{override.partition('=')[0]}={value}" if _sets(override, key) else override for override in overrides]


def _sets(override: str, key: str) -> bool:
    """`key=...`, `++key=...` (a key never holds `=`, and Hydra reads no space around it)."""
    return override.partition("=")[0].lstrip("+") == key


def rerun_overrides(overrides: Sequence[str], forced: Sequence[str], made: set[str],
                    verdict: Optional[dict[str, str]]) -> list[str]:
    """The overrides that run a run (a sweep's job) again into its directory: the steps it was forced to make and
    made are forced no more (unforced_where_made), and where a missed gate's `verdict` (run.json's gate_verdict) is why
    it failed, the setting that changes it is left for the user to fill in (`eval.rouge1_threshold=<lower>`): as it
    was, it would fail the same. No value is made up, and unfilled the CLI refuses it."""
    overrides = unforced_where_made(overrides, forced, made)
    return overrides if verdict is None else with_override(overrides, verdict["key"], f"<{verdict['change']}>")


def gate_hint(verdict: dict[str, str]) -> str:
    """What the command of rerun_overrides is for, where a gate's `verdict` failed the run: the artifact the gate
    refused is in the cache (it ran, or was cached), so the same command gives the same verdict; a new value of that
    setting is checked against it with no new work."""
    return (f"{verdict['step']}'s result is cached: a {verdict['change']} {verdict['key']} is checked against it in "
            "about a second")


def _rerun_hint(stopped_at_plan: bool, interrupted: bool) -> str:
    """What the command that repeats the run is for. Only an interrupted run is sure to resume as it is: a failed
    step (an accuracy gate missed, a damaged engine) fails again until its reason is dealt with, though the steps
    that finished are not redone."""
    if interrupted:
        return "resume (finished steps are cached)"
    return "fix it, then run" if stopped_at_plan else "run again once fixed (finished steps are cached)"
