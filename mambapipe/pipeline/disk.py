"""A disk that fills (or a quota that runs out) while a step writes: one line naming the directory that filled and
how to move it, whichever library's write met it.

The runner names the mambapipe cache for whatever a step writes (steps write only into their staging directory),
and an evaluation rank for the outputs it writes there (mambapipe.evaluate.worker); the code that writes a Hugging
Face cache (a hub fetch, a datasets load) or the run directory (the runner's records and the copies of a step's
outputs, a tensor-parallel evaluation's log of its ranks) names that directory around its own call, and the innermost
name wins. The written parts go as for any failure: the runner removes the staging directory, and huggingface_hub and
datasets their temporary files; the run directory's files are written whole or not at all.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import socket
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, ContextManager, Iterator, Optional

from mambapipe.pipeline.step import StepError

log = logging.getLogger(__name__)

RELOCATE_RUN_DIR = "set hydra.run.dir (hydra.sweep.dir for a sweep) to a directory on a disk with room"
# What check_room writes: Hydra's own files of a run (.hydra/config.yaml, hydra.yaml, overrides.yaml) take 6-10 KB,
# a sweep's multirun.yaml 5-6 KB; a disk with less room than this would stop the run at its next write anyway.
PROBE_BYTES = 64 * 1024
_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
# The temporary directories mambapipe makes (temporary_directory) are named TEMPORARY_PREFIX + what for, e.g.
# mambapipe-ranks-XXXXXXXX, and each holds OWNER_FILE, which its run holds an flock on while it uses the directory and
# writes its host and pid into once it does. The kernel drops the lock as the run ends however it ends (SIGKILL, the
# OOM killer), so a later run that can take it holds a dead run's leftover. A pid and start time would say so less
# surely: a live run in another pid namespace (a container sharing /tmp) has a pid that reads as gone here, and
# psutil's start times move with the wall clock.
TEMPORARY_PREFIX = "mambapipe-"
OWNER_FILE = ".mambapipe-owner"
# What the block is given: a directory of its own beside OWNER_FILE, so that what it lists there is what it wrote (a
# tokenizer's files, named by load_tokenizer where they do not load).
WORK_DIR = "work"
# How Rust's std::io::Error ends its message, which safetensors and tokenizers raise in their own exception types.
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


class DiskFullError(StepError):
    """A write found the disk of the directory it names full."""


def full_disk(exc: BaseException) -> Optional[str]:
    """What a full disk said ("no space left on device", "disk quota exceeded") where `exc` or an exception in its
    chain (as a traceback prints it: a StepError raised from the OSError, a library's own error around it) was a
    write that found it full; None otherwise."""
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):
            number = current.errno
        else:
            found = _RUST_OS_ERROR.search(str(current))
            number = int(found[1]) if found else None
        if number in _FULL:
            return _FULL[number]
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return None


@contextmanager
def filling(where: str, relocate: str) -> Iterator[None]:
    """Turn a full disk met in the block into a DiskFullError naming `where` (the directory the block writes, as the
    user knows it) and how to `relocate` it (the key or environment variable that moves it)."""
    try:
        yield
    except DiskFullError:  # named by a block inside this one, which knows better where it wrote
        raise
    except Exception as exc:
        said = full_disk(exc)
        if said is None:
            raise
        raise DiskFullError(f"{said} in {where}: free space there, or {relocate}") from exc


def filling_cache(root: Path) -> ContextManager[None]:
    """For a block that writes into the mambapipe cache at `root` (a step's staging directory, its commit)."""
    return filling(f"the mambapipe cache {root}",
                   "set cache_dir (or MAMBAPIPE_CACHE) to a directory on a disk with room")


def filling_run_dir(run_dir: Path) -> ContextManager[None]:
    """For a block that writes into a run's directory (Hydra's hydra.run.dir; a sweep's jobs each have theirs below
    its hydra.sweep.dir)."""
    return filling(f"the run directory {run_dir}", RELOCATE_RUN_DIR)


def filling_sweep_dir(sweep_dir: Path) -> ContextManager[None]:
    """For a block that writes into a sweep's directory (Hydra's hydra.sweep.dir) before any job has run there."""
    return filling(f"the sweep directory {sweep_dir}", "set hydra.sweep.dir to a directory on a disk with room")


def filling_tmpdir() -> ContextManager[None]:
    """For a block that writes under Python's temporary directory: TMPDIR's, or /tmp and the like where TMPDIR is
    unset (tempfile tries each for room to write a few bytes once, and keeps the first that has it)."""
    return filling(f"the temporary directory {tempfile.gettempdir()} (TMPDIR)",
                   "set TMPDIR to a directory on a disk with room")


@contextmanager
def temporary_directory(prefix: str) -> Iterator[Path]:
    """WORK_DIR of a tempfile.TemporaryDirectory (`prefix` starts with TEMPORARY_PREFIX), removed as the block ends,
    and by a later run's where this one is killed outright (remove_dead_runs_directories, first); a full disk as it
    is made names TMPDIR (filling_tmpdir). What the block writes there it names itself: the block may write elsewhere
    too."""
    remove_dead_runs_directories()
    with filling_tmpdir():
        made = tempfile.TemporaryDirectory(prefix=prefix)
        try:
            owner = _own(Path(made.name))
            (Path(made.name) / WORK_DIR).mkdir()
        except BaseException:
            made.cleanup()
            raise
    with owner, made:  # the directory removed first, while its lock is held
        yield Path(made.name) / WORK_DIR


def _own(directory: Path) -> IO[str]:
    """`directory`'s OWNER_FILE, made, locked and then written (see _left_by_a_dead_run); the lock held until it is
    closed."""
    owner = open(directory / OWNER_FILE, "x")
    try:
        fcntl.flock(owner, fcntl.LOCK_EX)
        owner.write(f"{socket.gethostname()} {os.getpid()}\n")
        owner.flush()
    except BaseException:
        owner.close()
        raise
    return owner


def remove_dead_runs_directories() -> None:
    """Remove the temporary directories that mambapipe runs killed outright left (TEMPORARY_PREFIX; up to 8 MB each
    with mpirun's session directory), saying so in one line where there were any. Another user's, a live run's, one
    another host made in a TMPDIR they share, and an older mambapipe's (without OWNER_FILE) are left alone."""
    root = Path(tempfile.gettempdir())
    try:
        entries = [entry for entry in os.scandir(root) if entry.name.startswith(TEMPORARY_PREFIX)]
    except OSError:  # a TMPDIR that is not there (yet) or not ours to read: nothing of ours to remove
        return
    dead = [Path(entry.path) for entry in entries if _ours(entry) and _left_by_a_dead_run(Path(entry.path))]
    for directory in dead:
        shutil.rmtree(directory, ignore_errors=True)  # another run may be removing it too
    removed = [directory for directory in dead if not os.path.lexists(directory)]  # not one rmtree could not empty
    if removed:
        log.info("removed %d temporary director%s of mambapipe runs killed outright from %s: %s", len(removed),
                 "y" if len(removed) == 1 else "ies", root, ", ".join(d.name for d in removed))


def _ours(entry: os.DirEntry[str]) -> bool:
    """Whether `entry` is a directory of this user's. One gone since TMPDIR was listed (another run starting now removed
    it) is not, and leaves the others to look at."""
    try:
        return entry.is_dir(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_uid == os.getuid()
    except OSError:
        return False


def _left_by_a_dead_run(directory: Path) -> bool:
    """Whether `directory`'s OWNER_FILE says a run of this host wrote it, and no live process holds its lock. One whose
    owner is between making the file and locking it has it empty."""
    try:
        with open(directory / OWNER_FILE) as owner:
            fcntl.flock(owner, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return owner.read().split()[:1] == [socket.gethostname()]
    except OSError:  # no such file (an older mambapipe's directory, or one just made), or locked: a live run's
        return False


def nearest_existing(path: Path) -> Path:
    """`path`, or its nearest parent that exists."""
    return next(p for p in (path, *path.parents) if os.path.exists(p))


def why_unwritable(directory: Path, refused: Optional[OSError] = None) -> Optional[str]:
    """Why `directory` cannot be made or written, in the words of the one-line errors that name it (cache_dir's,
    the run directory's): `cannot be created: F is not a directory` where a file stands at it or above it; else, given
    what making or writing there raised (`refused`), `cannot be written to (Read-only file system)` for a directory
    there is and `cannot be created (...)` for one still to be made; else None. The nearest path that exists decides:
    a check that failed has removed what it made."""
    existing = nearest_existing(directory)
    if not existing.is_dir():  # mkdir's NotADirectoryError below it, FileExistsError at it
        return f"cannot be created: {existing} is not a directory"
    if refused is None:
        return None
    return f"cannot be {'written to' if existing == directory else 'created'} ({refused.strerror or refused})"


def check_room(directory: Path) -> None:
    """Make `directory` where missing, as Hydra makes a run's, and write and remove PROBE_BYTES there: the OSError of
    a disk without that much room. Where it fails, the directories it made are removed again."""
    made = [d for d in (directory, *directory.parents) if not d.exists()]
    probe = directory / f".mambapipe-room-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        try:
            with open(probe, "wb") as handle:
                handle.write(bytes(PROBE_BYTES))
        finally:
            probe.unlink(missing_ok=True)
    except OSError:
        for empty in made:  # deepest first; one that holds something now is another's
            with suppress(OSError):
                os.rmdir(empty)
        raise
