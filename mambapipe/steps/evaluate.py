"""Evaluate step: run `eval.task` (summarize with ROUGE, or the speed benchmark) against the built engine.

Writes `metrics.json` and `predictions.jsonl` (summarize only) at the artifact root; the runner copies
them into the run directory. With tp_size > 1 the task runs on every rank under the launcher, whose command the
plan shows, and the ranks' output is also kept in the run directory's `evaluate-ranks.log`.
With `eval.check_accuracy`, a rouge1 at or below `eval.rouge1_threshold` fails the run: the step's gate, which
the runner checks on every run against the evaluation, made now or cached, once its files are in the run
directory. Neither key is in the step's key: a new threshold is checked against the evaluation already made.
"""

from __future__ import annotations

import contextlib
import json
import math
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from mambapipe import hub, interrupts
from mambapipe.backends.base import LimitError, Limits
from mambapipe.evaluate import METRICS_FILE
from mambapipe.evaluate.data import check_first_record, dataset_file, hub_commit, local_dataset_sha256, require_datasets
from mambapipe.evaluate.rouge import require_scorer
from mambapipe.evaluate.scenarios import Scenario, limit_problem, scenario_label, scenarios_from_config
from mambapipe.parallel import launch, launch_command, launcher_problem
from mambapipe.pipeline.disk import filling_run_dir
from mambapipe.pipeline.step import GateMissed, StepContext, StepError

if TYPE_CHECKING:
    from mambapipe.evaluate.task import EvalJob

LAUNCHERS = {"native": "torchrun", "trtllm": "mpirun"}
WORKER = "mambapipe.evaluate.worker"
RANK_JOB_FILE = ".rank_job.json"  # in the step's staging dir, which the plan cannot name: its pid and a nonce
RANKS_LOG = "evaluate-ranks.log"  # in the run dir
# The eval.* keys each task reads, and so the only ones in its key: a benchmark setting must not re-run a
# summarize evaluation, nor the reverse. The build limits are in both for the plan-time checks.
TASK_KEYS = {
    "summarize": ("eval.dataset", "eval.max_ite", "eval.batch_size", "eval.max_input_length", "eval.output_len",
                  "eval.compare_hf"),
    "benchmark": ("eval.scenarios", "eval.warmup", "eval.repeats", "eval.bandwidth_gbps", "eval.compare_hf"),
}
HUB_DATASET_KEYS = ("eval.dataset_hub_id", "eval.dataset_config", "eval.dataset_split")  # eval.dataset=cnn_dailymail
_SUMMARIZE_POSITIVE = ("eval.batch_size", "eval.max_ite", "eval.max_input_length", "eval.output_len")


class EvaluateStep:
    name = "evaluate"
    version = 4  # the accuracy gate's keys left the key (gate_uses): the plan says so of an older evaluation
    uses = ("eval.task", "eval.random_seed", "device", "backend", "tp_size",
            "build.max_batch_size", "build.max_input_len", "build.max_seq_len")
    needs = ("build", "download")
    run_dir_files = (RANKS_LOG,)  # written only by a tp_size > 1 run; removed from a reused run dir
    gate_uses = ("eval.check_accuracy", "eval.rouge1_threshold")

    def extra_uses(self, params: dict[str, Any]) -> tuple[str, ...]:
        """The keys of the chosen task; summarize's hub keys only for the hub."""
        keys = TASK_KEYS[params["eval.task"]]
        if params.get("eval.dataset") == "cnn_dailymail":
            keys += HUB_DATASET_KEYS
        return keys

    def environment(self, params: dict[str, Any]) -> dict[str, Any]:
        """Facts outside the config the metrics depend on: which articles the dataset holds (see
        _dataset_environment) and the GPU model (timings and, in low precision, outputs depend on it)."""
        env = _dataset_environment(params) if params["eval.task"] == "summarize" else {}
        if params["device"] == "cuda":
            env.update(_gpu_environment())
        return env

    def check(self, params: dict[str, Any]) -> None:
        problem = launcher_problem(LAUNCHERS[params["backend"]]) if params["tp_size"] > 1 else None
        if problem:
            raise StepError(problem)
        if params["eval.task"] == "benchmark":
            _check_benchmark(params)
        else:
            _check_summarize(params)

    def check_imports(self, params: dict[str, Any]) -> None:
        """summarize reads its articles with datasets and scores them with rouge-score: an install that cannot import
        them stops the run before its first step, not once the engine has generated every summary."""
        if params["eval.task"] == "summarize":
            require_datasets()
            require_scorer()

    def describe(self, params: dict[str, Any], inputs: dict[str, Path], out_dir: Path) -> list[str]:
        """The command that launches the ranks (tp_size > 1), as the build step shows trtllm-build's."""
        if params["tp_size"] <= 1:
            return []
        command = launch_command(params["tp_size"], WORKER, [], LAUNCHERS[params["backend"]])
        return [f"{shlex.join(command)} <staging dir>/{RANK_JOB_FILE}"]

    def run(self, params: dict[str, Any], inputs: dict[str, Path], out_dir: Path,
            ctx: StepContext) -> dict[str, Any]:
        with interrupts.deferred():  # the tasks bring torch: imported whole or not at all
            from mambapipe.evaluate.task import EvalJob, run_evaluation

        env = ctx.environment  # the dataset commit or file contents pinned at plan time
        job = EvalJob(params, Path(inputs["build"]), Path(inputs["download"]), Path(out_dir), ctx.show_progress,
                      dataset_revision=env.get("dataset_commit"), hub_local_only=_hub_local_only(env),
                      dataset_sha256=env.get("dataset_sha256"))
        tp_size = params["tp_size"]
        if tp_size > 1:
            _run_launched(job, tp_size, ctx.run_dir / RANKS_LOG if ctx.run_dir else None)
        else:
            try:
                run_evaluation(job)
            except LimitError as err:  # e.g. a tokenizer that is not the model's; launched ranks say it in one line too
                raise StepError(f"LimitError: {err}") from None
        return _facts(json.loads((out_dir / METRICS_FILE).read_text()))

    def check_gate(self, gate: dict[str, Any], artifact: Path) -> None:
        """The accuracy gate on the evaluation in `artifact`, however old: the runner asks on every run."""
        if not gate["eval.check_accuracy"]:  # a run without the gate reads nothing more of a cached evaluation
            return
        try:
            metrics = json.loads((artifact / METRICS_FILE).read_text())
        except (OSError, ValueError) as exc:  # damaged in the cache since it was made
            raise StepError(f"eval.check_accuracy cannot read {artifact / METRICS_FILE} ({type(exc).__name__}); "
                            "make the evaluation again with force=[evaluate]") from None
        _accuracy_gate(gate, metrics)


