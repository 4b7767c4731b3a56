"""Every TensorRT-LLM tensor equals its HF source after the reference's documented transform (§1.6/§1.7)."""

from __future__ import annotations

import pytest
import torch
from checkpoint_support import MAMBA1_TIED, MAMBA1_UNTIED_BIAS, MAMBA2_MISTRAL, MAMBA2_TP8, build_hf, save_hf
from safetensors import safe_open

from mambapipe.checkpoint import convert_checkpoint
from mambapipe.dtypes import TORCH_DTYPES


def load_rank(path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def expected_outside_mixers(sd: dict, cfg, dt: torch.dtype) -> dict[str, torch.Tensor]:
    """Embedding, final norm, lm_head (the embedding when tied) and each layer's input norm."""
    out = {"backbone.vocab_embedding.weight": sd["backbone.embeddings.weight"].to(dt),
           "backbone.ln_f.weight": sd["backbone.norm_f.weight"].to(dt),
           "lm_head.weight": sd.get("lm_head.weight", sd["backbone.embeddings.weight"]).to(dt)}
    for i in range(cfg.num_hidden_layers):
        out[f"backbone.layers.{i}.input_layernorm.weight"] = sd[f"backbone.layers.{i}.norm.weight"].to(dt)
    return out


def expected_mamba1(sd: dict, cfg, dt: torch.dtype) -> dict[str, torch.Tensor]:
    Di = cfg.intermediate_size
    out = expected_outside_mixers(sd, cfg, dt)
    for i in range(cfg.num_hidden_layers):
        s, t = f"backbone.layers.{i}.mixer.", f"backbone.layers.{i}.ssm."
        out[t + "in_proj_x.weight"] = sd[s + "in_proj.weight"][:Di].to(dt)
        out[t + "in_proj_z.weight"] = sd[s + "in_proj.weight"][Di:].to(dt)
        out[t + "conv1d.weight"] = sd[s + "conv1d.weight"].to(dt).unsqueeze(3)
        out[t + "conv1d.bias"] = sd[s + "conv1d.bias"].to(dt)
        out[t + "x_proj.weight"] = sd[s + "x_proj.weight"].to(dt)
        out[t + "dt_proj.weight"] = sd[s + "dt_proj.weight"].to(dt)
        out[t + "dt_bias"] = sd[s + "dt_proj.bias"].to(dt).float()
        out[t + "A"] = (-torch.exp(sd[s + "A_log"].to(dt).float())).permute(1, 0)
        out[t + "D"] = sd[s + "D"].to(dt).float()
        out[t + "out_proj.weight"] = sd[s + "out_proj.weight"].to(dt)
        if cfg.use_bias:
            out[t + "in_proj_x.bias"] = sd[s + "in_proj.bias"][:Di].to(dt)
            out[t + "in_proj_z.bias"] = sd[s + "in_proj.bias"][Di:].to(dt)
            out[t + "out_proj.bias"] = sd[s + "out_proj.bias"].to(dt)
    return out


def expected_mamba2(sd: dict, cfg, dt: torch.dtype) -> dict[str, torch.Tensor]:
    out = expected_outside_mixers(sd, cfg, dt)
    for i in range(cfg.num_hidden_layers):
        s, t = f"backbone.layers.{i}.mixer.", f"backbone.layers.{i}.ssm."
        for name in ("in_proj.weight", "conv1d.bias", "norm.weight", "out_proj.weight"):
            out[t + name] = sd[s + name].to(dt)
        out[t + "conv1d.weight"] = sd[s + "conv1d.weight"].to(dt).unsqueeze(3)
        out[t + "A"] = -torch.exp(sd[s + "A_log"].to(dt).float())
        out[t + "D"] = sd[s + "D"].to(dt).float()
        out[t + "dt_bias"] = sd[s + "dt_bias"].to(dt).float()
    return out


@pytest.mark.parametrize("config", [MAMBA1_TIED, MAMBA1_UNTIED_BIAS, MAMBA2_MISTRAL, MAMBA2_TP8],
                         ids=["mamba1-tied", "mamba1-untied-bias", "mamba2-g2-untied", "mamba2-g8-tied"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_every_tensor_matches_hf_source(tmp_path, config, dtype):
    model = build_hf(config, seed=1)
    src = save_hf(model, tmp_path / "src")
    facts = convert_checkpoint(src, tmp_path / "out", dtype, progress=False)

    got = load_rank(tmp_path / "out" / "rank0.safetensors")
    sd = model.state_dict()
    expect = (expected_mamba2 if "num_heads" in config else expected_mamba1)(sd, model.config, TORCH_DTYPES[dtype])
    assert sorted(got) == sorted(expect)
    for name, want in expect.items():
        assert got[name].dtype == want.dtype, name
        assert torch.equal(got[name], want), name
    assert facts["source_format"] == ("hf_mamba2" if "num_heads" in config else "hf_mamba")
    assert set(facts["sha256"]) == {"rank0.safetensors", "config.json"}


def test_the_api_takes_paths_under_the_home_directory(tmp_path, monkeypatch, hf_mamba2):
    """~ works on the command line (model.path=~/m); convert_checkpoint, called from Python, took it literally."""
    import shutil

    from mambapipe.checkpoint.convert import convert_checkpoint

    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copytree(hf_mamba2, tmp_path / "m2")
    facts = convert_checkpoint("~/m2", "~/out", "float32", progress=False)
    assert facts["source_format"] == "hf_mamba2" and (tmp_path / "out" / "rank0.safetensors").is_file()
