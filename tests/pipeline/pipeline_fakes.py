"""Small stand-in steps for testing the generic runner: the real steps' names, `uses`, `extra_uses`, `normalize`
and `needs` (so the cache tests see the real key split) and their gates, cheap work, and a journal file that records
every real execution (across processes)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mambapipe.pipeline.step import Step, StepContext, StepError
from mambapipe.pipeline.store import ArtifactStore
from mambapipe.steps import load_steps

REAL_STEPS = {step.name: step for step in load_steps()}


class FakeStep:
    version = 1

    def __init__(self, real: Step, journal: Path, behaviour: str = ""):
        self.real, self.name, self.uses, self.needs = real, real.name, real.uses, real.needs
        self.run_dir_files = getattr(real, "run_dir_files", ())
        self.gate_uses = getattr(real, "gate_uses", ())
        self.journal, self.behaviour = journal, behaviour

    def extra_uses(self, params: dict[str, Any]) -> tuple[str, ...]:
        return self.real.extra_uses(params) if hasattr(self.real, "extra_uses") else ()

    def normalize(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.real.normalize(params) if hasattr(self.real, "normalize") else params

    def check_gate(self, gate: dict[str, Any], artifact: Path) -> None:
        """The real step's gate on the fake's output (evaluate: its rouge1 1.5)."""
        if hasattr(self.real, "check_gate"):
            self.real.check_gate(gate, artifact)

    def environment(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.behaviour == "bad-lookup":  # e.g. model.path gone, or the hub unreachable
            raise StepError(f"{self.name} cannot look up its inputs: a one-line reason")
        return {}

    def check(self, params: dict[str, Any]) -> None:
        if self.behaviour == "bad-config":
            raise StepError(f"{self.name} refuses this config: fix it")

    def run(self, params: dict[str, Any], inputs: dict[str, Path], out_dir: Path, ctx: StepContext) -> dict[str, Any]:
        with open(self.journal, "a") as f:  # O_APPEND: safe across processes for short lines
            f.write(f"{self.name}\n")
        for upstream in inputs.values():
            assert (upstream / "manifest.json").is_file(), f"{upstream} is not complete"
        (out_dir / "payload.json").write_text(json.dumps({"params": params, "show_progress": ctx.show_progress},
                                                         default=str))
        if self.name == "evaluate":
            (out_dir / "metrics.json").write_text(json.dumps({"task": "summarize", "rouge1": 1.5, "tokens_per_s": 9.0}))
            (out_dir / "predictions.jsonl").write_text('{"id": "a"}\n')
        if self.behaviour == "expect-claims":  # what the step reads is claimed against mambapipe-cache rm
            for upstream in inputs.values():
                with ArtifactStore(upstream.parent.parent).unread(upstream.parent.name, upstream.name) as unread:
                    if unread:
                        raise StepError(f"{upstream} is not claimed while {self.name} reads it")
        if self.behaviour.startswith("sleep:"):
            time.sleep(float(self.behaviour.split(":")[1]))
        if self.behaviour.startswith("hold:"):  # until the test creates the file: a step that outlasts a race
            release, deadline = Path(self.behaviour.split(":", 1)[1]), time.monotonic() + 120
            while not release.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        if self.behaviour == "fail":
            raise StepError(f"{self.name} cannot do this: a one-line reason")
        if self.behaviour == "crash":
            raise RuntimeError("something broke\nsecond line")
        return {"fake": True}


def fake_steps(journal: Path, **behaviour: str) -> list[FakeStep]:
    return [FakeStep(real, journal, behaviour.get(name, "")) for name, real in REAL_STEPS.items()]


def journal_lines(journal: Path) -> list[str]:
    return journal.read_text().split() if journal.exists() else []
