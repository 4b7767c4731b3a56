"""Fixtures every test area may use: composing the shipped Hydra configs in-process."""

from __future__ import annotations

import atexit
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from mambapipe import hub
from mambapipe.config import register_configs

# Triton decides at decoration time whether a kernel is interpreted, so the switch must be set before any
# test (in any xdist worker) imports mambapipe.engine.kernels: without CUDA, kernels run interpreted.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The Hugging Face libraries' caches (datasets' copies of the local JSON datasets the tests evaluate on, hub
# snapshots) in a directory of this test process's, removed at its end, not in the user's ~/.cache/huggingface: set
# before they are imported, as they read it then; the tests' subprocesses inherit it.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="mambapipe-tests-hf-")
atexit.register(shutil.rmtree, os.environ["HF_HOME"], ignore_errors=True)

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "configs"
RECIPES = sorted(p.stem for p in (REPO / "recipes").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))


@pytest.fixture(autouse=True)
def console_width_unset(monkeypatch):
    """pytest-xdist's workers have COLUMNS=80, which mambapipe's consoles (and the runs tests start) would take as
    the width asked for; the tests read the 120 columns a run writes into a file or pipe."""
    monkeypatch.delenv("COLUMNS", raising=False)


@pytest.fixture(autouse=True)
def hub_reachability_unknown():
    """A test that makes the hub unreachable must not leave every later test in its process offline."""
    hub.forget_unreachable()


@pytest.fixture
def compose_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """compose_config("recipe=quickstart", "dtype=float16") -> the composed config, with the cache in
    tmp_path/cache unless the overrides name one."""
    register_configs()

    def _compose(*overrides: str) -> DictConfig:
        extra = [] if any(o.startswith("cache_dir=") for o in overrides) else [f"cache_dir={tmp_path / 'cache'}"]
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose("config", overrides=[*overrides, *extra])

    return _compose


@pytest.fixture(autouse=True)
def sigint_handler_restored():
    """A test that runs mambapipe.cli's main in-process can leave SIGINT ignored (interrupts.ignore_from_here, as a
    process that reports a Ctrl-C and exits does): every later subprocess of that test worker would inherit it, and
    the Ctrl-C tests of process_tree would wait in vain for their drivers to stop."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


@pytest.fixture
def reader_gone() -> Iterator[int]:
    """A pipe's write end whose reader is gone, as `| head -3` leaves a command's standard output once head has read
    its lines, before the command has written them all: stdout=reader_gone."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    yield write_end
    os.close(write_end)


