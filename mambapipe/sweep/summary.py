"""One row per sweep job, read back from its run directory alone, so a sweep's summary can be rebuilt
at any time: `.hydra/overrides.yaml` (what the job changed), `config.yaml` (the resolved config the
runner wrote), `run.json` (step statuses, failure reason), `metrics.json` (evaluate's scores) and
`sweep_job.json` (exit code and failure reason), unless run.json is newer (see record.py).
A damaged file fails its own job, named in the reason, not the summary. Job dirs an earlier sweep into the
same directory left behind are left out (see record.py), and counted in the summary. Jobs the sweep never
started (it was interrupted) have no run dir: they come from the sweep's multirun.yaml (see expected.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml  # omegaconf's YAML parser, whose errors OmegaConf lets through
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mambapipe.config import STEP_NAMES
from mambapipe.evaluate.protocol import dataset_label
from mambapipe.evaluate.scenarios import Scenario, scenario_label
from mambapipe.pipeline.report import arch_description, step_status
from mambapipe.pipeline.step import first_line
from mambapipe.sweep.expected import ExpectedJob, SweepConfig
from mambapipe.sweep.record import (
    JOB_RECORD,
    NOT_STARTED,
    RUN_JSON_STAMP,
    STDOUT_READER_GONE,
    SWEEP_CONFIG,
    SWEEP_STAMP,
    read_job_record,
)

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
ROUGE1_INTERVAL = ("rouge1_low", "rouge1_high")  # the bootstrap's 95% interval, where metrics.json has it
OVERRIDES_FILE = ".hydra/overrides.yaml"
PARSE_ERRORS = (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException)  # ValueError: JSON, UTF-8
OK, FAILED, PLANNED, NOT_RUN = "ok", "failed", "planned", "not run"  # planned: plan_only=true, nothing ran
NOT_RUN_REASON = "not started: the sweep stopped before this job"
NOT_RUN_UNREAD = "not started: the sweep stopped launching jobs once standard output's reader had gone (`| head`?)"
ENVIRONMENT_KEYS = ("versions", "git_commit", "git_dirty", "machine", "finished")  # of run.json: what ran where


@dataclass
class JobRow:
    job: str  # the run dir relative to the sweep dir (Hydra's job number by default)
    run_dir: Optional[Path]  # None for a job not run, where hydra.sweep.subdir is not the job number
    overrides: list[str]
    status: str  # OK | FAILED | PLANNED | NOT_RUN
    reason: Optional[str]
    steps: dict[str, str]  # step name -> cached | ran | failed | skipped | refused | not run | "" (not recorded)
    config: dict[str, Any]  # model, arch, dtype, tp_size, backend, device, max_batch_size, eval_batch_size, task
    metrics: dict[str, Any]  # dataset, samples, rouge*, tokens_per_s, decode_ms_per_step, ttft_ms, throughput_of
    throughput: list[tuple[int, float]] = field(default_factory=list)  # (batch, tokens/s) points
    forced: list[str] = field(default_factory=list)  # config.yaml's force: steps made again even when cached
    unreadable: list[str] = field(default_factory=list)  # damaged files, relative to the run dir
    environment: dict[str, Any] = field(default_factory=dict)  # run.json's versions, git, machine, finished
    gates_missed: list[str] = field(default_factory=list)  # steps whose artifact failed their gate (step_cells)
    gate_verdict: Optional[dict[str, str]] = None  # run.json's: the setting a rerun changes (runner.gate_hint)

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    @property
    def not_run(self) -> bool:
        return self.status == NOT_RUN

    @property
    def succeeded(self) -> bool:
        """Did what it was asked: ran, or with plan_only=true printed a plan without problems."""
        return self.status in (OK, PLANNED)


@dataclass
class SweepJobDirs:
    current: list[Path]  # the job dirs of the sweep that last ran in the directory, in job order
    earlier: list[Path]  # those an earlier sweep into the same directory left, in job order
    not_started: list[ExpectedJob]  # the sweep's jobs without a dir of this sweep (unknown: none listed)
    stdout_reader_gone: bool = False  # a job of this sweep ended with it: the sweep launched no job after it


@dataclass
class SweepRows:
    rows: list[JobRow]  # the jobs of the sweep that last ran in the directory: run dirs, then jobs not run
    earlier: list[Path]  # job dirs an earlier sweep into the same directory left
    sweep_config: SweepConfig  # its multirun.yaml, as read for the rows


def find_run_dirs(sweep_dir: Path) -> list[Path]:
    """Every job directory under the sweep dir (any `hydra.sweep.subdir` layout), in job order. Never the
    sweep dir itself: one with its own overrides is a single run's directory, not a job of a sweep."""
    sweep_dir = Path(sweep_dir)
    dirs = [p.parent.parent for p in sweep_dir.rglob(OVERRIDES_FILE) if p.parent.parent != sweep_dir]
    return sorted(dirs, key=lambda d: _job_sort_key(d.relative_to(sweep_dir)))


