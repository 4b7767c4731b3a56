"""Registers the engine test fixtures; the helpers live in engine_support.py, imported by that unique name
because several test areas have a conftest.py and `from engine_support import` would pick whichever loaded first.
Speeds up Triton's interpreter, which the root conftest.py switches on without CUDA (triton_interpreter.py)."""

from engine_support import *  # noqa: F401,F403
from triton_interpreter import skip_repeated_language_patching

skip_repeated_language_patching()
