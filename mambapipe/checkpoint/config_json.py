"""Reading the `config.json` of a TensorRT-LLM checkpoint (convert's artifact) or engine directory (build's).

One reader for every consumer (the build step, both backends, the native engine loader), so a missing,
truncated or hand-edited file always fails the same way: one line naming the file and the step to rerun,
instead of a bare JSONDecodeError traceback in some places and a clear message in others. read_json_object,
beneath it, reads the source checkpoint's JSON files too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

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
    return read_json_object(path, lambda problem: StepError(f"{path} {problem}: not {what}; {remedy}"))


def config_tp_size(config: dict[str, Any]) -> int:
    """The tensor-parallel size a TensorRT-LLM config.json's mapping names: its tp_size, else its world_size (the
    same here, where pipeline parallelism is always 1), else 1 when it has no mapping."""
    mapping = config.get("mapping") or {}
    return int(mapping.get("tp_size", mapping.get("world_size", 1)))


def read_json_object(path: Path, error: Callable[[str], Exception]) -> dict[str, Any]:
    """`path` as a JSON object; else raises `error(problem)`, the problem phrased to follow the path ("is not valid
    JSON (...)"), so that each caller raises its own kind of error with its own remedy."""
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise error(f"cannot be read ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise error("is not valid JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as err:
        raise error(f"is not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict):
        raise error(f"holds a JSON {type(data).__name__}, not an object")
    return data
