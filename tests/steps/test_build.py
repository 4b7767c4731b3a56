"""The build step: plan-time refusals, and a real native build from a convert-step checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mambapipe.backends import get_backend
from mambapipe.checkpoint.convert import convert_checkpoint
from mambapipe.engine.api import load_engine
from mambapipe.engine.build import resolve_ssm_state_dtype
from mambapipe.models import ModelSpec
from mambapipe.pipeline.plan import build_plan, upstream_params
from mambapipe.pipeline.resolve import resolve_config
from mambapipe.pipeline.step import StepContext, StepError
from mambapipe.pipeline.store import ArtifactStore
from mambapipe.steps import load_steps
from mambapipe.steps.build import STEP, TRTLLM_KEYS, settings_from
from mambapipe.synthetic import write_synthetic_checkpoint

SPEC = ModelSpec(mamba_version="Mamba2", hidden_size=32, num_layers=2, vocab_size=64, state_size=8,
                 head_dim=8, n_groups=2, chunk_size=8)


def _params(**changes) -> dict:
    params = {"dtype": "float32", "tp_size": 1, "backend": "native", "device": "cpu",
              "build.max_batch_size": 2, "build.max_input_len": 16, "build.max_seq_len": 24,
              "build.paged_state": True, "build.mamba_conv1d_plugin": "auto",
              "build.remove_input_padding": True, "build.gemm_plugin": "auto",
              "build.ssm_state_dtype": "auto", "model.arch.mamba_version": "Mamba2"}
    params.update({k.replace("__", "."): v for k, v in changes.items()})
    declared = (*STEP.uses, *STEP.extra_uses(params))  # as the plan selects them: nothing undeclared
    return {key: value for key, value in params.items() if key in declared}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    write_synthetic_checkpoint(SPEC, root / "hf", "float32", seed=0, progress=False)
    out = {}
    for tp in (1, 2):
        convert_checkpoint(root / "hf", root / f"tp{tp}", "float32", tp, progress=False)
        out[tp] = root / f"tp{tp}"
    return out


@pytest.mark.parametrize("changes,message", [
    (dict(build__max_input_len=30), "max_input_len=30 exceeds build.max_seq_len=24"),
    (dict(build__max_batch_size=0), "^build.max_batch_size must be >= 1, got 0$"),
    (dict(build__max_input_len=0, build__max_seq_len=-1),
     "^build.max_input_len must be >= 1, got 0; build.max_seq_len must be >= 1, got -1$"),
    (dict(dtype="float64"), "dtype 'float64'"),
    (dict(build__ssm_state_dtype="float64"), "build.ssm_state_dtype='float64' is not one of"),
    (dict(backend="trtllm", build__ssm_state_dtype="float16"), "cannot honour build.ssm_state_dtype=float16"),
])
def test_check_refuses_limits_that_cannot_work(changes, message):
    with pytest.raises(StepError, match=message) as err:
        STEP.check(_params(**changes))
    assert "\n" not in str(err.value)


def test_a_limit_below_1_is_one_problem_naming_its_key(compose_config, tmp_path):
    """It was two, neither naming the key to change: 'build: build limits must be >= 1 (max_batch_size=0,
    max_input_len=256, max_seq_len=288)' and evaluate's 'eval.batch_size 1 > build.max_batch_size 0; lower one or
    raise the other', of which lowering is no fix."""
    import io

    from rich.console import Console

    from mambapipe.pipeline.runner import run_recipe

    console = Console(file=io.StringIO(), width=400, color_system=None)
    result = run_recipe(compose_config("build.max_batch_size=0"), tmp_path / "run", console=console)
    assert result.reason == "build: build.max_batch_size must be >= 1, got 0"
    assert [line for line in console.file.getvalue().splitlines() if line.startswith("problem ")] == \
        ["problem build: build.max_batch_size must be >= 1, got 0"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_check_refuses_cuda_without_a_gpu():
    with pytest.raises(StepError, match="cuda"):
        STEP.check(_params(device="cuda"))


def test_check_refuses_an_unavailable_backend():
    reason = get_backend("trtllm").unavailable_reason("cpu")
    if reason is None:
        pytest.skip("TensorRT-LLM can run here")
    with pytest.raises(StepError) as err:
        STEP.check(_params(backend="trtllm"))
    assert str(err.value) == reason


def test_build_writes_a_loadable_engine(checkpoints, tmp_path):
    facts = STEP.run(_params(), {"convert": checkpoints[1]}, tmp_path / "engine", StepContext())
    assert facts["backend"] == "native" and facts["tp_size"] == 1
    cfg = json.loads((tmp_path / "engine" / "config.json").read_text())
    assert set(cfg) == {"version", "pretrained_config", "build_config"}
    assert cfg["build_config"]["max_seq_len"] == 24 and cfg["build_config"]["device"] == "cpu"
    assert ModelSpec.from_trtllm_config(cfg["pretrained_config"]) == SPEC
    out = load_engine(tmp_path / "engine").generate([[1, 2, 3], [4]], max_new_tokens=5)
    assert [len(t) for t in out.output_ids] == [5, 5]


def test_build_splits_weights_per_rank(checkpoints, tmp_path):
    STEP.run(_params(tp_size=2), {"convert": checkpoints[2]}, tmp_path / "e2", StepContext())
    from safetensors import safe_open

    for rank in (0, 1):
        with safe_open(str(tmp_path / "e2" / f"rank{rank}.safetensors"), "pt") as f:
            assert f.get_slice("layers.0.out_proj").get_shape() == [32, SPEC.intermediate_size // 2]
            assert f.get_slice("lm_head").get_shape() == [SPEC.vocab_size // 2, 32]


@pytest.mark.parametrize("show_progress", [True, False])
def test_build_shows_its_rank_bar_only_when_the_run_shows_progress(checkpoints, tmp_path, capsys, show_progress):
    """As the download and convert steps do: the run's StepContext decides, not the backend."""
    STEP.run(_params(tp_size=2), {"convert": checkpoints[2]}, tmp_path / "e2",
             StepContext(show_progress=show_progress))
    assert ("build ranks" in capsys.readouterr().err) == show_progress


def test_build_refuses_a_checkpoint_of_another_dtype_or_tp(checkpoints, tmp_path):
    with pytest.raises(StepError, match="rerun convert"):
        STEP.run(_params(dtype="float16"), {"convert": checkpoints[1]}, tmp_path / "x", StepContext())
    with pytest.raises(StepError, match="tp_size=1"):
        STEP.run(_params(tp_size=2), {"convert": checkpoints[1]}, tmp_path / "y", StepContext())


def test_the_native_build_refuses_a_residual_stream_in_the_model_dtype(checkpoints, tmp_path):
    """The engine adds every layer's output into a float32 residual; residual_in_fp32=false asks otherwise."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "rank0.safetensors").symlink_to(checkpoints[1] / "rank0.safetensors")
    config = json.loads((checkpoints[1] / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps(config | {"residual_in_fp32": False}))
    with pytest.raises(StepError, match="residual_in_fp32=false: the native engine keeps the residual stream in "
                                        "float32; build this checkpoint with backend=trtllm"):
        STEP.run(_params(), {"convert": ckpt}, tmp_path / "x", StepContext())
    assert not (tmp_path / "x" / "config.json").exists()


@pytest.mark.parametrize("content", [None, "{", "[]"])
def test_build_refuses_a_missing_or_broken_checkpoint_config(checkpoints, tmp_path, content):
    """The step and the native backend read the checkpoint's config.json through one reader."""
    broken = tmp_path / "ckpt"
    broken.mkdir()
    (broken / "rank0.safetensors").symlink_to(checkpoints[1] / "rank0.safetensors")
    if content is not None:
        (broken / "config.json").write_text(content)
    for build in (lambda: STEP.run(_params(), {"convert": broken}, tmp_path / "x", StepContext()),
                  lambda: get_backend("native").build(broken, tmp_path / "y", settings_from(_params()))):
        with pytest.raises(StepError, match=r"config\.json.*not a TensorRT-LLM checkpoint; rerun the convert step "
                                            r"\(force=\[convert\]\)") as err:
            build()
        assert str(broken) in str(err.value) and "\n" not in str(err.value)


def test_load_engine_refuses_a_broken_engine_config(checkpoints, tmp_path):
    STEP.run(_params(), {"convert": checkpoints[1]}, tmp_path / "engine", StepContext())
    (tmp_path / "engine" / "config.json").write_text('{"version": ')
    with pytest.raises(StepError, match=r"engine/config\.json is not valid JSON .*: not an engine directory; "
                                        r"rerun the build step \(force=\[build\]\)"):
        load_engine(tmp_path / "engine")


def test_plan_hooks_describe_the_build(checkpoints, tmp_path):
    assert STEP.environment(_params())["engine_format"]
    (line,) = STEP.describe(_params(), {"convert": checkpoints[1]}, tmp_path / "engine")
    assert "max_seq_len=24" in line


@pytest.mark.parametrize("setting,resolved", [("auto", "float32"), ("bfloat16", "bfloat16")])
def test_build_records_the_resolved_state_dtype(checkpoints, tmp_path, setting, resolved):
    facts = STEP.run(_params(build__ssm_state_dtype=setting), {"convert": checkpoints[1]}, tmp_path / "engine",
                     StepContext())
    build = json.loads((tmp_path / "engine" / "config.json").read_text())["build_config"]
    assert build["ssm_state_dtype"] == facts["ssm_state_dtype"] == resolved
    assert load_engine(tmp_path / "engine").state.ssm.dtype == getattr(torch, resolved)


def test_an_engine_config_with_the_removed_fused_conv_ssm_key_still_loads(checkpoints, tmp_path):
    STEP.run(_params(), {"convert": checkpoints[1]}, tmp_path / "engine", StepContext())
    expected = load_engine(tmp_path / "engine").generate([[1, 2, 3]], max_new_tokens=4).output_ids
    config = tmp_path / "engine" / "config.json"
    engine_cfg = json.loads(config.read_text())
    engine_cfg["build_config"]["fused_conv_ssm"] = True  # as native-2 engines built before its removal
    config.write_text(json.dumps(engine_cfg))
    assert load_engine(tmp_path / "engine").generate([[1, 2, 3]], max_new_tokens=4).output_ids == expected


def test_auto_state_dtype_is_the_model_dtype_on_cuda_and_fp32_on_the_cpu():
    assert resolve_ssm_state_dtype("auto", "float16", "cuda") == "float16"
    assert resolve_ssm_state_dtype("auto", "bfloat16", "cpu") == "float32"
    assert resolve_ssm_state_dtype("float32", "float16", "cuda") == "float32"


def test_load_engine_refuses_an_unknown_kernel_choice(checkpoints, tmp_path):
    STEP.run(_params(), {"convert": checkpoints[1]}, tmp_path / "engine", StepContext())
    with pytest.raises(RuntimeError, match="kernels='triton' is not one of"):
        load_engine(tmp_path / "engine", kernels="triton")


def _plan(compose_config, *overrides):
    resolved = resolve_config(compose_config("device=cpu", *overrides))
    return build_plan(resolved, load_steps(), ArtifactStore(resolved.config["cache_dir"]))


@pytest.mark.parametrize("override", ["build.ssm_state_dtype=float16", "build.ssm_state_dtype=bfloat16"])
def test_engine_options_are_in_the_build_and_evaluate_keys(compose_config, override):
    base, changed = _plan(compose_config), _plan(compose_config, override)
    assert base.problems == [] and changed.problems == []
    keys = {p.name: (p.key, changed.get(p.name).key) for p in base.steps}
    assert keys["convert"][0] == keys["convert"][1]
    assert keys["build"][0] != keys["build"][1] and keys["evaluate"][0] != keys["evaluate"][1]


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_an_explicit_state_dtype_that_auto_resolves_to_keys_as_auto(compose_config, dtype):
    """On the CPU auto is float32 whatever the model dtype: typing it builds the same engine, so it is cached."""
    auto = _plan(compose_config, "backend=native", f"dtype={dtype}")
    _store_artifact(auto, "build")
    explicit = _plan(compose_config, "backend=native", f"dtype={dtype}", "build.ssm_state_dtype=float32")
    assert explicit.problems == []
    assert explicit.get("build").key == auto.get("build").key and explicit.get("build").action == "cached"
    assert explicit.get("evaluate").key == auto.get("evaluate").key
    other = _plan(compose_config, "backend=native", f"dtype={dtype}", "build.ssm_state_dtype=bfloat16").get("build")
    assert other.key != auto.get("build").key and other.reason == "closest cached: build.ssm_state_dtype auto→bfloat16"


TRTLLM_FLAGS = ["build.paged_state=false", "build.mamba_conv1d_plugin=disable", "build.remove_input_padding=false",
                "build.gemm_plugin=float16"]


@pytest.mark.parametrize("override", TRTLLM_FLAGS)
def test_trtllm_flags_leave_a_native_build_cached(compose_config, override):
    base = _plan(compose_config, "backend=native")
    assert not set(TRTLLM_KEYS) & base.get("build").params.keys()  # the native build never sees them
    _store_artifact(base, "build")
    changed = _plan(compose_config, "backend=native", override)
    assert changed.get("build").key == base.get("build").key and changed.get("build").action == "cached"
    assert changed.get("evaluate").key == base.get("evaluate").key


@pytest.mark.parametrize("override", TRTLLM_FLAGS)
def test_trtllm_flags_are_in_the_trtllm_build_key(compose_config, override):
    base = _plan(compose_config, "backend=trtllm")  # plans (with an "unavailable" problem) without TensorRT-LLM
    _store_artifact(base, "build")
    changed = _plan(compose_config, "backend=trtllm", override).get("build")
    key, value = override.split("=")
    old = base.get("build").params[key]
    assert changed.key != base.get("build").key and changed.action == "run"
    assert changed.reason == f"closest cached: {key} {old}→{value.replace('false', 'False')}"


@pytest.mark.parametrize("backend", ["native", "trtllm"])
def test_a_changed_limit_is_explained_on_either_backend(compose_config, backend):
    base = _plan(compose_config, f"backend={backend}")
    _store_artifact(base, "build")
    changed = _plan(compose_config, f"backend={backend}", "build.max_batch_size=16").get("build")
    old = base.get("build").params["build.max_batch_size"]
    assert changed.action == "run" and changed.reason == f"closest cached: build.max_batch_size {old}→16"


def _store_artifact(plan, name: str) -> None:
    """Put a complete artifact of `name` under its planned key, as the runner would after running it."""
    planned = plan.get(name)
    staging = plan.store.new_staging(name, planned.key)
    plan.store.commit(staging, name, planned.key, {"step": name, "key": planned.key, "version": planned.step.version,
                                                   "params": planned.params, "inputs": planned.inputs,
                                                   "upstream": upstream_params(plan.steps, planned),
                                                   "environment": planned.environment, "created": "2026-11-30"})


def test_a_mistyped_state_dtype_fails_at_compose(compose_config):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose_config("build.ssm_state_dtype=fp8")


@pytest.mark.parametrize("state_dtype", ["float16", "float32"])  # float32: what native's auto is on the CPU
def test_the_plan_refuses_native_options_on_trtllm(compose_config, state_dtype):
    problems = _plan(compose_config, "backend=trtllm", f"build.ssm_state_dtype={state_dtype}").problems
    assert any(f"cannot honour build.ssm_state_dtype={state_dtype}" in p for p in problems), problems


def test_device_cuda_without_a_gpu_is_named_once(compose_config, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    problems = _plan(compose_config, "device=cuda", "tp_size=3").problems
    assert problems[0] == "device=cuda but torch sees no CUDA device; use device=cpu or device=auto"
    assert sum("CUDA" in p for p in problems) == 1, problems  # not again by the build step's checks
    assert any(p.startswith("convert: tp_size=3 does not fit") for p in problems), problems  # others still shown


def test_trtllm_refuses_a_split_mamba1_at_plan_time(compose_config):
    """TensorRT-LLM's Mamba1 layer asserts tp_size == 1; the native engine splits Mamba1 (and TensorRT-LLM Mamba2)."""
    problems = _plan(compose_config, "model=tiny_mamba", "tp_size=2", "backend=trtllm").problems
    assert "build: backend=trtllm cannot split a Mamba1 model (tp_size=2): TensorRT-LLM runs Mamba1 on one GPU only; " \
           "use tp_size=1, or backend=native" in problems
    for overrides in (("model=tiny_mamba", "tp_size=2", "backend=native"), ("model=tiny_mamba2", "tp_size=2",
                                                                            "backend=trtllm")):
        assert not any("cannot split" in p for p in _plan(compose_config, *overrides).problems)