def _check_summarize(params: dict[str, Any]) -> None:
    for key in _SUMMARIZE_POSITIVE:
        if params[key] < 1:
            raise StepError(f"{key} must be >= 1, got {params[key]}")
    _check_summarize_limits(params)
    _check_dataset(params["eval.dataset"])


def _check_summarize_limits(params: dict[str, Any]) -> None:
    """The eval settings against the engine's limits; a limit below 1 is the build step's to name, not a bound."""
    if min(params[key] for key in ("build.max_batch_size", "build.max_input_len", "build.max_seq_len")) < 1:
        return
    batch, max_batch = params["eval.batch_size"], params["build.max_batch_size"]
    if batch > max_batch:
        raise StepError(f"eval.batch_size {batch} > build.max_batch_size {max_batch}; lower one or raise the other")
    length, max_input = params["eval.max_input_length"], params["build.max_input_len"]
    if length > max_input:
        raise StepError(f"eval.max_input_length {length} > build.max_input_len {max_input}; lower one or raise "
                        "the other")
    total, max_seq = length + params["eval.output_len"], params["build.max_seq_len"]
    if total > max_seq:
        raise StepError(f"eval.max_input_length + eval.output_len = {total} > build.max_seq_len {max_seq}; "
                        "raise build.max_seq_len or shorten them")


def _dataset_environment(params: dict[str, Any]) -> dict[str, Any]:
    """What pins the articles beyond eval.dataset's name: the hub dataset's commit (its main branch can
    move), or the contents of a local file or of the bundled sample (a name or path alone would keep serving old
    scores after an edit, as a local model.path would without its fingerprint). The read that hashes a JSON file
    also checks that it is UTF-8 text, so the plan reads it once; a problem found there stops the run as check()'s
    do."""
    dataset = params["eval.dataset"]
    path = dataset_file(dataset)
    if path is None:
        return {"dataset_commit": hub_commit(params["eval.dataset_hub_id"])}
    if path.is_file():  # else check() names what is wrong
        return {"dataset_sha256": local_dataset_sha256(path)}
    return {}


def _gpu_environment() -> dict[str, Any]:
    """The GPU's name, where torch sees one (else the runner reports it): torch is imported already, as resolving
    device=cuda asked it for a GPU."""
    import torch

    return {"gpu": torch.cuda.get_device_name()} if torch.cuda.is_available() else {}


def _hub_local_only(env: dict[str, Any]) -> Optional[str]:
    """Why the ranks must not ask the hub for a pinned dataset (offline, or found unreachable at plan time: datasets
    would retry for ~20 s before reading its cache), or None. The ranks are other processes, so the job carries it."""
    return hub.offline_why() if "dataset_commit" in env and hub.use_local_files_only() else None


