"""A Ctrl-C, remembered as well as raised.

Python raises KeyboardInterrupt where the main thread happens to be when SIGINT arrives, and drops it, with an
"Exception ignored" line, where that is an object's `__del__` (a regex group, a file being closed). Seen by QA: a
Ctrl-C during the download step so dropped, and the run went on through every step to exit 0. The handler here
raises as Python's does and also remembers, and the runner starts no further step once it has seen one.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Optional

_received = False


def watch() -> None:
    """Handle SIGINT from here on (mambapipe.cli calls this first)."""
    signal.signal(signal.SIGINT, _remember_and_raise)


def received() -> bool:
    """Whether a Ctrl-C reached this process since watch()."""
    return _received


def _remember_and_raise(signum: int, frame: Optional[FrameType]) -> None:
    global _received
    _received = True
    raise KeyboardInterrupt
