"""The repository's style rules, checked with the test suite so that CI and the README's test command enforce
them: ruff over every Python file with pyproject.toml's [tool.ruff] settings (pyflakes' errors, pycodestyle's,
lines up to 120 characters, sorted imports)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    pytest.importorskip("ruff", reason="ruff comes with the test extra: pip install -e '.[test]'")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
