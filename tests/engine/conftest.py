"""Registers the engine test fixtures; the helpers live in engine_support.py, imported by that unique name
because several test areas have a conftest.py and `from engine_support import` would pick whichever loaded first."""

from engine_support import *  # noqa: F401,F403
