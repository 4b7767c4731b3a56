"""A benchmark scenario and its label, apart from the benchmark itself (which needs torch), so the sweep
summary names a metrics.json row in the words the benchmark's progress bar and plan problems use."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    batch: int
    input_len: int
    output_len: int


def scenario_label(scenario: Scenario) -> str:
    return f"B={scenario.batch} {scenario.input_len}/{scenario.output_len}"
