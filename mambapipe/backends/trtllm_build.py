"""The `trtllm-build` command line for a Mamba checkpoint, and running it with its output streamed.

The command mirrors NVIDIA's Mamba example (trtllm-mamba-format.md §3):

    trtllm-build --checkpoint_dir C --paged_kv_cache disable --gemm_plugin auto \
        --max_batch_size 8 --max_input_len 924 --max_seq_len 1024 --output_dir O

The three Mamba plugin switches (`--paged_state`, `--mamba_conv1d_plugin`, `--remove_input_padding`) are
only written when the config departs from trtllm-build's own default, so the seed recipes produce the
seed's exact command. The cache key still holds the configured values and the tensorrt_llm version, so
a release that changed those defaults would rebuild rather than reuse. `--max_num_tokens` likewise appears
only when a full batch of the limits needs more than trtllm-build's default (`needed_max_num_tokens`).
"""

from __future__ import annotations

import collections
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any, Iterable, Optional

from mambapipe.backends.base import BuildSettings
from mambapipe.pipeline.step import StepError
from mambapipe.process_tree import run_tree

log = logging.getLogger("mambapipe.trtllm")

BUILD_EXECUTABLE = "trtllm-build"
# trtllm-build's defaults for the flags we only emit when the config differs (tensorrt_llm/plugin/plugin.py).
TRTLLM_BUILD_DEFAULTS: dict[str, Any] = {"paged_state": True, "mamba_conv1d_plugin": "auto",
                                         "remove_input_padding": True}
# trtllm-build's --max_num_tokens default (BuildConfig.max_num_tokens, tensorrt_llm/builder.py).
TRTLLM_DEFAULT_MAX_NUM_TOKENS = 8192
# In the build key (TrtllmBackend.environment): bump it when the command for the same config changes, so that an
# engine an older command built is not served as this one's. 2: --max_num_tokens for batches above the default.
BUILD_FLAGS_VERSION = 2
# Our config's defaults (config.BuildConfig), used when BuildSettings.options leaves a key out.
OPTION_DEFAULTS: dict[str, Any] = {**TRTLLM_BUILD_DEFAULTS, "gemm_plugin": "auto"}
PLUGIN_DTYPES = ("auto", "float16", "bfloat16", "float32", "disable")
GEMM_PLUGIN_CHOICES = PLUGIN_DTYPES + ("fp8",)
# "Traceback (most recent call last)" is never the informative line; the exception line after it is.
_ERROR_LINE = re.compile(r"error|exception|assert|failed", re.IGNORECASE)
_TAIL_LINES = 50  # the last output lines searched for the error a failed trtllm-build reports in one line


def build_options(settings: BuildSettings) -> dict[str, Any]:
    """The four trtllm plugin settings from `settings.options` (keys as in config.BuildConfig, e.g.
    "paged_state"; the build step fills them from build.*), checked; raises StepError."""
    options = {key: settings.options.get(key, default) for key, default in OPTION_DEFAULTS.items()}
    _check_options(options)
    return options


def _check_options(options: dict[str, Any]) -> None:
    conv = options["mamba_conv1d_plugin"]
    if conv not in PLUGIN_DTYPES:
        raise StepError(f"build.mamba_conv1d_plugin={conv!r} is not one of {list(PLUGIN_DTYPES)}; fix the value")
    if options["gemm_plugin"] not in GEMM_PLUGIN_CHOICES:
        raise StepError(f"build.gemm_plugin={options['gemm_plugin']!r} is not one of {list(GEMM_PLUGIN_CHOICES)}; "
                        "fix the value")
    # TensorRT-LLM asserts both features on the conv1d plugin (builder.py, §3): refuse before building.
    needs_plugin = [k for k in ("paged_state", "remove_input_padding") if options[k]]
    if conv == "disable" and needs_plugin:
        settings = " and ".join(f"build.{k}=false" for k in needs_plugin)
        raise StepError(f"build.mamba_conv1d_plugin=disable needs {settings} "
                        "(TensorRT-LLM requires the conv1d plugin for paged state and packed input)")


def _switch(enabled: bool) -> str:
    return "enable" if enabled else "disable"


