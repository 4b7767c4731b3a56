"""backend=trtllm through the real runner: without TensorRT-LLM the run stops before any work; with it or
without, plan_only prints the exact trtllm-build line for the build step."""

from __future__ import annotations

import importlib.util
import io

import pytest
from rich.console import Console

import mambapipe.backends.trtllm as trtllm
from mambapipe.pipeline.runner import run_recipe


def quiet_console() -> Console:
    return Console(file=io.StringIO(), width=400, color_system=None)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_llm") is not None, reason="needs a machine without it")
def test_missing_tensorrt_llm_stops_the_run_before_any_work(compose_config, tmp_path):
    cfg = compose_config("recipe=quickstart", "backend=trtllm")
    result = run_recipe(cfg, tmp_path / "run", console=quiet_console())
    assert result.failed
    assert result.reason.startswith("build: backend=trtllm needs TensorRT-LLM, which is not installed: pip install")
    assert "backend=native" in result.reason
    assert [o.status for o in result.outcomes] == ["skipped", "skipped", "failed", "skipped"]
    assert not any(p.is_dir() and any(p.iterdir()) for p in (tmp_path / "cache").glob("*/*"))  # no artifact


def test_plan_only_prints_the_trtllm_build_line(compose_config, tmp_path, monkeypatch):
    monkeypatch.setattr(trtllm, "unavailable_reason", lambda device: None)  # as on a GPU box with TensorRT-LLM
    cfg = compose_config("recipe=mamba_130m", "backend=trtllm", "model.source=synthetic", "eval.dataset=sample",
                         "plan_only=true")  # synthetic and sample: no hub commits to resolve
    console = quiet_console()
    result = run_recipe(cfg, tmp_path / "run", console=console)
    assert not result.failed
    text = console.file.getvalue()
    line = next(row for row in text.splitlines() if "trtllm-build" in row)
    assert (f"trtllm-build --checkpoint_dir {tmp_path / 'cache' / 'convert'}/") in line
    assert ("--paged_kv_cache disable --gemm_plugin auto --max_batch_size 8 --max_input_len 924 --max_seq_len 1024 "
            f"--output_dir {tmp_path / 'cache' / 'build'}/") in line


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_llm") is not None, reason="needs a machine without it")
def test_plan_only_without_tensorrt_llm_shows_the_build_line_beside_the_install_problem(compose_config, tmp_path):
    cfg = compose_config("recipe=mamba_130m", "backend=trtllm", "model.source=synthetic", "eval.dataset=sample",
                         "plan_only=true")
    console = quiet_console()
    result = run_recipe(cfg, tmp_path / "run", console=console)
    lines = console.file.getvalue().splitlines()
    assert result.reason.startswith("build: backend=trtllm needs TensorRT-LLM")
    assert any(line.startswith("  build: trtllm-build --checkpoint_dir ") for line in lines)
    assert [line for line in lines if line.startswith("problem ")] == [f"problem {result.reason}"]


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_llm") is not None, reason="needs a machine without it")
def test_plan_only_without_a_gpu_still_says_how_to_install_tensorrt_llm(compose_config, tmp_path, monkeypatch):
    """The bench recipes ask for device=cuda: the run's own problem with it, which the build step's dtype check
    restates (and the plan leaves out), must not hide the build step's next problem."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = compose_config("recipe=bench_mamba_130m", "backend=trtllm", "plan_only=true")
    console = quiet_console()
    run_recipe(cfg, tmp_path / "run", console=console)
    problems = [line for line in console.file.getvalue().splitlines() if line.startswith("problem ")]
    assert problems[0] == "problem device=cuda but torch sees no CUDA device; use device=cpu or device=auto"
    assert any(line.startswith("problem build: backend=trtllm needs TensorRT-LLM, which is not installed: pip install")
               for line in problems), problems
    assert sum("CUDA device" in line for line in problems) == 1, problems


def test_a_description_that_fails_after_a_failed_check_adds_no_second_problem(compose_config, tmp_path, monkeypatch):
    from mambapipe.steps import build

    monkeypatch.setattr(trtllm, "unavailable_reason", lambda device: "no TensorRT-LLM here")
    monkeypatch.setattr(build.BuildStep, "describe", lambda *args: 1 / 0)
    cfg = compose_config("recipe=quickstart", "backend=trtllm", "plan_only=true")
    result = run_recipe(cfg, tmp_path / "run", console=quiet_console())
    assert result.reason == "build: no TensorRT-LLM here"
