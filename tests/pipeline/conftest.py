"""Fixtures for the runner tests: the quickstart recipe run in-process with fake steps."""

from __future__ import annotations

import io
import itertools
from pathlib import Path
from typing import Optional, Sequence

import pytest
from pipeline_fakes import fake_steps, journal_lines
from rich.console import Console

from mambapipe.pipeline.runner import RunResult, run_recipe
from mambapipe.pipeline.store import ArtifactStore


class FakePipeline:
    def __init__(self, tmp_path: Path, compose_config):
        self.tmp, self.compose = tmp_path, compose_config
        self.journal = tmp_path / "journal.txt"
        self.store = ArtifactStore(tmp_path / "cache")
        self.output = self.errors = ""  # what the run printed on standard output and on standard error
        self._runs = itertools.count()

    def run(self, *overrides: str, typed: Optional[Sequence[str]] = None, **behaviour: str) -> RunResult:
        """Run quickstart (+ overrides) with fake steps; `behaviour` e.g. convert="fail". `typed`: the command line
        the run repeats, where it says less than `overrides` (those a recipe of the user's would set)."""
        buffer, errors = io.StringIO(), io.StringIO()
        run_dir = self.tmp / "runs" / str(next(self._runs))
        result = run_recipe(self.compose(*overrides), run_dir, list(overrides if typed is None else typed),
                            steps=fake_steps(self.journal, **behaviour), console=Console(file=buffer, width=200),
                            errors=Console(file=errors, width=200))
        self.output, self.errors = buffer.getvalue(), errors.getvalue()
        return result

    def ran(self) -> list[str]:
        """Steps executed since the last call."""
        lines = journal_lines(self.journal)
        self.journal.unlink(missing_ok=True)
        return lines


@pytest.fixture
def pipeline(tmp_path, compose_config) -> FakePipeline:
    return FakePipeline(tmp_path, compose_config)
