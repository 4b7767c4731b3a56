"""Registers the sweep test fixtures; the helpers live in sweep_support.py, imported by that unique name
because several test areas have a conftest.py and `from sweep_support import` would pick whichever loaded first."""

from sweep_support import *  # noqa: F401,F403
