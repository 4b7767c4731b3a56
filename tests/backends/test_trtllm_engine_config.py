"""Reading trtllm-build's engine config.json (fixtures follow NVIDIA's key list, quirks included)."""

from __future__ import annotations

import json

import pytest

from mambapipe.backends.trtllm_engine import read_engine_config
from mambapipe.models import ModelSpec
from mambapipe.pipeline.step import StepError


def test_codestral_tp2_engine_reads_spec_and_limits(engine_dir):
    info = read_engine_config(engine_dir("codestral_tp2"))
    # NVIDIA's converter writes rnn_conv_dim_size 18432; the spec re-derives Di + 2*G*N = 10240.
    assert info.spec.conv_dim == 8192 + 2 * 8 * 128 == 10240
    assert (info.spec.mamba_version, info.spec.hidden_size, info.spec.num_layers) == ("Mamba2", 4096, 64)
    assert (info.spec.num_heads, info.spec.n_groups, info.spec.head_dim) == (128, 8, 64)
    assert info.spec.vocab_size == 32768 and not info.spec.tie_embeddings
    assert (info.dtype, info.tp_size, info.version) == ("float16", 2, "0.18.0")
    assert (info.max_batch_size, info.max_input_len, info.max_seq_len, info.max_beam_width) == (8, 924, 1024, 1)
    assert info.max_num_tokens == 8192  # NVIDIA's command leaves it at trtllm-build's default
    assert info.supports_inflight_batching  # packed input + paged state + conv1d plugin: ModelRunnerCpp


def test_python_session_engine_is_not_inflight(engine_dir):
    info = read_engine_config(engine_dir("mamba_130m_pysession"))
    assert info.spec == ModelSpec("Mamba1", 768, 24, 50280, 16, pad_vocab_size_multiple=8, tie_embeddings=False)
    assert info.spec.dt_rank == 48
    assert (info.dtype, info.tp_size, info.mamba_conv1d_plugin) == ("bfloat16", 1, "bfloat16")
    assert not info.remove_input_padding and not info.paged_state
    assert not info.supports_inflight_batching


def _rewrite(path, edit):
    cfg = json.loads(path.read_text())
    edit(cfg)
    path.write_text(json.dumps(cfg))


def test_conv1d_plugin_disabled_means_no_inflight_batching(engine_dir):
    out = engine_dir("codestral_tp2")
    _rewrite(out / "config.json", lambda c: c["build_config"]["plugin_config"].update(mamba_conv1d_plugin=None))
    assert not read_engine_config(out).supports_inflight_batching


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["pretrained_config"].update(architecture="LlamaForCausalLM"),
     "'LlamaForCausalLM', not 'MambaForCausalLM'"),
    (lambda c: c.pop("build_config"), "lacks 'build_config'"),
    (lambda c: c["build_config"].pop("max_seq_len"), "incomplete or malformed"),
    (lambda c: c["pretrained_config"].pop("state_size"), "incomplete or malformed"),
])
def test_bad_engine_configs_fail_in_one_line(engine_dir, edit, message):
    out = engine_dir("codestral_tp2")
    _rewrite(out / "config.json", edit)
    with pytest.raises(StepError, match=message) as err:
        read_engine_config(out)
    assert "\n" not in str(err.value)


def test_missing_rank_engine_and_missing_config(engine_dir, tmp_path):
    out = engine_dir("codestral_tp2")
    (out / "rank1.engine").unlink()
    with pytest.raises(StepError, match=r"lacks rank1\.engine \(tp_size 2\)"):
        read_engine_config(out)
    with pytest.raises(StepError, match="has no config.json"):
        read_engine_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(StepError, match="not valid JSON"):
        read_engine_config(tmp_path)
