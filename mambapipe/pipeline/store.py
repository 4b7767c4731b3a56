"""The artifact cache on disk: `cache_dir/<step>/<key>/`, complete only once `manifest.json` exists.

A step writes into `cache_dir/<step>/.staging/<key>.<pid>.<nonce>/`; `commit` writes the manifest
there and renames the directory into place, so a killed or failing step never leaves a directory
that looks complete. One `filelock.FileLock` per key serialises processes that need the same artifact.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Optional

from filelock import FileLock, Timeout

MANIFEST = "manifest.json"
STAGING = ".staging"
LOCKS = ".locks"


def read_manifest(file: Path) -> Optional[dict[str, Any]]:
    """The manifest at `file`; None when there is none or it is damaged (not JSON, without its date, or its
    sections not of the shapes the runner writes)."""
    try:
        manifest = json.loads(file.read_text())
        datetime.fromisoformat(manifest["created"])
    except (OSError, ValueError, TypeError, KeyError):  # missing or unreadable; not JSON, not a dict, no date
        return None
    return manifest if _well_formed(manifest) else None


def _well_formed(manifest: dict[str, Any]) -> bool:
    """The parts the plan and `mambapipe-cache` read have the shapes the runner writes (a hand edit or another
    version's manifest may not)."""
    sections = [manifest.get(name, {}) for name in ("params", "inputs", "environment", "facts")]
    inputs = manifest.get("inputs", {})
    return all(isinstance(section, dict) for section in sections) and all(
        isinstance(key, str) for key in inputs.values())


class ArtifactStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def path(self, step: str, key: str) -> Path:
        return self.root / step / key

    def is_complete(self, step: str, key: str) -> bool:
        return self.manifest(step, key) is not None

    def manifest(self, step: str, key: str) -> Optional[dict[str, Any]]:
        return read_manifest(self.path(step, key) / MANIFEST)

    def artifacts(self, step: Optional[str] = None) -> Iterator[tuple[Path, dict[str, Any]]]:
        """(directory, manifest) of every complete artifact, optionally of one step."""
        for directory in self._artifact_dirs(step):
            manifest = read_manifest(directory / MANIFEST)
            if manifest is not None:
                yield directory, manifest

    def unreadable(self, step: Optional[str] = None) -> Iterator[Path]:
        """Artifact directories whose manifest is damaged (cut short, hand-edited): not cached, so the next run
        that needs one remakes it, and `mambapipe-cache rm` removes them."""
        for directory in self._artifact_dirs(step):
            if read_manifest(directory / MANIFEST) is None:
                yield directory

    def _artifact_dirs(self, step: Optional[str]) -> Iterator[Path]:
        steps = [self.root / step] if step else sorted(p for p in self.root.glob("*") if p.is_dir())
        for step_dir in steps:
            for manifest in sorted(step_dir.glob(f"*/{MANIFEST}")):
                if not manifest.parent.name.startswith("."):
                    yield manifest.parent

    def lock(self, step: str, key: str) -> FileLock:
        lock_dir = self.root / step / LOCKS
        lock_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(str(lock_dir / f"{key}.lock"))

    def new_staging(self, step: str, key: str) -> Path:
        staging = self.root / step / STAGING / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        return staging

    def clear_staging(self, step: str, key: str) -> None:
        """Remove leftovers of killed runs for `key`; call only while holding the key's lock."""
        for leftover in (self.root / step / STAGING).glob(f"{key}.*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def remove_leftovers(self, step: str) -> None:
        """Remove the staging dirs of killed runs of `step`, but not the one a live run is writing
        (it holds its key's lock from before its step starts until the artifact is in place)."""
        staging_root = self.root / step / STAGING
        keys = {p.name.split(".")[0] for p in staging_root.iterdir()} if staging_root.is_dir() else set()
        for key in sorted(keys):
            lock = self.lock(step, key)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            try:
                self.clear_staging(step, key)
            finally:
                lock.release()
        if staging_root.is_dir() and not any(staging_root.iterdir()):
            staging_root.rmdir()

    def commit(self, staging: Path, step: str, key: str, manifest: dict[str, Any]) -> Path:
        """Write the manifest last, then move the staging dir into place (replacing a forced re-run's
        old artifact). Call only while holding the key's lock."""
        tmp = staging / f"{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, staging / MANIFEST)
        final = self.path(step, key)
        if final.exists():
            self.remove_dir(final)
        os.rename(staging, final)
        return final

    def remove_dir(self, directory: Path) -> None:
        """Delete an artifact so that it stops looking complete at once, then free its space."""
        trash = directory.parent / STAGING / f"{directory.name}.removed.{uuid.uuid4().hex[:8]}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.rename(directory, trash)
        shutil.rmtree(trash, ignore_errors=True)
