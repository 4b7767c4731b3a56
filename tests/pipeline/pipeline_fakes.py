"""Small stand-in steps for testing the generic runner: same names, `uses` and `needs` as the real
steps (evaluate's task-dependent keys too), cheap work, and a journal file that records every real
execution (across processes)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mambapipe.pipeline.step import StepContext, StepError
from mambapipe.steps.evaluate import STEP as EVALUATE

USES = {
    "download": ("model",),
    "convert": ("dtype", "tp_size", "model.arch"),
    "build": ("dtype", "tp_size", "backend", "device", "build.max_batch_size", "build.max_input_len",
              "build.max_seq_len"),
    "evaluate": EVALUATE.uses,
}
NEEDS = {"download": (), "convert": ("download",), "build": ("convert",), "evaluate": ("build", "download")}


class FakeStep:
    version = 1

    def __init__(self, name: str, journal: Path, behaviour: str = ""):
        self.name, self.uses, self.needs = name, USES[name], NEEDS[name]
        self.journal, self.behaviour = journal, behaviour

    def extra_uses(self, params: dict[str, Any]) -> tuple[str, ...]:
        # evaluate's keys depend on eval.task as the real step's do, so the cache tests see the same key split
        return EVALUATE.extra_uses(params) if self.name == "evaluate" else ()

    def check(self, params: dict[str, Any]) -> None:
        if self.behaviour == "bad-config":
            raise StepError(f"{self.name} refuses this config: fix it")

    def run(self, params: dict[str, Any], inputs: dict[str, Path], out_dir: Path, ctx: StepContext) -> dict[str, Any]:
        with open(self.journal, "a") as f:  # O_APPEND: safe across processes for short lines
            f.write(f"{self.name}\n")
        for upstream in inputs.values():
            assert (upstream / "manifest.json").is_file(), f"{upstream} is not complete"
        (out_dir / "payload.json").write_text(json.dumps({"params": params}, default=str))
        if self.name == "evaluate":
            (out_dir / "metrics.json").write_text(json.dumps({"task": "summarize", "rouge1": 1.5, "tokens_per_s": 9.0}))
            (out_dir / "predictions.jsonl").write_text('{"id": "a"}\n')
        if self.behaviour.startswith("sleep:"):
            time.sleep(float(self.behaviour.split(":")[1]))
        if self.behaviour == "fail":
            raise StepError(f"{self.name} cannot do this: a one-line reason")
        if self.behaviour == "crash":
            raise RuntimeError("something broke\nsecond line")
        return {"fake": True}


def fake_steps(journal: Path, **behaviour: str) -> list[FakeStep]:
    return [FakeStep(name, journal, behaviour.get(name, "")) for name in USES]


def journal_lines(journal: Path) -> list[str]:
    return journal.read_text().split() if journal.exists() else []
