"""Where a run came from: package versions, the git commit of the mambapipe source and whether it had changes, and the
machine; and each as the line a summary shows."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

PACKAGES = ("mambapipe", "torch", "transformers", "tokenizers", "safetensors", "huggingface_hub",
            "hydra-core", "omegaconf", "datasets", "rouge-score", "tensorrt_llm")
SHOWN_PACKAGES = ("torch", "transformers", "tensorrt_llm")  # of PACKAGES, those a summary names beside mambapipe
SOURCE = Path(__file__).resolve().parents[2]  # the checkout mambapipe is imported from, where it is one


def versions() -> dict[str, str]:
    """Installed versions of the packages that shape the artifacts (absent ones left out)."""
    found = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def installed_version(package: str = "mambapipe") -> str:
    """`package`'s installed version, for --version; 'unknown' where it is not installed (a checkout on PYTHONPATH)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def git_state(source: Optional[Path] = None) -> dict[str, Any]:
    """`git_commit`, HEAD of the checkout mambapipe is imported from, and `git_dirty`, whether its tracked files differ
    from that commit (the commit alone names code that may not be what ran); both None outside a git checkout.
    Untracked files are left out: looking for them walks every directory of the checkout, outputs/ and multirun/
    included, which grow with every run; the tracked files take ~10 ms."""
    source = source or SOURCE
    commit = _git(source, "rev-parse", "HEAD")
    if not commit:
        return {"git_commit": None, "git_dirty": None}
    changes = _git(source, "status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": None if changes is None else changes != ""}


def _git(source: Path, *arguments: str) -> Optional[str]:
    """What the git command prints, stripped; None where it fails or there is no git. Without git's optional locks:
    `git status` would otherwise take the index's lock to refresh it, and a `git commit` the user runs meanwhile
    would fail on it."""
    try:
        out = subprocess.run(["git", "-C", str(source), *arguments], capture_output=True, text=True, timeout=5,
                             check=True, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def machine(device: Optional[str]) -> dict[str, Any]:
    """The host, its CPU model and the CPUs this process may use, and the CUDA devices visible to a run on `cuda`
    (by name; none for a CPU run, whatever the host has): what speed numbers need beside them to be compared."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()  # Linux: a job's own
    return {"host": socket.gethostname(), "cpu": _cpu_model(), "cpus": cpus,
            "cuda_devices": _cuda_devices() if device == "cuda" else []}


def _cpu_model() -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as cpuinfo:  # Linux; platform.processor() says only "x86_64" there
            found = next((line for line in cpuinfo if line.startswith("model name")), None)
    except OSError:
        found = None
    return found.partition(":")[2].strip() if found else platform.processor() or None


def _cuda_devices() -> list[str]:
    """Names of the visible CUDA devices. torch reads them without making a CUDA context (on an H200, nvidia-smi
    lists no process after it), so a tp_size > 1 run, whose ranks hold the GPUs, loses no GPU memory to this one."""
    import torch  # imported already: resolving device=cuda asked torch for a GPU

    try:
        return [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
    except (RuntimeError, AssertionError):  # a driver that fails to start: the run has said so already
        return []


def software_line(record: dict[str, Any]) -> str:
    """`mambapipe 0.1.0 (git 0f45781e1463, dirty), torch 2.13.0+cpu, transformers 5.24.0`: what a run.json says of
    the code that ran (tensorrt_llm too where installed)."""
    versions = record.get("versions") if isinstance(record.get("versions"), dict) else {}
    commit, dirty = record.get("git_commit"), record.get("git_dirty")
    state = {True: ", dirty", False: ", clean"}.get(dirty, "")  # None: not known (a run.json older than git_dirty)
    git = f"git {commit[:12]}{state}" if isinstance(commit, str) else "no git"
    others = [f"{name} {versions[name]}" for name in SHOWN_PACKAGES if name in versions]
    return ", ".join([f"mambapipe {versions.get('mambapipe', '(version unknown)')} ({git})", *others])


def machine_line(record: dict[str, Any]) -> Optional[str]:
    """`vm: AMD EPYC (2 CPUs), 2 × NVIDIA H200`: what a run.json says of the machine; None where it says nothing (a
    run.json older than that record)."""
    found = record.get("machine")
    if not isinstance(found, dict):
        return None
    cpu = f"{found.get('cpu') or 'CPU'} ({found.get('cpus') or '?'} CPUs)"
    devices = [str(name) for name in found.get("cuda_devices") or [] if name]
    gpus = [f"{devices.count(name)} × {name}" for name in dict.fromkeys(devices)]
    return f"{found.get('host')}: {', '.join([cpu, *gpus])}"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def utc_minute(stamp: str) -> str:
    """`2026-11-30 23:31 UTC` of a utc_now() stamp; the stamp as it is where it is not one."""
    try:
        return datetime.fromisoformat(stamp).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError):
        return str(stamp)
