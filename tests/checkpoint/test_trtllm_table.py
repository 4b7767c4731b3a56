"""Names, shapes and dtypes of the written checkpoint against the reference's tables (§1.3, §1.6, §1.7).

The expected tables are transcribed from the reference, not derived from the converter's code."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from mambapipe.checkpoint import convert_checkpoint, detect_source
from mambapipe.checkpoint.trtllm import trtllm_tensors
from mambapipe.models import ModelSpec

F32 = torch.float32


def written_table(path) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    with safe_open(str(path), "pt") as f:
        return {k: (tuple(f.get_slice(k).get_shape()), f.get_tensor(k).dtype) for k in f.keys()}


def mamba1_reference_table(V, H, L, Di, N, K, R, model) -> dict:
    """§1.6, one row per TRT name."""
    table = {"backbone.vocab_embedding.weight": ((V, H), model), "backbone.ln_f.weight": ((H,), model),
             "lm_head.weight": ((V, H), model)}
    for i in range(L):
        p = f"backbone.layers.{i}.ssm."
        table[f"backbone.layers.{i}.input_layernorm.weight"] = ((H,), model)
        table.update({p + "in_proj_x.weight": ((Di, H), model), p + "in_proj_z.weight": ((Di, H), model),
                      p + "conv1d.weight": ((Di, 1, K, 1), model), p + "conv1d.bias": ((Di,), model),
                      p + "x_proj.weight": ((R + 2 * N, Di), model), p + "dt_proj.weight": ((Di, R), model),
                      p + "dt_bias": ((Di,), F32), p + "A": ((N, Di), F32), p + "D": ((Di,), F32),
                      p + "out_proj.weight": ((H, Di), model)})
    return table


def mamba2_reference_table(V, H, L, Di, N, G, Hh, K, tp, model) -> dict:
    """§1.7 per-rank shapes."""
    table = {"backbone.vocab_embedding.weight": ((V, H), model), "backbone.ln_f.weight": ((H,), model),
             "lm_head.weight": ((V // tp, H), model)}
    for i in range(L):
        p = f"backbone.layers.{i}.ssm."
        table[f"backbone.layers.{i}.input_layernorm.weight"] = ((H,), model)
        table.update({p + "in_proj.weight": (((2 * Di + 2 * G * N + Hh) // tp, H), model),
                      p + "conv1d.weight": (((Di + 2 * G * N) // tp, 1, K, 1), model),
                      p + "conv1d.bias": (((Di + 2 * G * N) // tp,), model),
                      p + "A": ((Hh // tp,), F32), p + "D": ((Hh // tp,), F32), p + "dt_bias": ((Hh // tp,), F32),
                      p + "norm.weight": ((Di // tp,), model), p + "out_proj.weight": ((H, Di // tp), model)})
    return table


def test_mamba1_table(tmp_path, hf_mamba1):
    convert_checkpoint(hf_mamba1, tmp_path, "bfloat16", progress=False)
    expect = mamba1_reference_table(V=64, H=16, L=2, Di=32, N=4, K=4, R=1, model=torch.bfloat16)
    assert written_table(tmp_path / "rank0.safetensors") == expect


@pytest.mark.parametrize("tp", [1, 2])
def test_mamba2_table(tmp_path, hf_mamba2, tp):
    convert_checkpoint(hf_mamba2, tmp_path, "float16", tp, progress=False)
    expect = mamba2_reference_table(V=64, H=64, L=2, Di=128, N=128, G=2, Hh=2, K=4, tp=tp, model=torch.float16)
    for r in range(tp):
        assert written_table(tmp_path / f"rank{r}.safetensors") == expect


@pytest.mark.parametrize("spec, rows, conv_dim, dt_rank", [
    # §2 table: codestral in_proj rows 18560, conv_dim 10240 (not TRT's buggy 18432); mamba2-2.7b 10576 / 5376.
    (ModelSpec("Mamba2", 4096, 64, 32768, 128, n_groups=8, tie_embeddings=False), 18560, 10240, None),
    (ModelSpec("Mamba2", 2560, 64, 50288, 128, pad_vocab_size_multiple=16), 10576, 5376, None),
    (ModelSpec("Mamba1", 2560, 64, 50280, 16), 2 * 5120, 5120, 160),
])
def test_real_model_shapes(spec, rows, conv_dim, dt_rank):
    shapes = {t.name: t.shape for t in trtllm_tensors(spec)}
    if spec.is_mamba2:
        assert shapes["backbone.layers.63.ssm.in_proj.weight"] == (rows, spec.hidden_size)
        assert shapes["backbone.layers.0.ssm.conv1d.weight"] == (conv_dim, 1, 4, 1)
        assert spec.to_trtllm_config("float16", 1)["rnn_conv_dim_size"] == conv_dim
    else:
        assert shapes["backbone.layers.0.ssm.in_proj_x.weight"] == (rows // 2, spec.hidden_size)
        assert shapes["backbone.layers.0.ssm.dt_proj.weight"] == (5120, dt_rank)
        assert shapes["backbone.layers.0.ssm.A"] == (16, 5120)


# §1.3 keys trtllm-build reads from a Mamba checkpoint config.json.
REQUIRED_KEYS = {"architecture", "dtype", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "hidden_act", "logits_dtype", "norm_epsilon", "residual_in_fp32", "pad_vocab_size_multiple",
                 "layer_types", "intermediate_size", "mamba_version", "rms_norm", "rnn_hidden_size",
                 "rnn_conv_dim_size", "state_size", "conv_kernel", "use_bias", "mapping", "quantization",
                 "position_embedding_type", "num_key_value_heads", "max_position_embeddings",
                 "use_parallel_embedding", "embedding_sharding_dim", "head_size"}


def same_spec(a: ModelSpec, b: ModelSpec) -> bool:
    """Equal up to how dt_rank is spelled (0 = auto vs its resolved value)."""
    return a.replace(time_step_rank=a.dt_rank) == b.replace(time_step_rank=b.dt_rank)


def test_mamba2_config_keys(tmp_path, hf_mamba2):
    convert_checkpoint(hf_mamba2, tmp_path, "float16", 2, progress=False)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert REQUIRED_KEYS | {"rnn_head_size", "ngroups", "chunk_size", "ssm_rmsnorm"} <= cfg.keys()
    assert cfg["architecture"] == "MambaForCausalLM" and cfg["mamba_version"] == "Mamba2"
    assert cfg["layer_types"] == ["recurrent"] and cfg["hidden_act"] == "silu"
    assert cfg["logits_dtype"] == "float32" and cfg["norm_epsilon"] == 1e-5 and cfg["dtype"] == "float16"
    assert (cfg["rnn_hidden_size"], cfg["rnn_conv_dim_size"], cfg["rnn_head_size"]) == (128, 128 + 2 * 2 * 128, 64)
    assert (cfg["ngroups"], cfg["chunk_size"], cfg["state_size"], cfg["conv_kernel"]) == (2, 256, 128, 4)
    assert cfg["mapping"]["world_size"] == cfg["mapping"]["tp_size"] == 2 and cfg["mapping"]["pp_size"] == 1
    assert cfg["quantization"]["quant_algo"] is None
    assert same_spec(ModelSpec.from_trtllm_config(cfg), detect_source(hf_mamba2).spec)  # what the engine reads


def test_mamba1_config_keys(tmp_path, hf_mamba1):
    convert_checkpoint(hf_mamba1, tmp_path, "bfloat16", progress=False)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert REQUIRED_KEYS <= cfg.keys() and "ngroups" not in cfg
    assert (cfg["mamba_version"], cfg["rnn_conv_dim_size"], cfg["state_size"]) == ("Mamba1", 32, 4)
    assert (cfg["vocab_size"], cfg["pad_vocab_size_multiple"], cfg["dtype"]) == (64, 8, "bfloat16")
    assert same_spec(ModelSpec.from_trtllm_config(cfg), detect_source(hf_mamba1).spec)


@pytest.mark.parametrize("vocab, multiple, written", [(512, 16, 16), (510, 16, 1), (50280, 8, 8)])
def test_a_vocab_off_its_pad_multiple_is_written_as_multiple_one(vocab, multiple, written):
    """TensorRT-LLM's MambaModel pads vocab_size up to pad_vocab_size_multiple and then expects that many embedding
    and lm_head rows; the checkpoint holds the source's own count, so an unpadded vocab must not ask for padding."""
    cfg = ModelSpec("Mamba2", 64, 2, vocab, 16, pad_vocab_size_multiple=multiple).to_trtllm_config("float16", 1)
    assert (cfg["vocab_size"], cfg["pad_vocab_size_multiple"]) == (vocab, written)
