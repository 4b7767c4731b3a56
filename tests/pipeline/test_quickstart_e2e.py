"""The real quickstart, end to end with the four real steps: download (synthetic) -> convert ->
build (native) -> evaluate (summarize the bundled sample), then cached, then one eval change."""

from __future__ import annotations

import io
import json
import time

import pytest
from rich.console import Console

from mambapipe.pipeline.runner import run_recipe


@pytest.mark.slow
def test_quickstart_runs_then_caches_then_reruns_only_evaluate(compose_config, tmp_path):
    def run(name: str, *overrides: str):
        console = Console(file=io.StringIO(), width=200)
        started = time.perf_counter()
        result = run_recipe(compose_config(*overrides), tmp_path / name, list(overrides), console=console)
        assert not result.failed, console.file.getvalue()
        return result, time.perf_counter() - started

    first, _ = run("first")
    assert [o.status for o in first.outcomes] == ["ran"] * 4
    metrics = json.loads((first.run_dir / "metrics.json").read_text())
    assert metrics["task"] == "summarize" and metrics["samples"] == 4
    assert {"rouge1", "rouge2", "rougeL", "rougeLsum", "tokens_per_s"} <= set(metrics)
    predictions = [json.loads(line) for line in (first.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 4 and all(0 < len(p["output_ids"]) <= 16 for p in predictions)

    again, seconds = run("again")
    assert [o.status for o in again.outcomes] == ["cached"] * 4
    assert seconds < 5.0
    assert json.loads((again.run_dir / "metrics.json").read_text()) == metrics

    changed, _ = run("changed", "eval.output_len=8")
    assert [o.status for o in changed.outcomes] == ["cached", "cached", "cached", "ran"]
