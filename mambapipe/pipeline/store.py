"""The artifact cache on disk: `cache_dir/<step>/<key>/`, complete only once `manifest.json` exists.

A step writes into `cache_dir/<step>/.staging/<key>.<pid>.<nonce>/`; `commit` writes the manifest
there and renames the directory into place, so a killed or failing step never leaves a directory
that looks complete. One `filelock.FileLock` per key serialises processes that need the same artifact.
A step also holds a shared claim on each artifact it reads (`reading`), so that `mambapipe-cache rm`
leaves that artifact alone and a forced re-run of its step waits before replacing it (`unread`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

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
    sections = [manifest.get(name, {}) for name in ("params", "inputs", "environment", "facts", "upstream")]
    inputs = manifest.get("inputs", {})
    return all(isinstance(section, dict) for section in sections) and all(
        isinstance(key, str) for key in inputs.values())


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write `path` whole or not at all, so that a reader, or a run killed meanwhile, never leaves or sees half a
    file: the data goes to a hidden `.<name>.partial` beside it, which then replaces `path` in one rename. A write
    that fails (a full disk) takes its partial file with it."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def dir_size(path: Path) -> int:
    """Bytes of the files a directory holds (symlinks count as their own small size, not the target)."""
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() or p.is_symlink())


def staged_for(staging_dir: Path) -> tuple[str, str]:
    """The step and key a staging dir is for, as new_staging names it: `<step>/.staging/<key>.<pid>.<nonce>`."""
    return staging_dir.parent.parent.name, staging_dir.name.split(".")[0]


def staging_cache(staging_dir: Path) -> Path:
    """The cache a staging dir is in, as new_staging names it: `<cache>/<step>/.staging/<key>.<pid>.<nonce>`."""
    return staging_dir.parents[2]


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
        return ((directory, manifest) for directory, manifest in self.entries(step) if manifest is not None)

    def entries(self, step: Optional[str] = None) -> Iterator[tuple[Path, Optional[dict[str, Any]]]]:
        """(directory, manifest) of every artifact directory, the manifest None where it is damaged (cut short,
        hand-edited): such a directory is not cached, so the next run that needs it remakes it, and
        `mambapipe-cache rm` removes it."""
        for directory in self._artifact_dirs(step):
            yield directory, read_manifest(directory / MANIFEST)

    def _artifact_dirs(self, step: Optional[str]) -> Iterator[Path]:
        steps = [self.root / step] if step else sorted(p for p in self.root.glob("*") if p.is_dir())
        for step_dir in steps:
            for manifest in sorted(step_dir.glob(f"*/{MANIFEST}")):
                if not manifest.parent.name.startswith("."):
                    yield manifest.parent

    def lock(self, step: str, key: str) -> FileLock:
        return FileLock(str(self._lock_file(step, key, ".lock")))

    def _lock_file(self, step: str, key: str, suffix: str) -> Path:
        """`<step>/.locks/<key><suffix>`: the key's lock (.lock), gate (.gate) and readers' claim (.readers).

        Kept for good, also once the key's artifact is removed (up to 3 empty files per key a run made or tried to
        make; nothing scans them): a lock is its file's inode, so deleting the file lets two processes hold it. One
        that opened the file before it was deleted waits on, and then holds, the old inode, while one that comes
        after creates and holds a new one: a reader's claim on the old .readers and a forced re-run's or rm's on the
        new would both be granted, and the artifact replaced or removed under the reader. Deleting it while holding
        the lock does not help: the waiter still gets the old inode. filelock 4 takes the lock again where the inode
        it got has no name left, but 3.x (which pyproject allows) does not, nor does `_flock` here or an older
        mambapipe on the same cache; and on NFS a file deleted while a process of that machine has it open is renamed
        (.nfsXXXX), so it keeps a name. With no run or mambapipe-cache using the cache on any machine,
        `rm -r <cache>/*/.locks` is safe."""
        lock_dir = self.root / step / LOCKS
        lock_dir.mkdir(parents=True, exist_ok=True)
        return lock_dir / f"{key}{suffix}"

    def try_lock(self, step: str, key: str) -> Optional[FileLock]:
        """The key's lock, acquired; None when a live run holds it (from before its step starts until the
        artifact is in place)."""
        lock = self.lock(step, key)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return None
        return lock

    @contextlib.contextmanager
    def reading(self, step: str, key: str, on_wait: Callable[[], None] = lambda: None) -> Iterator[None]:
        """Claim the artifact for reading (shared with other readers) while the block runs. The claim is taken
        through the key's gate, which a forced re-run holds while it waits for the readers before it: new readers
        queue behind it (`on_wait` is called if this one must) instead of keeping it waiting for as long as their
        claims overlap. Not re-entrant: a second claim of a key this process reads would wait for that re-run,
        which waits for the first."""
        with contextlib.ExitStack() as claim:
            # Shared: readers pass the gate together, and only a writer holding it stops them.
            with self._flock(step, key, ".gate", fcntl.LOCK_SH, on_wait):
                claim.enter_context(self._flock(step, key, ".readers", fcntl.LOCK_SH))
            yield

    @contextlib.contextmanager
    def unread(self, step: str, key: str) -> Iterator[bool]:
        """Hold the artifact with no run reading it; yields False at once if one is."""
        with self._flock(step, key, ".readers", fcntl.LOCK_EX | fcntl.LOCK_NB) as held:
            yield held

    @contextlib.contextmanager
    def _flock(self, step: str, key: str, suffix: str, operation: int,
               on_wait: Optional[Callable[[], None]] = None) -> Iterator[bool]:
        """Hold `operation`'s flock on the key's `suffix` file; with LOCK_NB, yields False where it is held. With
        `on_wait`, tries first and calls it before waiting, so that a wait is said, not silent."""
        # flock, unlike filelock's locks, can be shared, and the kernel drops it with a killed process. Opened for
        # reading too: NFS turns flock into a POSIX lock, whose shared form needs a readable file.
        with open(self._lock_file(step, key, suffix), "a+") as claim:
            try:
                fcntl.flock(claim, operation | (fcntl.LOCK_NB if on_wait else 0))
            except BlockingIOError:
                if on_wait is None:
                    yield False
                    return
                on_wait()
                fcntl.flock(claim, operation)
            try:
                yield True
            finally:
                fcntl.flock(claim, fcntl.LOCK_UN)

    def new_staging(self, step: str, key: str) -> Path:
        staging = self.root / step / STAGING / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        return staging

    def clear_staging(self, step: str, key: str) -> None:
        """Remove leftovers of killed runs for `key`; call only while holding the key's lock."""
        for leftover in (self.root / step / STAGING).glob(f"{key}.*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def staging_dirs(self, step: Optional[str] = None) -> list[Path]:
        """What is in the steps' staging dirs: what a running run is writing, and the leftovers of killed
        runs (`<key>.<pid>.<nonce>`, or `<key>.removed.<nonce>` where a kill cut a removal short)."""
        roots = [self.root / step / STAGING] if step else sorted(self.root.glob(f"*/{STAGING}"))
        return sorted(p for root in roots if root.is_dir() for p in root.iterdir())

    def is_being_written(self, staging_dir: Path) -> bool:
        """Whether a live run holds the lock of the key this staging dir is for."""
        lock = self.try_lock(*staged_for(staging_dir))
        if lock is None:
            return True
        lock.release()
        return False

    def remove_leftovers(self, step: str, only_key: Optional[str] = None) -> int:
        """Remove the staging dirs of killed runs of `step` (of `only_key` alone, where given), but not the one a live
        run is writing; the bytes freed."""
        staging_root = self.root / step / STAGING
        keys = [only_key] if only_key else sorted({staged_for(p)[1] for p in self.staging_dirs(step)})
        freed = 0
        for key in keys:
            lock = self.try_lock(step, key)
            if lock is None:
                continue
            try:
                freed += sum(dir_size(p) for p in staging_root.glob(f"{key}.*"))
                self.clear_staging(step, key)
            finally:
                lock.release()
        if staging_root.is_dir() and not any(staging_root.iterdir()):
            staging_root.rmdir()
        return freed

    def commit(self, staging: Path, step: str, key: str, manifest: dict[str, Any],
               on_wait: Callable[[], None] = lambda: None) -> Path:
        """Write the manifest last, then move the staging dir into place, replacing a forced re-run's old
        artifact once no run is reading it (`on_wait` is called if that means waiting). Call only while
        holding the key's lock."""
        write_atomic(staging / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
        final = self.path(step, key)
        with self._unread_after_waiting(step, key, on_wait):
            old = self._move_aside(final) if final.exists() else None
            os.rename(staging, final)  # right after: a kill between the two renames loses the least
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return final

    @contextlib.contextmanager
    def _unread_after_waiting(self, step: str, key: str, on_wait: Callable[[], None]) -> Iterator[None]:
        """The gate first, so that readers who come while this waits for those before it queue behind it."""
        with self._flock(step, key, ".gate", fcntl.LOCK_EX), \
                self._flock(step, key, ".readers", fcntl.LOCK_EX, on_wait):
            yield

    def remove_dir(self, directory: Path) -> None:
        """Delete an artifact so that it stops looking complete at once, then free its space."""
        shutil.rmtree(self._move_aside(directory), ignore_errors=True)

    def _move_aside(self, directory: Path) -> Path:
        trash = directory.parent / STAGING / f"{directory.name}.removed.{uuid.uuid4().hex[:8]}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.rename(directory, trash)
        return trash
