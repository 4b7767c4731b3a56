"""Where a run came from: package versions and the git commit of the mambapipe source."""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Optional

PACKAGES = ("mambapipe", "torch", "transformers", "tokenizers", "safetensors", "huggingface_hub",
            "hydra-core", "omegaconf", "datasets", "rouge-score", "tensorrt_llm")


def versions() -> dict[str, str]:
    """Installed versions of the packages that shape the artifacts (absent ones left out)."""
    found = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def git_commit() -> Optional[str]:
    """HEAD of the repository mambapipe is imported from, or None outside a git checkout."""
    source = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