def holds_single_runs_only(directory: Path) -> bool:
    """Whether `directory` has run dirs but nothing of a sweep: no multirun.yaml (Hydra's basic sweeper writes it
    before any job) and no sweep_job.json in any run dir (a sweep's job writes it first, whatever the sweeper). So
    are the outputs/<date>/ of plain `python -m mambapipe` runs: a summary would take them for one sweep's jobs."""
    run_dirs = find_run_dirs(directory)
    return (bool(run_dirs) and not (Path(directory) / SWEEP_CONFIG).is_file()
            and not any((run_dir / JOB_RECORD).is_file() for run_dir in run_dirs))


def find_sweep_jobs(sweep_dir: Path, sweep_config: SweepConfig) -> SweepJobDirs:
    """The job dirs, split by the sweep they ran in, and the sweep's jobs that have none. Only a job whose record
    names another multirun.yaml is known to be stale; one that names none (an older mambapipe, a damaged record)
    is counted as ever."""
    current_sweep = sweep_config.digest
    jobs = SweepJobDirs(current=[], earlier=[], not_started=[])
    started: set[int] = set()
    for run_dir in find_run_dirs(sweep_dir):
        record = job_record(run_dir)
        recorded_sweep = record.get(SWEEP_STAMP)
        stale = None not in (current_sweep, recorded_sweep) and recorded_sweep != current_sweep
        (jobs.earlier if stale else jobs.current).append(run_dir)
        if not stale:
            started.add(_job_num(record, run_dir.relative_to(sweep_dir)))
            jobs.stdout_reader_gone |= record.get(STDOUT_READER_GONE) is True
    jobs.not_started = [job for job in sweep_config.jobs() or [] if job.num not in started]
    return jobs


def job_record(run_dir: Path) -> dict[str, Any]:
    """The job's sweep_job.json as read_job_record reads it, but {} also where that raises or returns no object:
    a damaged record (read_row reports it) must not stop the summary."""
    try:
        record = read_job_record(run_dir)
    except PARSE_ERRORS:
        return {}
    return record if isinstance(record, dict) else {}


def _job_num(record: dict[str, Any], relative: Path) -> Optional[int]:
    """The job's number: recorded by the sweep; for a job run by hand into its dir, the dir's name."""
    if isinstance(record.get("job_num"), int):
        return record["job_num"]
    return int(relative.name) if str(relative).isdigit() else None


def _job_sort_key(relative: Path) -> tuple:
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in relative.parts)


def collect_rows(sweep_dir: Path, sweep_config: Optional[SweepConfig] = None) -> SweepRows:
    """The rows of the sweep that last ran in the directory, and the job dirs left out; `sweep_config`: its
    multirun.yaml where the caller has read it already."""
    sweep_dir = Path(sweep_dir)
    sweep_config = SweepConfig.read(sweep_dir) if sweep_config is None else sweep_config
    jobs = find_sweep_jobs(sweep_dir, sweep_config)
    rows = [read_row(sweep_dir, run_dir) for run_dir in jobs.current]
    why = NOT_RUN_UNREAD if jobs.stdout_reader_gone else NOT_RUN_REASON
    return SweepRows(rows + [not_run_row(sweep_dir, job, why) for job in jobs.not_started], jobs.earlier,
                     sweep_config)


def not_run_row(sweep_dir: Path, job: ExpectedJob, reason: str) -> JobRow:
    label = str(job.run_dir.relative_to(sweep_dir)) if job.run_dir else f"#{job.num}"
    return JobRow(job=label, run_dir=job.run_dir, overrides=job.overrides, status=NOT_RUN, reason=reason,
                  steps={name: "" for name in STEP_NAMES}, config=_config_facts({}), metrics=_metric_facts({}))


