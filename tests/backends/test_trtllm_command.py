"""The trtllm-build command line: the seed's flags (trtllm-mamba-format.md §3) from the config."""

from __future__ import annotations

from pathlib import Path

import pytest

from mambapipe.backends.base import BuildSettings
from mambapipe.backends.trtllm import BACKEND, describe_build, trtllm_build_command
from mambapipe.pipeline.plan import step_params
from mambapipe.pipeline.resolve import resolve_config
from mambapipe.pipeline.step import StepError
from mambapipe.steps.build import STEP as BUILD_STEP

CKPT, OUT = Path("/cache/convert/abc"), Path("/cache/build/.staging/def")
# NVIDIA's README command (examples/models/core/mamba), the same for every seed model.
SEED = ("trtllm-build --checkpoint_dir {ckpt} --paged_kv_cache disable --gemm_plugin auto --max_batch_size 8 "
        "--max_input_len 924 --max_seq_len 1024 --output_dir {out}")


def settings(**options) -> BuildSettings:
    return BuildSettings(max_batch_size=8, max_input_len=924, max_seq_len=1024, device="cuda", options=options)


def test_seed_defaults_give_the_seed_command():
    defaults = dict(paged_state=True, mamba_conv1d_plugin="auto", remove_input_padding=True, gemm_plugin="auto")
    for options in ({}, defaults):
        assert trtllm_build_command(CKPT, OUT, settings(**options)) == SEED.format(ckpt=CKPT, out=OUT).split()


def test_limits_and_plugins_follow_the_config():
    cmd = trtllm_build_command(CKPT, OUT, BuildSettings(16, 2000, 2048, "cuda", {
        "paged_state": False, "remove_input_padding": False, "mamba_conv1d_plugin": "bfloat16",
        "gemm_plugin": "disable"}))
    assert cmd == ["trtllm-build", "--checkpoint_dir", str(CKPT), "--paged_kv_cache", "disable",
                   "--gemm_plugin", "disable", "--max_batch_size", "16", "--max_input_len", "2000",
                   "--max_seq_len", "2048", "--paged_state", "disable", "--mamba_conv1d_plugin", "bfloat16",
                   "--remove_input_padding", "disable", "--output_dir", str(OUT)]


def test_max_num_tokens_covers_a_full_packed_batch_of_the_limits():
    """trtllm-build's default (8192) would leave all but 4 of 64 prompts of 2048 tokens to later engine steps."""
    cmd = trtllm_build_command(CKPT, OUT, BuildSettings(64, 2048, 2176, "cuda"))
    assert cmd[cmd.index("--max_seq_len"):cmd.index("--output_dir")] == [
        "--max_seq_len", "2176", "--max_num_tokens", str(64 * 2048)]


@pytest.mark.parametrize("limits, options", [
    ((8, 1024, 1024), {}),  # 8192 tokens: the default holds them, and the command stays NVIDIA's
    ((64, 2048, 2176), {"remove_input_padding": False}),  # padded input: trtllm-build ignores max_num_tokens
])
def test_max_num_tokens_is_left_out_where_it_changes_nothing(limits, options):
    assert "--max_num_tokens" not in trtllm_build_command(CKPT, OUT, BuildSettings(*limits, "cuda", options))


def test_describe_build_is_the_exact_shell_quoted_line():
    out = Path("/tmp/my engines/x")
    (line,) = describe_build(CKPT, out, settings())
    assert line == SEED.format(ckpt=CKPT, out="'/tmp/my engines/x'")
    assert BACKEND.describe_build(CKPT, out, settings()) == [line]


@pytest.mark.parametrize("options, message", [
    ({"mamba_conv1d_plugin": "disable"},  # both settings it conflicts with, not one and then the other
     "mamba_conv1d_plugin=disable needs build.paged_state=false and build.remove_input_padding=false "),
    ({"mamba_conv1d_plugin": "disable", "paged_state": False},
     "mamba_conv1d_plugin=disable needs build.remove_input_padding=false"),
    ({"mamba_conv1d_plugin": "fp16"}, "build.mamba_conv1d_plugin='fp16' is not one of"),
    ({"gemm_plugin": "yes"}, "build.gemm_plugin='yes' is not one of"),
])
def test_impossible_plugin_settings_fail_at_plan_time(options, message):
    with pytest.raises(StepError, match=message):
        describe_build(CKPT, OUT, settings(**options))


def test_conv1d_plugin_off_is_allowed_with_padding_and_paged_state_off():
    cmd = trtllm_build_command(CKPT, OUT, settings(mamba_conv1d_plugin="disable", paged_state=False,
                                                   remove_input_padding=False))
    assert cmd[-8:-2] == ["--paged_state", "disable", "--mamba_conv1d_plugin", "disable",
                          "--remove_input_padding", "disable"]


SEED_RECIPES = ("mamba_130m", "mamba_2p8b", "mamba2_130m", "mamba2_2p7b", "codestral", "codestral_tp2")


@pytest.mark.parametrize("recipe", SEED_RECIPES)
def test_each_seed_recipe_gives_the_seed_command(compose_config, recipe):
    """Recipe -> the build step's params and BuildSettings -> the command (the path a real run takes)."""
    resolved = resolve_config(compose_config(f"recipe={recipe}", "backend=trtllm", "device=cuda"))
    params = step_params(BUILD_STEP, resolved.config)
    assert BUILD_STEP.describe(params, {"convert": CKPT}, OUT) == [SEED.format(ckpt=CKPT, out=OUT)]


@pytest.mark.parametrize("recipe", ("bench_mamba_130m", "bench_mamba2_130m", "bench_codestral"))
def test_bench_recipes_build_for_their_largest_batch(compose_config, recipe):
    resolved = resolve_config(compose_config(f"recipe={recipe}", "backend=trtllm", "device=cuda"))
    params = step_params(BUILD_STEP, resolved.config)
    (line,) = BUILD_STEP.describe(params, {"convert": CKPT}, OUT)
    assert "--max_batch_size 64 --max_input_len 2048 --max_seq_len 2176 --max_num_tokens 131072 --output_dir" in line
