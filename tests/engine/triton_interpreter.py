"""Halves the time of the kernels under Triton's interpreter (TRITON_INTERPRET=1, the CPU's tests), with the same
results: the interpreter swaps triton.language's builtins for interpreted ones at each kernel launch (restoring
them after it), and again at every call of a @triton.jit helper inside the kernel, where they are already swapped.
Those repeated swaps, an inspect.getmembers over triton.language per call, were half of a scan kernel's time
(one 101-token scan of test_kernels_scan: 9.5 -> 4.5 s, its outputs bit-equal). Imported by the engine tests'
conftest.py and by tp_fused_rank.py, the subprocess ranks of test_engine_tp."""

from __future__ import annotations

import inspect
import os


def skip_repeated_language_patching() -> None:
    """Under the interpreter, make a helper's call patch triton.language only where its module sees a language
    module the running launch has not patched; a Triton without the internals this relies on is left as it is."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return
    import triton.language as tl
    from triton.runtime import interpreter

    patch_lang, empty_scope = getattr(interpreter, "_patch_lang", None), getattr(interpreter, "_LangPatchScope", None)
    if patch_lang is None or empty_scope is None or getattr(patch_lang, "skips_repeats", False):
        return
    if not tl.core.is_builtin(getattr(tl, "load", None)):  # the sign of a patched module below would not hold
        return

    def patch_unless_patched(fn):
        langs = [value for value in fn.__globals__.values() if inspect.ismodule(value) and value in (tl, tl.core)]
        # a patched module's builtins are the interpreter's plain functions; outside a launch they are builtins again
        if langs and not any(tl.core.is_builtin(lang.load) for lang in langs):
            return empty_scope()
        return patch_lang(fn)

    patch_unless_patched.skips_repeats = True
    interpreter._patch_lang = patch_unless_patched
