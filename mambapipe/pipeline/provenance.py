"""Where a run came from: package versions and the git commit of the mambapipe source, and whether it had changes."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

PACKAGES = ("mambapipe", "torch", "transformers", "tokenizers", "safetensors", "huggingface_hub",
            "hydra-core", "omegaconf", "datasets", "rouge-score", "tensorrt_llm")
SOURCE = Path(__file__).resolve().parents[2]  # the checkout mambapipe is imported from, where it is one


def versions() -> dict[str, str]:
    """Installed versions of the packages that shape the artifacts (absent ones left out)."""
    found = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def git_state(source: Optional[Path] = None) -> dict[str, Any]:
    """`git_commit`, HEAD of the checkout mambapipe is imported from, and `git_dirty`, whether its tracked files differ
    from that commit (the commit alone names code that may not be what ran); both None outside a git checkout.
    Untracked files are left out: looking for them walks every directory of the checkout, outputs/ and multirun/
    included, which grow with every run; the tracked files take ~10 ms."""
    source = source or SOURCE
    commit = _git(source, "rev-parse", "HEAD")
    if not commit:
        return {"git_commit": None, "git_dirty": None}
    changes = _git(source, "status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": None if changes is None else changes != ""}


def _git(source: Path, *arguments: str) -> Optional[str]:
    """What the git command prints, stripped; None where it fails or there is no git. Without git's optional locks:
    `git status` would otherwise take the index's lock to refresh it, and a `git commit` the user runs meanwhile
    would fail on it."""
    try:
        out = subprocess.run(["git", "-C", str(source), *arguments], capture_output=True, text=True, timeout=5,
                             check=True, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
