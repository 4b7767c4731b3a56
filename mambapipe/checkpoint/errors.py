"""The one exception the checkpoint package raises for bad input."""

from __future__ import annotations


class ConvertError(ValueError):
    """A user-facing failure: one line naming the file (and tensor) at fault and what to do."""