@pytest.fixture
def disk_fills_writing(monkeypatch) -> Callable[..., None]:
    """disk_fills_writing("run.json"): the disk fills as mambapipe writes a file of that name whole or not at all
    (write_atomic, through its partial file): half of its bytes land, then ENOSPC. `when` picks the writes it fills
    by their bytes (all by default); every other write goes through."""
    real_write_bytes = Path.write_bytes

    def fill(name: str, when: Callable[[bytes], bool] = lambda data: True) -> None:
        def half_written(self: Path, data: bytes) -> int:
            if self.name != f".{name}.partial" or not when(data):
                return real_write_bytes(self, data)
            real_write_bytes(self, data[:len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(Path, "write_bytes", half_written)

    return fill


@pytest.fixture
def ctrl_c_while_download_waits() -> Callable[..., tuple[int, str]]:
    """ctrl_c_while_download_waits(command, cwd, env, cache, download_key): run `command` (a mambapipe run or sweep
    on the cache `cache`) while this test holds the lock of the download artifact `download_key`, and press Ctrl-C
    (SIGINT to its process group, as a terminal sends it) once the run says it waits there: inside the step, where a
    fast step could not be caught. Its exit status, and its standard output and error together."""
    from filelock import FileLock

    from mambapipe.pipeline.store import LOCKS

    def interrupt(command: list[str], cwd: Path, env: dict[str, str], cache: Path, download_key: str,
                  timeout: float = 120) -> tuple[int, str]:
        (cache / "download" / LOCKS).mkdir(parents=True, exist_ok=True)
        with FileLock(str(cache / "download" / LOCKS / f"{download_key}.lock")):
            process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, start_new_session=True,
                                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            lines = []
            for line in process.stdout:
                lines.append(line)
                if "waiting for another run that is making download" in line:
                    os.killpg(process.pid, signal.SIGINT)
                    break
            lines.append(process.communicate(timeout=timeout)[0])  # the lock held until it has stopped
        return process.returncode, "".join(lines)

    return interrupt


# `python -c` this, then UNDER and AFTER_JOB, then mambapipe's arguments: mambapipe.cli's main, in a process whose
# files opened for writing below UNDER take none of their bytes (made, left empty, and each write an ENOSPC, as on a
# full tmpfs), from the start (AFTER_JOB -1) or once the sweep's job AFTER_JOB has run. Only this process's: a sweep
# job's own process writes as usual.
_FULL_DISK_RUN = """
import builtins, errno, io, os, sys

import mambapipe.sweep.job

UNDER, AFTER_JOB = os.path.abspath(sys.argv.pop(1)), int(sys.argv.pop(1))
full = AFTER_JOB < 0
real_open, run_isolated_job = io.open, mambapipe.sweep.job.run_isolated_job


class FullFile:
    def __init__(self, opened):
        self.opened = opened

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.opened, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.opened.close()


def open_on_a_full_disk(file, mode="r", *args, **kwargs):
    opened = real_open(file, mode, *args, **kwargs)
    path = os.path.abspath(file) if isinstance(file, (str, os.PathLike)) else ""
    if full and path.startswith(UNDER + os.sep) and set(mode) & set("wax+"):
        return FullFile(opened)
    return opened


def run_job_then_fill(cfg, hydra_cfg):
    global full
    try:
        return run_isolated_job(cfg, hydra_cfg)
    finally:
        full = full or hydra_cfg.job.num == AFTER_JOB


builtins.open = io.open = open_on_a_full_disk
mambapipe.sweep.job.run_isolated_job = run_job_then_fill
from mambapipe.cli import main
main()
"""


@pytest.fixture
def run_on_a_full_disk() -> Callable[..., subprocess.CompletedProcess]:
    """run_on_a_full_disk(args, cwd, env, under, after_job=None): `python -m mambapipe *args` (as mambapipe.cli's
    main), where the disk of `under` is full from the start, or once the sweep's job `after_job` has run: files
    opened for writing there are made and left empty, every write an ENOSPC. Hydra's own writes (.hydra/,
    multirun.yaml) and mambapipe's in that process alike; a sweep job's process writes as usual."""
    def run(args: list[str], cwd: Path, env: dict[str, str], under: Path, after_job: Optional[int] = None
            ) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", _FULL_DISK_RUN, str(under), str(-1 if after_job is None
                               else after_job), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)

    return run


# `python -c` this, then UNDER and ERRNO, then mambapipe's arguments: mambapipe.cli's main, in a process where making a
# directory below UNDER, or opening a file there for writing, fails with ERRNO, as it does on a read-only file system
# (EROFS) or in a directory the user may not write (EACCES), which a test run as root cannot make otherwise. Making one
# that exists still says it exists, as there. UNDER itself and what is above it are made as usual.
_REFUSED_RUN = """
import builtins, io, os, sys

UNDER, ERRNO = os.path.abspath(sys.argv.pop(1)), int(sys.argv.pop(1))
real_open, real_mkdir = io.open, os.mkdir


def refused(path):
    return isinstance(path, (str, os.PathLike)) and os.path.abspath(path).startswith(UNDER + os.sep)


def refusing_open(file, mode="r", *args, **kwargs):
    if refused(file) and set(mode) & set("wax+"):
        raise OSError(ERRNO, os.strerror(ERRNO), str(file))
    return real_open(file, mode, *args, **kwargs)


def refusing_mkdir(path, *args, **kwargs):
    if refused(path) and not os.path.lexists(path):
        raise OSError(ERRNO, os.strerror(ERRNO), str(path))
    return real_mkdir(path, *args, **kwargs)


builtins.open, io.open, os.mkdir = refusing_open, refusing_open, refusing_mkdir
from mambapipe.cli import main
main()
"""


@pytest.fixture
def run_where_writes_are_refused() -> Callable[..., subprocess.CompletedProcess]:
    """run_where_writes_are_refused(args, cwd, env, under, error): `python -m mambapipe *args` (as mambapipe.cli's
    main), where making a directory or writing a file below `under` fails with the errno `error` (errno.EROFS,
    errno.EACCES), Hydra's writes and mambapipe's alike."""
    def run(args: list[str], cwd: Path, env: dict[str, str], under: Path, error: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", _REFUSED_RUN, str(under), str(error), *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=300)

    return run
