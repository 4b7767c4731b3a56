"""When backend=trtllm can run, and what it says when it cannot (this machine has no TensorRT-LLM)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

import mambapipe.backends.trtllm as trtllm
from mambapipe.backends import get_backend, resolve_backend

HAS_TRTLLM = importlib.util.find_spec("tensorrt_llm") is not None


@pytest.mark.skipif(HAS_TRTLLM, reason="checks the message for machines without tensorrt_llm")
def test_missing_tensorrt_llm_says_how_to_install_or_use_native():
    for device in ("cpu", "cuda"):
        reason = get_backend("trtllm").unavailable_reason(device)
        assert "pip install -e '.[trtllm]' --extra-index-url https://pypi.nvidia.com" in reason
        assert "backend=native" in reason and "\n" not in reason
    assert resolve_backend("auto", "cuda")[0] == "native"


def test_each_missing_piece_is_named(monkeypatch):
    monkeypatch.setattr(trtllm.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(trtllm.torch.cuda, "is_available", lambda: False)
    assert trtllm.unavailable_reason("cpu") == "backend=trtllm needs a CUDA GPU (device is cpu); use backend=native"
    monkeypatch.setattr(trtllm.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(trtllm.shutil, "which", lambda name: None)
    reason = trtllm.unavailable_reason("cuda")
    assert reason.startswith("trtllm-build is not on PATH although tensorrt_llm is installed")
    monkeypatch.setattr(trtllm.shutil, "which", lambda name: "/usr/bin/trtllm-build")
    assert trtllm.unavailable_reason("cuda") is None


def test_environment_keys_feed_the_build_cache_key(monkeypatch):
    monkeypatch.setattr(trtllm.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(trtllm.torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(trtllm, "_version", lambda dist: {"tensorrt_llm": "0.18.0"}.get(dist))
    monkeypatch.setattr(trtllm, "_tensorrt_version", lambda: "10.8.0.43")
    assert trtllm.BACKEND.environment() == {"tensorrt_llm": "0.18.0", "tensorrt": "10.8.0.43",
                                            "gpu_compute_capability": "9.0", "trtllm_build_flags": 2}


def test_importing_the_backend_does_not_import_tensorrt_llm():
    code = ("import sys, mambapipe.backends.trtllm as t; t.BACKEND.environment(); "
            "assert not any(m.split('.')[0] in ('tensorrt_llm', 'tensorrt') for m in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_auto_picks_trtllm_only_where_it_can_run(monkeypatch):
    import mambapipe.backends as backends

    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(backends.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert resolve_backend("auto", "cpu") == ("native", "auto: device is cpu, TensorRT-LLM needs a GPU")
    assert resolve_backend("auto", "cuda")[0] == "trtllm"
    assert resolve_backend("native", "cuda") == ("native", "requested")
    monkeypatch.setattr(backends.shutil, "which", lambda name: None)
    assert resolve_backend("auto", "cuda") == ("native", "auto: trtllm-build is not on PATH")
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: None)
    assert resolve_backend("auto", "cuda") == ("native", "auto: tensorrt_llm is not installed")
