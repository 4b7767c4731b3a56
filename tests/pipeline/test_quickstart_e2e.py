"""The real quickstart, end to end with the four real steps: download (synthetic) -> convert ->
build (native) -> evaluate (summarize the bundled sample), then cached, then one eval change."""

from __future__ import annotations

import io
import json
import os

import pytest
from rich.console import Console

from mambapipe.evaluate import data
from mambapipe.pipeline.runner import run_recipe


@pytest.mark.slow
def test_quickstart_runs_then_caches_then_reruns_only_evaluate(compose_config, tmp_path, monkeypatch):
    sample = tmp_path / "sample.jsonl"  # a copy of the bundled sample, to edit at the end
    sample.write_bytes(data.sample_path().read_bytes())
    monkeypatch.setattr(data, "sample_path", lambda: sample)
    outputs = {}

    def run(name: str, *overrides: str):
        console = Console(file=io.StringIO(), width=200)
        result = run_recipe(compose_config(*overrides), tmp_path / name, list(overrides), console=console)
        outputs[name] = console.file.getvalue()
        assert not result.failed, outputs[name]
        return result

    first = run("first")
    assert [o.status for o in first.outcomes] == ["ran"] * 4
    metrics = json.loads((first.run_dir / "metrics.json").read_text())
    assert metrics["task"] == "summarize" and metrics["samples"] == 4
    assert {"rouge1", "rouge2", "rougeL", "rougeLsum", "tokens_per_s", "rouge1_low", "rouge1_high"} <= set(metrics)
    assert metrics["protocol"]["sha256"] == data.local_dataset_sha256(sample) and metrics["protocol"]["samples"] == 4
    assert "; 4 articles of sample" in outputs["first"]  # the summary's result column
    predictions = [json.loads(line) for line in (first.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 4 and all(0 < len(p["output_ids"]) <= 16 for p in predictions)

    again = run("again")
    assert [o.status for o in again.outcomes] == ["cached"] * 4
    assert json.loads((again.run_dir / "metrics.json").read_text()) == metrics

    changed = run("changed", "eval.output_len=8")
    assert [o.status for o in changed.outcomes] == ["cached", "cached", "cached", "ran"]

    sample.write_text(sample.read_text().replace("the", "a", 1))  # an edit of the sample evaluates it anew
    edited = run("edited", "eval.output_len=8")
    assert [o.status for o in edited.outcomes] == ["cached", "cached", "cached", "ran"]
    assert "closest cached: dataset_sha256 changed" in outputs["edited"]


@pytest.mark.slow
def test_every_cached_file_is_as_readable_as_the_umask_allows(compose_config, tmp_path):
    """A cache shared between users (one SLURM cluster's) needs every file readable by the others that the umask
    lets read, the weights that safetensors writes through a private temporary file included."""
    previous = os.umask(0o022)
    try:
        result = run_recipe(compose_config(), tmp_path / "run", [], console=Console(file=io.StringIO()))
    finally:
        os.umask(previous)
    assert not result.failed
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert any(p.name == "model.safetensors" for p in files) and any(p.name == "rank0.safetensors" for p in files)
    assert {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files if
            p.stat().st_mode & 0o777 != 0o644} == {}
