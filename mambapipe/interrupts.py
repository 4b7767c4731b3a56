"""A Ctrl-C, remembered as well as raised.

Python raises KeyboardInterrupt where the main thread happens to be when SIGINT arrives, and drops it, with an
"Exception ignored" line, where that is an object's `__del__` (a regex group, a file being closed). Seen by QA: a
Ctrl-C during the download step so dropped, and the run went on through every step to exit 0. The handler here
raises as Python's does and also remembers, and the runner starts no further step once it has seen one.

Nor may a Ctrl-C stop an import halfway: `deferred()` holds it until the import is done (see there). And once
the process reports one and exits, `ignore_from_here()` makes sure it exits 130, not killed by SIGINT.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from types import FrameType
from typing import Iterator, Optional

_received = False
_deferring = 0  # how many deferred() blocks are running (nested ones count each)
_held = False  # a Ctrl-C came while one was


def watch() -> None:
    """Handle SIGINT from here on (mambapipe.cli calls this first)."""
    signal.signal(signal.SIGINT, _remember_and_raise)


def received() -> bool:
    """Whether a Ctrl-C reached this process since watch()."""
    return _received


@contextmanager
def deferred() -> Iterator[None]:
    """Run the block whole: a Ctrl-C within it (once watch() handles SIGINT) is remembered, and raised as
    KeyboardInterrupt as the block ends. For the imports of torch, numpy, datasets and the like: stopped halfway,
    they leave modules half-imported behind and do not always let the KeyboardInterrupt out (QA: a Ctrl-C in
    numpy's import, which torch's swallowed, and the plan then failed with a RecursionError in numpy, exit 1)."""
    global _deferring, _held
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if _held and not _deferring:
            _held = False
            raise KeyboardInterrupt


def ignore_from_here() -> None:
    """Ignore Ctrl-C from here on, in a process whose outcome is decided and that only reports it and exits: a
    Ctrl-C would cut the report short, or come during the interpreter's shutdown (a second, after torch), where
    Python has put back SIGINT's default action, death by the signal, in place of a handler of its own like ours.
    Also forget a Ctrl-C that went through code run by exec() (a dataclass's or namedtuple's methods, which torch's
    import makes by the hundred): CPython 3.10 to 3.13 mark it as one nothing caught, and `python -m` then ends by
    SIGINT in place of exit 130 (QA: 3 of ~25 Ctrl-Cs); each exec() of a string clears that mark as it starts."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exec("")


def _remember_and_raise(signum: int, frame: Optional[FrameType]) -> None:
    global _received, _held
    _received = True
    if _deferring:
        _held = True
        return
    raise KeyboardInterrupt
