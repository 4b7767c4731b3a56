"""The run's log file, mambapipe.log in its run directory: a logging.FileHandler that a full disk stops in one line.

logging's handlers report a write that failed by printing "--- Logging error ---" and a traceback with the record
(Handler.handleError); on a full disk that is every record from then on. This one says it once on standard error,
naming the file and what to do, and writes no more to it: the console handler still shows every record. Selected in
configs/hydra/job_logging/mambapipe.yaml for a run, and by mambapipe.sweep.child for a sweep job's process.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import suppress
from typing import Optional

from rich.markup import escape

from mambapipe.pipeline.disk import RELOCATE_RUN_DIR, full_disk
from mambapipe.pipeline.report import make_console, print_diagnostic


class RunLogHandler(logging.FileHandler):
    """logging.FileHandler, but for a disk that fills under it: one line, and the file left as far as it got."""

    full: Optional[str] = None  # what the full disk said, once it did

    def emit(self, record: logging.LogRecord) -> None:
        if self.full is None:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        said = full_disk(sys.exc_info()[1])
        if said is None:
            super().handleError(record)
            return
        self.full = said
        stream, self.stream = self.stream, None
        with suppress(OSError):  # its buffer, which the disk has no room for, goes with it
            stream.close()
        print_diagnostic(make_console(stderr=True),
                         f"[yellow]WARNING[/] {said} writing the log {escape(self.baseFilename)}: the log goes on on "
                         f"standard error only; free space in {escape(os.path.dirname(self.baseFilename))}, or "
                         f"{RELOCATE_RUN_DIR}")
