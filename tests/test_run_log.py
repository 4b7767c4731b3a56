"""The run's log file on a full disk: /dev/full, where every write is an ENOSPC, stands for it."""

from __future__ import annotations

import logging
import os

import pytest

from mambapipe.run_log import RunLogHandler

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")


def test_a_full_disk_under_the_log_is_one_line_not_a_traceback_per_record(capsys):
    handler = RunLogHandler("/dev/full")
    logger = logging.getLogger("test_run_log")
    logger.addHandler(handler)
    try:
        for n in range(3):
            logger.warning("record %d", n)
    finally:
        logger.removeHandler(handler)
        handler.close()  # its stream is gone already: nothing left to fail
    assert capsys.readouterr().err == (
        "WARNING no space left on device writing the log /dev/full: the log goes on on standard error only; free "
        "space in /dev, or set hydra.run.dir (hydra.sweep.dir for a sweep) to a directory on a disk with room\n")


def test_another_error_is_reported_as_logging_reports_it(tmp_path, capsys):
    handler = RunLogHandler(tmp_path / "run.log")
    handler.emit(logging.makeLogRecord({"msg": "%d", "args": ("not a number",)}))
    handler.close()
    assert "--- Logging error ---" in capsys.readouterr().err
