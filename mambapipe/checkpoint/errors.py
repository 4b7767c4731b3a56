"""The exceptions the checkpoint package raises for bad input."""

from __future__ import annotations

from pathlib import Path


class ConvertError(ValueError):
    """A user-facing failure: one line naming the file (and tensor) at fault and what to do."""


class DamagedFileError(ConvertError):
    """A file of the checkpoint is cut short or corrupt: only a good copy of it helps. `path` and `problem`
    are kept apart so that a caller knowing where the file came from can name it and say how to get one."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}; re-download it")
        self.path, self.problem = Path(path), problem


class UnreadableError(ConvertError):
    """A file or directory this process may not read: its fix, to make it readable, holds wherever it came from,
    so a caller that adds its own fix to other errors leaves this one as it is."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"{path}: cannot be read ({reason}); make it readable")
