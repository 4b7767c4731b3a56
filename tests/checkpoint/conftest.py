"""Registers the checkpoint test fixtures; the helpers live in checkpoint_support.py, imported by that unique name
because several test areas have a conftest.py and `from checkpoint_support import` would pick whichever loaded first."""

from checkpoint_support import *  # noqa: F401,F403
