"""The four pipeline steps, in pipeline order. Each module exposes a module-level `STEP`."""

from __future__ import annotations

import importlib

from mambapipe.config import STEP_NAMES
from mambapipe.pipeline.step import Step


def load_steps() -> list[Step]:
    """The `STEP` objects of download, convert, build and evaluate (imported here, not at package
    import, so `import mambapipe.steps` stays light)."""
    return [importlib.import_module(f"mambapipe.steps.{name}").STEP for name in STEP_NAMES]
