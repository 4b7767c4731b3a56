"""The four pipeline steps, in pipeline order. Each module exposes a module-level `STEP`."""

from __future__ import annotations

import importlib

from mambapipe import interrupts
from mambapipe.config import STEP_NAMES
from mambapipe.pipeline.step import Step


def load_steps() -> list[Step]:
    """The `STEP` objects of download, convert, build and evaluate (imported here, not at package
    import, so `import mambapipe.steps` stays light). They import what planning needs; what a step's run needs
    (torch, transformers, datasets, rouge-score) it imports as it runs, so that a plan, a plan-time error and a run
    whose every step is cached do without. A Ctrl-C meanwhile is raised once they are done (interrupts.deferred)."""
    with interrupts.deferred():
        return [importlib.import_module(f"mambapipe.steps.{name}").STEP for name in STEP_NAMES]
