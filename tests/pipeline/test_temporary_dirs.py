"""mambapipe's temporary directories (disk.temporary_directory: a tensor-parallel launch's, a local tokenizer's
check's) left by a run killed outright (SIGKILL, the OOM killer): the next one a run makes removes them, in one line
of the log, and leaves a live run's, another user's, another host's and an older mambapipe's alone."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from mambapipe.pipeline.disk import OWNER_FILE, remove_dead_runs_directories, temporary_directory

REPO = Path(__file__).resolve().parents[2]
# A run that makes its temporary directory, says where, and sleeps in it until it is killed.
HOLDER = textwrap.dedent("""
    import time
    from mambapipe.pipeline.disk import temporary_directory
    with temporary_directory("mambapipe-ranks-") as made:
        print(made, flush=True)
        time.sleep(60)
""")


@pytest.fixture
def user_tmpdir(tmp_path, monkeypatch) -> Path:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile reads TMPDIR once
    return tmpdir


@pytest.fixture
def holders(user_tmpdir):
    """Start a HOLDER: (its process, its directory in TMPDIR); each is killed as the test ends."""
    started: list[subprocess.Popen] = []

    def start() -> tuple[subprocess.Popen, Path]:
        started.append(subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True,
                                        env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(user_tmpdir)}))
        return started[-1], _in_tmpdir(Path(started[-1].stdout.readline().strip()), user_tmpdir)

    yield start
    for process in started:
        process.kill()
        process.wait()
        process.stdout.close()


def _in_tmpdir(made: Path, tmpdir: Path) -> Path:
    """The directory in TMPDIR that temporary_directory's `made` is in, or is."""
    return tmpdir / made.relative_to(tmpdir).parts[0]


def _killed(holders) -> Path:
    """The directory a HOLDER killed with SIGKILL left."""
    process, made = holders()
    process.kill()
    process.wait()
    assert made.is_dir()  # SIGKILL leaves it
    return made


def test_a_killed_runs_directory_goes_as_the_next_is_made_and_a_live_runs_stays(user_tmpdir, holders, caplog):
    """It stayed, for good."""
    _, live = holders()  # first: it would remove the other as it starts
    killed = _killed(holders)
    with caplog.at_level(logging.INFO, logger="mambapipe.pipeline.disk"):
        with temporary_directory("mambapipe-tokenizer-") as mine:
            assert sorted(user_tmpdir.iterdir()) == sorted([live, _in_tmpdir(mine, user_tmpdir)])
            assert list(mine.iterdir()) == []  # the block's alone
    assert caplog.messages == [f"removed 1 temporary directory of mambapipe runs killed outright from {user_tmpdir}: "
                               f"{killed.name}"]
    assert list(user_tmpdir.iterdir()) == [live]


def _of_another_user(made: Path) -> None:
    os.chown(made, os.getuid() + 1, -1)


def _of_another_host(made: Path) -> None:  # a TMPDIR two hosts share, where locks may not reach across
    (made / OWNER_FILE).write_text("another-host 123\n")


def _of_an_older_mambapipe(made: Path) -> None:
    (made / OWNER_FILE).unlink()


@pytest.mark.parametrize("whose", [
    pytest.param(_of_another_user, marks=pytest.mark.skipif(os.getuid() != 0, reason="chown to another user: root")),
    _of_another_host, _of_an_older_mambapipe,
], ids=["another user", "another host", "an older mambapipe"])
def test_a_killed_runs_directory_not_surely_ours_stays(user_tmpdir, holders, caplog, whose):
    killed = _killed(holders)
    whose(killed)
    with caplog.at_level(logging.INFO, logger="mambapipe.pipeline.disk"):
        with temporary_directory("mambapipe-ranks-"):
            pass
    assert list(user_tmpdir.iterdir()) == [killed] and caplog.messages == []


def test_a_directory_removed_meanwhile_by_another_run_leaves_the_others_to_be_removed(user_tmpdir, holders,
                                                                                      monkeypatch):
    """Two runs starting at once both remove the dead runs' directories: one that the other removed between listing
    TMPDIR and looking at its owner (lstat: FileNotFoundError) is gone, not a reason to remove no other. Before, that
    one error ended the whole removal, the killed run's directory left for good as far as this run went."""
    killed = _killed(holders)
    gone = user_tmpdir / "mambapipe-ranks-gone"
    gone.mkdir()
    real_scandir = os.scandir

    def scandir_racing_another_run(path):  # lists `gone` in TMPDIR, which the other run then removes
        if not isinstance(path, (str, Path)) or Path(path) != user_tmpdir:  # rmtree's listings
            return real_scandir(path)
        entries = list(real_scandir(path))
        gone.rmdir()
        return iter(entries)

    monkeypatch.setattr(os, "scandir", scandir_racing_another_run)
    remove_dead_runs_directories()
    assert not killed.exists()


def test_a_dead_runs_directory_that_cannot_be_removed_is_not_said_removed(user_tmpdir, holders, caplog, monkeypatch):
    """rmtree, told to ignore errors (another run may be removing the same directory), can leave one whole: a file
    held open on NFS (.nfsXXXX), a subdirectory without write permission. The log said every dead run's directory
    was removed, whether it was or not."""
    killed = _killed(holders)
    monkeypatch.setattr(shutil, "rmtree", lambda path, ignore_errors=False: None)  # removes nothing, says nothing
    with caplog.at_level(logging.INFO, logger="mambapipe.pipeline.disk"):
        remove_dead_runs_directories()
    assert killed.is_dir() and caplog.messages == []
