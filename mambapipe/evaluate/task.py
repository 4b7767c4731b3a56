"""Run `eval.task` against an engine and write `metrics.json` / `predictions.jsonl`.

The same code runs in-process (tp_size 1) and on every rank under the launcher (worker.py): every rank
drives the engine identically, and only rank 0 scores, writes files and prints the report.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from mambapipe.backends import get_backend
from mambapipe.backends.base import Generator
from mambapipe.evaluate import METRICS_FILE, benchmark, summarize
from mambapipe.evaluate.data import load_articles
from mambapipe.evaluate.floor import device_bandwidth
from mambapipe.evaluate.hf_reference import HFGenerator, hf_reference_problem, quiet_transformers
from mambapipe.evaluate.prompts import FIX_LOCAL_TOKENIZER, REDOWNLOAD, TokenizerBundle, load_tokenizer
from mambapipe.evaluate.protocol import summarize_protocol
from mambapipe.evaluate.report import print_report
from mambapipe.evaluate.rouge import rouge_scores
from mambapipe.evaluate.scenarios import scenarios_from_config
from mambapipe.peak_memory import peak_memory_meaning, reset_peak_memory
from mambapipe.pipeline.store import MANIFEST, read_manifest, write_atomic

log = logging.getLogger(__name__)
PREDICTIONS_FILE = "predictions.jsonl"
Outputs = tuple[Optional[dict[str, Any]], Optional[list[dict[str, Any]]]]
HUB_ARGUMENTS = {"hub_id": "eval.dataset_hub_id", "hub_config": "eval.dataset_config", "split": "eval.dataset_split"}


@dataclass(frozen=True)
class EvalJob:
    """What one evaluation needs: resolved params plus the upstream artifact directories."""
    params: dict[str, Any]
    engine_dir: Path
    download_dir: Path
    out_dir: Path
    show_progress: bool = True
    dataset_revision: Optional[str] = None  # the hub dataset's commit, pinned at plan time
    hub_local_only: Optional[str] = None  # why the hub dataset is read from the local cache only, or None
    dataset_sha256: Optional[str] = None  # a local dataset file's contents, hashed at plan time


def run_evaluation(job: EvalJob, rank: int = 0) -> Optional[dict[str, Any]]:
    """Run the task; on rank 0 write metrics.json (+ predictions.jsonl) and return the metrics."""
    show = job.show_progress and rank == 0
    task = _benchmark if job.params["eval.task"] == "benchmark" else _summarize
    device = job.params["device"]
    # Every run the task measures resets the peak where it starts; this reset, before any of them, learns whether
    # they can. CUDA's always can, and is left alone here so that no device is set up before the engine's.
    resettable = device.startswith("cuda") or reset_peak_memory(device)
    metrics, predictions = task(job, rank, show)
    if rank != 0 or metrics is None:
        return None
    metrics.update(backend=job.params["backend"], device=device, tp_size=job.params["tp_size"],
                   peak_memory=peak_memory_meaning(device, resettable))
    write_outputs(job.out_dir, metrics, predictions)
    print_report(metrics)
    return metrics


@contextmanager
def loaded_engine(job: EvalJob) -> Iterator[Generator]:
    generator = get_backend(job.params["backend"]).load(job.engine_dir, job.params["device"])
    try:
        yield generator
    finally:
        generator.close()


def runtime_path(generator: Generator) -> dict[str, Any]:
    """Which computation produced the results (native: kernels, cuda_graphs, ssm_state_dtype), so two
    metrics files say whether they are comparable. Backends that choose no such
    path (trtllm: TensorRT-LLM picks its own) report nothing."""
    return dict(getattr(generator, "runtime_path", {}))


def _summarize(job: EvalJob, rank: int, show: bool) -> Outputs:
    settings = summarize.SummarizeSettings(job.params["eval.batch_size"], job.params["eval.max_ite"],
                                           job.params["eval.max_input_length"], job.params["eval.output_len"])
    bundle = load_tokenizer(job.download_dir / "tokenizer", _tokenizer_fix(job.download_dir))
    articles = load_articles(job.params["eval.dataset"], **_hub_source(job), seed=job.params["eval.random_seed"],
                             revision=job.dataset_revision, local_only=job.hub_local_only, sha256=job.dataset_sha256,
                             show_progress=show)
    batches = summarize.prepare_samples(articles, bundle, settings)
    asked = settings.max_ite * settings.batch_size
    if rank == 0 and len(articles) < asked:  # metrics.json's `samples` would be the only other trace of it
        log.warning("eval.max_ite x eval.batch_size asks for %d articles and the dataset holds %d: scoring those %d",
                    asked, len(articles), len(articles))
    with loaded_engine(job) as generator:
        run = summarize.generate_batches(generator, batches, settings.output_len, bundle.eos_id,
                                         job.params["backend"], show)
        dtype, path = generator.dtype, runtime_path(generator)
    if rank != 0:
        return None, None
    samples = [s for batch in batches for s in batch]
    texts = summarize.decode_outputs(bundle, run.output_ids)
    metrics = {**summarize.summarize_metrics(samples, texts, run), "dataset": job.params["eval.dataset"],
               "dtype": dtype, **path,
               "protocol": summarize_protocol(job.params, len(samples), dtype, job.dataset_revision,
                                              job.dataset_sha256)}
    if job.params["eval.compare_hf"]:
        metrics.update(_compare_hf(job, bundle, batches, run, dtype, show))
    return metrics, summarize.prediction_records(samples, texts, run)


def _tokenizer_fix(download_dir: Path) -> str:
    """How to mend tokenizer files that do not load: a local source's are the user's own, which downloading again
    would only link again."""
    facts = (read_manifest(download_dir / MANIFEST) or {}).get("facts") or {}
    return FIX_LOCAL_TOKENIZER if facts.get("source") == "local" else REDOWNLOAD


def _hub_source(job: EvalJob) -> dict[str, str]:
    """load_articles' hub arguments; the evaluate step selects their keys only for eval.dataset=cnn_dailymail."""
    return {arg: job.params[key] for arg, key in HUB_ARGUMENTS.items() if key in job.params}