def _parse_yaml(text: str) -> Any:
    return OmegaConf.to_container(OmegaConf.create(text))


@dataclass
class _RunDirFiles:
    """Reads a job's files; a damaged one reads as absent and is noted, so one bad job spoils no others."""

    run_dir: Path
    problems: dict[str, str] = field(default_factory=dict)  # file -> what is wrong with it

    def read(self, name: str, parse: Callable[[str], Any], kind: type) -> Any:
        """The parsed file, None when absent or damaged."""
        path = self.run_dir / name
        if not path.is_file():
            return None
        try:
            text = path.read_text()
            if not text.strip():  # checked first: YAML would read an emptied config.yaml as {}
                return self._damaged(name, "empty file")
            value = parse(text)
        except PARSE_ERRORS as exc:
            return self._damaged(name, f"{type(exc).__name__}: {first_line(exc)}")
        if not isinstance(value, kind):
            return self._damaged(name, f"a {type(value).__name__} where a {kind.__name__} belongs")
        return value

    def _damaged(self, name: str, problem: str) -> None:
        self.problems[name] = problem

    def reason(self) -> str:
        return "; ".join(f"unreadable {name} ({problem})" for name, problem in self.problems.items())


def read_row(sweep_dir: Path, run_dir: Path) -> JobRow:
    files = _RunDirFiles(run_dir)
    overrides = files.read(OVERRIDES_FILE, _parse_yaml, list) or []
    config = files.read("config.yaml", _parse_yaml, dict) or {}
    run = files.read("run.json", json.loads, dict) or {}
    metrics = files.read("metrics.json", json.loads, dict) or {}
    record = files.read(JOB_RECORD, json.loads, dict) or {}
    steps = _step_cells(run)
    # A damaged file leaves the outcome unknown: the job cannot count as ok.
    status, reason = (FAILED, files.reason()) if files.problems else _status(run, steps, record)
    return JobRow(job=str(run_dir.relative_to(sweep_dir)), run_dir=run_dir, overrides=list(overrides),
                  status=status, reason=reason, steps={name: steps.get(name, "") for name in STEP_NAMES},
                  config=_config_facts(config), metrics=_metric_facts(metrics),
                  throughput=_throughput(metrics, config), forced=_forced(config), unreadable=list(files.problems),
                  environment={key: run[key] for key in ENVIRONMENT_KEYS if key in run},
                  gates_missed=[step["name"] for step in run.get("steps", []) if step.get("gate_missed")],
                  gate_verdict=_gate_verdict(run))


def _step_cells(run: dict) -> dict[str, str]:
    """Each step's status in run.json; for a run that stopped at its plan, what became of the step instead:
    `refused` (a problem in the plan names it) or `not run`. The plan's cached or skipped would read as a run's."""
    recorded = {s["name"]: s["status"] for s in run.get("steps", [])}
    if run.get("stopped_at_plan"):
        return {name: "refused" if status == "failed" else "not run" for name, status in recorded.items()}
    return recorded


def _gate_verdict(run: dict) -> Optional[dict[str, str]]:
    """run.json's gate_verdict where it is whole (a rerun line is made of it), else None: the usual rerun line."""
    verdict = run.get("gate_verdict")
    whole = isinstance(verdict, dict) and all(isinstance(verdict.get(key), str) for key in ("step", "key", "change"))
    return verdict if whole else None


def step_cells(row: JobRow) -> dict[str, str]:
    """Each step's status as the tables show it, `cached, gate missed` where its artifact failed its gate. Apart in
    the row, as what reads `steps` (a cached evaluation's speeds, the steps a rerun need not force) asks where the
    artifact came from."""
    return {name: step_status(status, name in row.gates_missed) for name, status in row.steps.items()}


