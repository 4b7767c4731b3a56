"""Reading the `config.json` of a TensorRT-LLM checkpoint (convert's artifact) or engine directory (build's).

One reader for every consumer (the build step, both backends, the native engine loader), so a missing,
truncated or hand-edited file always fails the same way: one line naming the file and the step to rerun,
instead of a bare JSONDecodeError traceback in some places and a clear message in others.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mambapipe.pipeline.step import StepError

CONFIG_FILE = "config.json"


def read_config_json(directory: Path, what: str, step: str) -> dict[str, Any]:
    """`directory/config.json` as a dict. `what` names what the directory should be ("a TensorRT-LLM
    checkpoint"), `step` the pipeline step that writes it; a StepError tells the user to rerun that step."""
    path = Path(directory) / CONFIG_FILE
    remedy = f"rerun the {step} step (force=[{step}])"
    if not Path(directory).exists():
        raise StepError(f"{directory} does not exist (it should be {what}); check the path, or {remedy}")
    if not path.is_file():
        raise StepError(f"{directory} has no {CONFIG_FILE}: not {what}; {remedy}")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise StepError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}): not {what}; {remedy}") from None
    if not isinstance(config, dict):
        raise StepError(f"{path} holds a JSON {type(config).__name__}, not an object: not {what}; {remedy}")
    return config