def _compare_hf(job: EvalJob, bundle: TokenizerBundle, batches: list[list[summarize.Sample]],
                engine_run: summarize.GenerationRun, dtype: str, show: bool) -> dict[str, Any]:
    """summarize.py's --test_hf: the same prompts through transformers, scored the same way. It runs
    after the engine is closed, so the two never hold device memory at once."""
    model_dir = job.download_dir / "model"
    problem = hf_reference_problem(model_dir)
    if problem is not None:
        log.warning("eval.compare_hf skipped: %s", problem)
        return {"hf": {"skipped": problem}}
    with quiet_transformers(show):
        hf = HFGenerator(model_dir, dtype, job.params["device"])
        try:
            run = summarize.generate_batches(hf, batches, job.params["eval.output_len"], bundle.eos_id, "HF", show)
        finally:
            hf.close()
    texts = summarize.decode_outputs(bundle, run.output_ids)
    references = [s.reference for batch in batches for s in batch]
    return {"hf": {**rouge_scores(texts, references), "samples": len(references), "output_tokens": run.output_tokens,
                   **run.speed()},
            "hf_token_agreement": summarize.token_agreement(engine_run.output_ids, run.output_ids),
            "hf_identical_samples": sum(a == b for a, b in zip(engine_run.output_ids, run.output_ids))}


def _benchmark(job: EvalJob, rank: int, show: bool) -> Outputs:
    scenarios = scenarios_from_config(job.params["eval.scenarios"])
    bytes_per_s, source = device_bandwidth(job.params["device"], job.params["eval.bandwidth_gbps"])
    with loaded_engine(job) as generator:
        rows = benchmark.run_benchmark(generator, scenarios, warmup=job.params["eval.warmup"],
                                       repeats=job.params["eval.repeats"], seed=job.params["eval.random_seed"],
                                       tp_size=job.params["tp_size"], bytes_per_s=bytes_per_s, show_progress=show)
        dtype, path = generator.dtype, runtime_path(generator)
    if rank != 0:
        return None, None
    return {"task": "benchmark", "rows": rows, "dtype": dtype, **path, "bandwidth_bytes_per_s": bytes_per_s,
            "bandwidth_source": source, "statistic": f"median of {job.params['eval.repeats']} runs after "
                                                     f"{job.params['eval.warmup']} warm-up"}, None


def write_outputs(out_dir: Path, metrics: dict[str, Any], predictions: Optional[list[dict[str, Any]]]) -> None:
    """Each file whole or not at all, metrics.json last: a write the disk cut short leaves none of them half-written
    for the runner to copy into the run dir with a failed step's files (a metrics.json there is read back)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if predictions is not None:
        write_atomic(out_dir / PREDICTIONS_FILE,
                     "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in predictions))
    write_atomic(out_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
