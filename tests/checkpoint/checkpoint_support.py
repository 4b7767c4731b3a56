"""Tiny seeded Mamba checkpoints, the same weights written in each source layout.

`hf_mamba1`, `hf_mamba2` are real transformers `save_pretrained` directories; `as_mamba_ssm` and
`as_mistral` rewrite a model's state dict the way mamba_ssm (`pytorch_model.bin`, `backbone.embedding`)
and mistral-inference (`consolidated.safetensors`, `model.` prefix) store it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

MAMBA1_TIED = dict(vocab_size=64, hidden_size=16, state_size=4, num_hidden_layers=2, pad_vocab_size_multiple=8)
MAMBA1_UNTIED_BIAS = dict(MAMBA1_TIED, tie_word_embeddings=False, use_bias=True, time_step_rank=3)
# d_state/headdim are mamba_ssm's Mamba2 defaults, so the Mistral layout (which cannot say otherwise) fits.
MAMBA2_MISTRAL = dict(vocab_size=64, hidden_size=64, state_size=128, num_hidden_layers=2, num_heads=2,
                      head_dim=64, n_groups=2, expand=2, tie_word_embeddings=False)
# 16 heads in 8 groups: splits 1/2/4/8 ways.
MAMBA2_TP8 = dict(vocab_size=64, hidden_size=64, state_size=4, num_hidden_layers=2, num_heads=16, head_dim=8,
                  n_groups=8, expand=2, tie_word_embeddings=True)


def build_hf(config: dict, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if "num_heads" in config:
        model = Mamba2ForCausalLM(Mamba2Config(**config))
    else:
        model = MambaForCausalLM(MambaConfig(**config))
    with torch.no_grad():  # HF leaves D at 1 and norms at 1; randomise so a wrong mapping cannot pass
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "norm_f.weight", ".D", "dt_bias", "bias")):
                p.uniform_(0.5, 1.5)
    return model


def save_hf(model: torch.nn.Module, path: Path) -> Path:
    model.save_pretrained(path)
    return path


def ssm_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights under mamba_ssm names, with lm_head always present (mamba_ssm saves it tied)."""
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v.clone()
             for k, v in model.state_dict().items()}
    state.setdefault("lm_head.weight", state["backbone.embedding.weight"].clone())
    return state


def as_mamba_ssm(model: torch.nn.Module, path: Path) -> Path:
    cfg = model.config
    if cfg.model_type == "mamba":  # mamba_ssm's Mamba1 is the default layer
        ssm_cfg = {"d_state": cfg.state_size, "d_conv": cfg.conv_kernel, "expand": cfg.expand,
                   "dt_rank": cfg.time_step_rank, "bias": cfg.use_bias}
    else:
        ssm_cfg = {"layer": "Mamba2", "d_state": cfg.state_size, "d_conv": cfg.conv_kernel, "expand": cfg.expand,
                   "headdim": cfg.head_dim, "ngroups": cfg.n_groups, "chunk_size": cfg.chunk_size}
    config = {"d_model": cfg.hidden_size, "d_intermediate": 0, "n_layer": cfg.num_hidden_layers,
              "vocab_size": cfg.vocab_size, "ssm_cfg": ssm_cfg, "attn_layer_idx": [], "attn_cfg": {},
              "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
              "pad_vocab_size_multiple": getattr(cfg, "pad_vocab_size_multiple", 1),
              "tie_embeddings": cfg.tie_word_embeddings}
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    torch.save(ssm_state_dict(model), path / "pytorch_model.bin")
    return path


def as_mistral(model: torch.nn.Module, path: Path) -> Path:
    cfg = model.config
    params = {"dim": cfg.hidden_size, "n_layers": cfg.num_hidden_layers, "vocab_size": cfg.vocab_size,
              "n_groups": cfg.n_groups, "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
              "pad_vocab_size_multiple": 1, "tie_embeddings": cfg.tie_word_embeddings, "model_type": "mamba"}
    path.mkdir(parents=True)
    (path / "params.json").write_text(json.dumps(params))
    save_file({"model." + k: v.contiguous() for k, v in ssm_state_dict(model).items()},
              str(path / "consolidated.safetensors"))
    return path


@pytest.fixture(scope="session")
def hf_mamba1(tmp_path_factory) -> Path:
    return save_hf(build_hf(MAMBA1_TIED), tmp_path_factory.mktemp("hf_mamba1"))


@pytest.fixture(scope="session")
def hf_mamba2(tmp_path_factory) -> Path:
    return save_hf(build_hf(MAMBA2_MISTRAL), tmp_path_factory.mktemp("hf_mamba2"))


@pytest.fixture(scope="session")
def hf_mamba2_tp8(tmp_path_factory) -> Path:
    return save_hf(build_hf(MAMBA2_TP8), tmp_path_factory.mktemp("hf_mamba2_tp8"))
