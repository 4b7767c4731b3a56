"""Every shipped recipe and model config composes, type-checks, and yields a plan; bad keys and bad
values fail at compose time."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from unittest import mock

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import MISSING, OmegaConf

from mambapipe.config import ArchConfig, MambapipeConfig
from mambapipe.models import ModelSpec
from mambapipe.pipeline.plan import RUN, build_plan
from mambapipe.pipeline.resolve import resolve_config
from mambapipe.pipeline.store import ArtifactStore
from mambapipe.steps import load_steps

SEED_RECIPES = {"mamba_130m": ("mamba_130m", "float16", 1), "mamba_2p8b": ("mamba_2p8b", "bfloat16", 1),
                "mamba2_130m": ("mamba2_130m", "float16", 1), "mamba2_2p7b": ("mamba2_2p7b", "float16", 1),
                "codestral": ("codestral_7b", "float16", 1), "codestral_tp2": ("codestral_7b", "float16", 2)}
# (mamba_version, hidden, layers, vocab, state, n_groups, tied), trtllm-mamba-format.md §2
REAL_SHAPES = {"mamba_130m": ("Mamba1", 768, 24, 50280, 16, 1, True),
               "mamba_2p8b": ("Mamba1", 2560, 64, 50280, 16, 1, True),
               "mamba2_130m": ("Mamba2", 768, 24, 50288, 128, 1, True),
               "mamba2_2p7b": ("Mamba2", 2560, 64, 50288, 128, 1, True),
               "codestral_7b": ("Mamba2", 4096, 64, 32768, 128, 8, False)}
REPO = Path(__file__).resolve().parent.parent
RECIPES = sorted(p.stem for p in (REPO / "recipes").glob("*.yaml"))
MODELS = sorted(p.stem for p in (REPO / "configs" / "model").glob("*.yaml"))
FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def plan_for(cfg):
    resolved = resolve_config(cfg)
    with mock.patch("mambapipe.steps.download.resolve_commit", return_value=FAKE_COMMIT), \
         mock.patch("mambapipe.steps.evaluate.hub_commit", return_value=FAKE_COMMIT):
        return build_plan(resolved, load_steps(), ArtifactStore(resolved.config["cache_dir"]))


def test_the_issue_names_are_all_shipped():
    assert set(SEED_RECIPES) | {"quickstart"} <= set(RECIPES)
    assert set(REAL_SHAPES) | {"tiny_mamba", "tiny_mamba2"} <= set(MODELS)
    assert (REPO / "configs" / "recipe").resolve() == (REPO / "recipes").resolve()


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_composes_and_plans(compose_config, recipe):
    header = (REPO / "recipes" / f"{recipe}.yaml").read_text().splitlines()
    assert header[0] == "# @package _global_"
    assert any(f"recipe={recipe}" in line or (recipe == "quickstart" and "python -m mambapipe" in line)
               for line in header[:8] if line.startswith("#")), "the header must give the exact command"
    assert any(line.startswith("# Hardware:") for line in header[:8])
    plan = plan_for(compose_config(f"recipe={recipe}", "device=cpu"))
    assert plan.problems == []
    assert [p.name for p in plan.steps] == ["download", "convert", "build", "evaluate"]
    assert all(p.action == RUN and len(p.key) == 64 for p in plan.steps)


@pytest.mark.parametrize("recipe", sorted(SEED_RECIPES))
def test_seed_recipes_match_the_seed_commands(compose_config, recipe):
    model, dtype, tp = SEED_RECIPES[recipe]
    cfg = compose_config(f"recipe={recipe}")
    assert cfg.model.name == compose_config(f"model={model}").model.name
    assert (cfg.dtype.value, cfg.tp_size) == (dtype, tp)
    assert (cfg.build.max_batch_size, cfg.build.max_input_len, cfg.build.max_seq_len) == (8, 924, 1024)
    assert cfg.model.source.value == "hub" and cfg.eval.dataset == "cnn_dailymail"


@pytest.mark.parametrize("model", MODELS)
def test_every_model_composes_to_a_valid_spec(compose_config, model):
    cfg = compose_config(f"model={model}")
    resolved = resolve_config(cfg).config
    spec = ModelSpec(**resolved["model"]["arch"])
    if model in REAL_SHAPES:
        version, hidden, layers, vocab, state, groups, tied = REAL_SHAPES[model]
        assert (spec.mamba_version, spec.hidden_size, spec.num_layers, spec.vocab_size, spec.state_size,
                spec.n_groups, spec.tie_embeddings) == (version, hidden, layers, vocab, state, groups, tied)
        assert resolved["model"]["repo_id"] and resolved["model"]["source"] == "hub"
    else:
        assert resolved["model"]["source"] == "synthetic"
    assert plan_for(cfg).problems == []


def test_arch_config_mirrors_model_spec():
    """model.arch is handed to ModelSpec as is: the same fields, in order, typed alike, with the same defaults
    (a field ModelSpec requires is one the config leaves ???)."""
    arch = [(f.name, f.type, f.default) for f in dataclasses.fields(ArchConfig)]
    spec = [(f.name, f.type, MISSING if f.default is dataclasses.MISSING else f.default)
            for f in dataclasses.fields(ModelSpec)]
    assert arch == spec


def test_tiny_mamba2_splits_two_and_four_ways(compose_config):
    spec = ModelSpec(**resolve_config(compose_config("model=tiny_mamba2")).config["model"]["arch"])
    assert spec.tp_problems(2) == [] and spec.tp_problems(4) == []


def test_a_synthetic_model_keeps_the_real_shape(compose_config):
    cfg = compose_config("model=mamba_2p8b", "model.source=synthetic")
    assert cfg.model.arch.hidden_size == 2560 and cfg.model.source.value == "synthetic"


@pytest.mark.parametrize("override, name", [
    ("build.max_batch_sise=16", "max_batch_sise"),  # mistyped key
    ("build.fused_conv_ssm=true", "fused_conv_ssm"),  # a removed option
    ("model.sorce=hub", "sorce"),
    ("tp_size=two", "tp_size"),  # wrong type
    ("dtype=fp8", "dtype"),  # not an allowed value
    ("steps=[buld]", "steps"),
    ("model.source=ftp", "source"),
    ("recipe=codestral_tp3", "codestral_tp3"),
])
def test_bad_keys_and_values_fail_at_compose(compose_config, override, name):
    with pytest.raises(Exception) as info:
        compose_config(override)
    assert name in str(info.value) or isinstance(info.value, ConfigCompositionException)


def test_a_key_added_with_plus_outside_the_schema_is_a_plan_problem(compose_config):
    """Hydra's error for a mistyped key suggests `+key=value`, which composes: the plan must still refuse it."""
    problems = plan_for(compose_config("+eval.max_iter=5", "+model.arch.hiden=8", "eval.scenarios=[{batch:1}]",
                                       "+eval.scenarios.0.x=1", "+extra=1")).problems
    unread = "is not a config key (added with +?) and nothing reads it;"
    assert set(problems) >= {f"model.arch.hiden {unread} did you mean model.arch.hidden_size?",
                             f"eval.max_iter {unread} did you mean eval.max_ite?",
                             f"eval.scenarios[0].x {unread} see python -m mambapipe --help",
                             f"extra {unread} see python -m mambapipe --help"}
    assert plan_for(compose_config("recipe=codestral_tp2", "device=cpu")).problems == []  # its GPUs are not here


@pytest.mark.parametrize("source", ["synthetic", "hub"])
def test_a_model_path_the_source_does_not_read_is_a_plan_problem(compose_config, tmp_path, source):
    problems = plan_for(compose_config(f"model.source={source}", f"model.path={tmp_path}")).problems
    assert (f"model.path is set but model.source={source} reads no path: add model.source=local to use {tmp_path}, "
            "or drop model.path") in problems


def test_default_is_quickstart_offline_on_cpu(compose_config):
    cfg = compose_config()
    assert cfg.model.source.value == "synthetic" and cfg.device.value == "cpu" and cfg.eval.dataset == "sample"


def test_cache_dir_defaults_to_env_then_home(monkeypatch, tmp_path):
    schema = OmegaConf.structured(MambapipeConfig)
    monkeypatch.setenv("MAMBAPIPE_CACHE", str(tmp_path / "c"))
    assert schema.cache_dir == str(tmp_path / "c")
    monkeypatch.delenv("MAMBAPIPE_CACHE")
    assert Path(schema.cache_dir).expanduser() == Path("~/.cache/mambapipe").expanduser()
