"""A benchmark scenario, its label, the default grid and whether an engine's limits fit one, apart from the benchmark
itself (which needs torch): so the sweep summary names a metrics.json row in the words the benchmark's progress bar
and plan problems use, and the evaluate step's plan checks the scenarios without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from mambapipe.backends.base import LimitError, Limits


@dataclass(frozen=True)
class Scenario:
    batch: int
    input_len: int
    output_len: int


def scenario_label(scenario: Scenario) -> str:
    return f"B={scenario.batch} {scenario.input_len}/{scenario.output_len}"


# anchors-h200.md S1-S4: mamba_ssm latency and throughput defaults, the Mamba paper's long prompt, and
# TensorRT-LLM summarize.py's setting.
DEFAULT_SCENARIOS = (Scenario(1, 100, 100), Scenario(64, 100, 100), Scenario(1, 2048, 128), Scenario(8, 923, 100))


def scenarios_from_config(raw: Optional[Iterable[dict[str, int]]]) -> list[Scenario]:
    """`eval.scenarios` as Scenario objects; the anchors' S1-S4 when it is empty."""
    items = [Scenario(int(s["batch"]), int(s["input_len"]), int(s["output_len"])) for s in (raw or [])]
    return items or list(DEFAULT_SCENARIOS)


def limit_problem(limits: Limits, scenario: Scenario) -> Optional[str]:
    """Why an engine of these limits (a loaded engine's, or the build.* params at plan time) cannot run
    `scenario`, in the words the engine itself would refuse it with; or None."""
    prompts = [[1] * scenario.input_len] * scenario.batch  # one row repeated: only the shape is checked
    try:
        limits.check(prompts, scenario.output_len)
    except LimitError as err:
        return str(err)
    return None