def _local_dataset(dataset: str) -> Optional[Path]:
    """The file eval.dataset names, or None for the bundled sample and the hub's cnn_dailymail."""
    return None if dataset in ("sample", "cnn_dailymail") else Path(dataset).expanduser()


def _check_dataset(dataset: str) -> None:
    path = _local_dataset(dataset)
    if path is not None:
        check_first_record(path, dataset)


def _check_benchmark(params: dict[str, Any]) -> None:
    if params["eval.compare_hf"]:  # refused rather than ignored: the metrics would claim no comparison ran
        raise StepError("eval.compare_hf=true compares summaries with HF transformers' (eval.task=summarize); the "
                        "benchmark times the engine alone: set eval.compare_hf=false")
    if params["eval.repeats"] < 1:
        raise StepError(f"eval.repeats must be >= 1, got {params['eval.repeats']}")
    if params["eval.warmup"] < 0:
        raise StepError(f"eval.warmup must be >= 0, got {params['eval.warmup']}")
    bandwidth = params["eval.bandwidth_gbps"]
    if bandwidth is not None and not (math.isfinite(bandwidth) and bandwidth > 0):
        raise StepError(f"eval.bandwidth_gbps must be a number > 0 (GB/s), got {bandwidth}; or leave it null to use "
                        "the H200 figure or measure the device")
    raw = params["eval.scenarios"] or []
    _check_scenario_lengths(raw)
    _check_some_scenario_fits(scenarios_from_config(raw), params)


def _check_scenario_lengths(scenarios: list[Any]) -> None:
    for i, scenario in enumerate(scenarios):
        for key in ("batch", "input_len", "output_len"):
            if int(scenario[key]) < 1:
                raise StepError(f"eval.scenarios[{i}].{key} must be >= 1, got {scenario[key]}")


def _check_some_scenario_fits(scenarios: list[Scenario], params: dict[str, Any]) -> None:
    """A benchmark whose every scenario the engine refuses would 'succeed' with nothing measured. Scenarios
    that do not fit beside others that do are kept, as `skipped` rows."""
    limits = Limits(params["build.max_batch_size"], params["build.max_input_len"], params["build.max_seq_len"])
    problems = [limit_problem(limits, s) for s in scenarios]
    if all(problems):
        reasons = "; ".join(f"{scenario_label(s)}: {p}" for s, p in zip(scenarios, problems))
        raise StepError(f"no eval.scenarios fit the engine's build limits ({reasons}); or give eval.scenarios "
                        "within them")


def _run_launched(job: EvalJob, tp_size: int, log_file: Optional[Path]) -> None:
    """Every rank runs worker.py on the same job file; rank 0 writes the outputs into out_dir."""
    from mambapipe.evaluate.worker import write_job

    # In the staging dir rather than /tmp: a killed run's copy goes with the rest of its leftovers.
    job_file = job.out_dir / RANK_JOB_FILE
    write_job(job, job_file)
    # The ranks' output is written into the run dir as it comes; what they write themselves, each names (the worker).
    logging_ranks = filling_run_dir(log_file.parent) if log_file else contextlib.nullcontext()
    try:
        with logging_ranks:
            launch(tp_size, WORKER, [str(job_file)], launcher=LAUNCHERS[job.params["backend"]], log_file=log_file)
    finally:
        job_file.unlink()
    if not (job.out_dir / METRICS_FILE).is_file():
        where = log_file or "standard error"
        raise StepError(f"the {tp_size} evaluation ranks exited without writing {METRICS_FILE}; see their output in "
                        f"{where}")


def _accuracy_gate(gate: dict[str, Any], metrics: dict[str, Any]) -> None:
    """summarize.py's --check_accuracy, which check_gate found on: rouge1 must be strictly above the threshold."""
    if metrics["task"] != "summarize":
        return
    rouge1, threshold = metrics["rouge1"], gate["eval.rouge1_threshold"]
    if rouge1 <= threshold:
        raise GateMissed(f"rouge1 {rouge1:.2f} <= threshold {threshold:.2f} (eval.check_accuracy); metrics.json "
                         "is in the run directory; compare with eval.compare_hf=true or lower eval.rouge1_threshold",
                         key="eval.rouge1_threshold", change="lower")


def _facts(metrics: dict[str, Any]) -> dict[str, Any]:
    if metrics["task"] == "benchmark":
        return {"task": "benchmark", "scenarios": len(metrics["rows"]),
                "skipped": sum(1 for r in metrics["rows"] if r.get("skipped"))}
    return {"task": "summarize", "samples": metrics["samples"], "rouge1": metrics["rouge1"]}


STEP = EvaluateStep()