def _status(run: dict, steps: dict[str, str], record: dict) -> tuple[str, Optional[str]]:
    if _rerun_since(record, run):  # the record tells of an earlier run of the job: run.json has the outcome
        record = {}
    if record.get(NOT_STARTED) is True:  # it found standard output's reader gone before starting its child
        return NOT_RUN, record.get("reason") or NOT_RUN_UNREAD
    if record.get("exit_code") not in (None, 0):
        return FAILED, record.get("reason") or f"exit code {record['exit_code']}"
    reason = record.get("reason") or run.get("reason")
    if "failed" in steps.values() or run.get("reason"):
        return FAILED, reason or "a step failed (see the job's log)"
    if not run:
        return FAILED, reason or "no run.json: the job did not finish (killed, or still running)"
    if run.get("stopped_at_plan"):  # with no problem to stop it: plan_only=true
        return PLANNED, None
    return OK, None


def _rerun_since(record: dict, run: dict) -> bool:
    """Whether run.json was written after the record: by a run the sweep did not record (a rerun by hand).
    A run.json without a stamp predates them: the record stands, as it always did."""
    return run.get("finished") is not None and run["finished"] != record.get(RUN_JSON_STAMP)


def _forced(config: dict) -> list[str]:
    forced = config.get("force")
    return [str(name) for name in forced] if isinstance(forced, list) else []


def _config_facts(config: dict) -> dict[str, Any]:
    model, build, evaluate = config.get("model") or {}, config.get("build") or {}, config.get("eval") or {}
    return {"model": model.get("name"), "arch": arch_description(model) or None, "dtype": config.get("dtype"),
            "tp_size": config.get("tp_size"),
            "backend": config.get("backend"), "device": config.get("device"),
            "max_batch_size": build.get("max_batch_size"), "eval_batch_size": evaluate.get("batch_size"),
            "task": evaluate.get("task")}


def _best_benchmark_row(metrics: dict) -> dict:
    rows = [r for r in metrics.get("rows", []) if r.get("tokens_per_s") is not None]
    return max(rows, key=lambda r: r["tokens_per_s"], default={})


def _metric_facts(metrics: dict) -> dict[str, Any]:
    """Headline numbers; for the summarize task, with the articles they are of (their dataset, as the run summary
    names it, and count); for the benchmark task, those of its fastest scenario (its prefill as the time to first
    token), which `throughput_of` names as the benchmark table does (`B=64 100/100`)."""
    benchmark = metrics.get("task") == "benchmark"
    source = _best_benchmark_row(metrics) if benchmark else metrics
    facts = {"dataset": dataset_label(metrics), "samples": None if benchmark else metrics.get("samples")}
    facts.update({key: metrics.get(key) for key in (*ROUGE_KEYS, *ROUGE1_INTERVAL)})
    facts.update({key: source.get(key) for key in ("tokens_per_s", "decode_ms_per_step")})
    facts["ttft_ms"] = source.get("prefill_ms" if benchmark else "ttft_ms")
    if benchmark:
        scenario = Scenario(source.get("batch"), source.get("input_len"), source.get("output_len"))
        facts["throughput_of"] = scenario_label(scenario) if source else None
    else:
        facts["throughput_of"] = metrics.get("task")  # SUMMARIZE_TASK, by which the tables tell such a row
    return facts


def _throughput(metrics: dict, config: dict) -> list[tuple[int, float]]:
    """(batch size, tokens/s): every benchmark scenario, or the summarize run at eval.batch_size."""
    if metrics.get("task") == "benchmark":
        return [(int(r["batch"]), float(r["tokens_per_s"])) for r in metrics.get("rows", [])
                if r.get("tokens_per_s") is not None]
    batch = (config.get("eval") or {}).get("batch_size")
    if metrics.get("tokens_per_s") is None or batch is None:
        return []
    return [(int(batch), float(metrics["tokens_per_s"]))]


def varying_overrides(rows: list[JobRow]) -> set[str]:
    """Override keys whose value differs between jobs: what tells the jobs apart."""
    values: dict[str, set[str]] = {}
    for row in rows:
        for override in row.overrides:
            key, _, value = override.partition("=")
            values.setdefault(key, set()).add(value)
    key_sets = [{o.partition("=")[0] for o in row.overrides} for row in rows]
    return {key for key, seen in values.items() if len(seen) > 1 or any(key not in ks for ks in key_sets)}


def job_label(row: JobRow, keys: set[str]) -> str:
    """`dtype=bfloat16 build.max_batch_size=8`: the job's overrides that differ across the sweep."""
    shown = [o for o in row.overrides if o.partition("=")[0] in keys]
    return " ".join(shown) or " ".join(row.overrides) or row.job