def needed_max_num_tokens(settings: BuildSettings) -> Optional[int]:
    """The --max_num_tokens a full batch of the limits needs (max_batch_size prompts of max_input_len tokens),
    None where trtllm-build's default holds it or the flag means nothing; raises StepError for bad plugin settings.

    With packed input (remove_input_padding) and paged state, the engine ModelRunnerCpp runs, one engine step takes
    at most max_num_tokens prompt tokens (the input_ids profile, tensorrt_llm/models/generation_mixin.py), and the
    scheduler leaves the prompts that do not fit for later steps (cpp/tensorrt_llm/batch_manager/
    microBatchScheduler.cpp): a larger batch would be prefilled a few prompts at a time and timed as something
    other than one batch. trtllm-build keeps its default whatever the limits (check_max_num_tokens,
    tensorrt_llm/_common.py), and ignores the flag without packed input."""
    packed_batch_tokens = settings.max_batch_size * settings.max_input_len
    if not build_options(settings)["remove_input_padding"] or packed_batch_tokens <= TRTLLM_DEFAULT_MAX_NUM_TOKENS:
        return None
    return packed_batch_tokens


def trtllm_build_command(checkpoint_dir: Path, output_dir: Path, settings: BuildSettings) -> list[str]:
    """argv for `trtllm-build`, in the seed's flag order; raises StepError for bad plugin settings."""
    options = build_options(settings)
    cmd = [BUILD_EXECUTABLE, "--checkpoint_dir", str(checkpoint_dir), "--paged_kv_cache", "disable",
           "--gemm_plugin", str(options["gemm_plugin"]),
           "--max_batch_size", str(settings.max_batch_size), "--max_input_len", str(settings.max_input_len),
           "--max_seq_len", str(settings.max_seq_len)]
    max_num_tokens = needed_max_num_tokens(settings)
    if max_num_tokens is not None:
        cmd += ["--max_num_tokens", str(max_num_tokens)]
    for key in ("paged_state", "mamba_conv1d_plugin", "remove_input_padding"):
        value = options[key]
        if value != TRTLLM_BUILD_DEFAULTS[key]:
            cmd += [f"--{key}", _switch(value) if isinstance(value, bool) else str(value)]
    return cmd + ["--output_dir", str(output_dir)]


def describe_build(checkpoint_dir: Path, output_dir: Path, settings: BuildSettings) -> list[str]:
    """Plan lines: the exact shell-quoted command the build step will run."""
    return [shlex.join(trtllm_build_command(checkpoint_dir, output_dir, settings))]


def run_build_command(cmd: list[str], cwd: Path) -> None:
    """Run `cmd` in `cwd`, logging each output line as it arrives; raise StepError on failure.

    `cwd` is the staging dir so trtllm-build's timing cache (`model.cache`, written to the working
    directory by default) lands in the artifact instead of the user's current directory."""
    log.info("running: %s", shlex.join(cmd))
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)

    def log_line(line: str) -> None:
        line = line.rstrip()
        log.info("[trtllm-build] %s", line)
        if line.strip():
            tail.append(line.strip())

    try:
        code = run_tree(cmd[0], cmd, "stdout", log_line, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, bufsize=1, errors="replace", env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except FileNotFoundError as err:
        found = shutil.which(cmd[0])
        if found:  # on PATH, yet it cannot start: a script whose interpreter (a moved venv) is gone
            raise StepError(f"{found} cannot be started ({err.strerror}: its interpreter or a library is missing); "
                            "reinstall TensorRT-LLM") from None
        raise StepError(f"{cmd[0]} is not on PATH; install TensorRT-LLM (pip install -e '.[trtllm]' "
                        "--extra-index-url https://pypi.nvidia.com) or use backend=native") from None
    if code < 0:  # a signal's doing, not trtllm-build's: its last lines say nothing of it
        name = signal.Signals(-code).name
        cause = ", most likely by the out-of-memory killer" if name == "SIGKILL" else ""
        raise StepError(f"{cmd[0]} was killed by {name}{cause}; its output so far is in the run log")
    if code != 0:
        raise StepError(f"{cmd[0]} exited with code {code}: {last_error_line(tail)} (full output in the run log)")


def last_error_line(lines: Iterable[str]) -> str:
    """The last line that looks like an error, else the last line, else a placeholder."""
    lines = list(lines)
    for line in reversed(lines):
        if _ERROR_LINE.search(line):
            return line
    return lines[-1] if lines else "(no output)"
