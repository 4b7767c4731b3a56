"""Tiny seeded HF Mamba/Mamba2 models and the engines built from them, for the engine tests.

`write_trtllm_checkpoint` is a deliberately independent, test-only writer of the TensorRT-LLM checkpoint
(reference §1.6/§1.7, including the TP splits), so the engine is checked against the reference layout
rather than against whatever the convert step happens to write.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mambapipe.backends.base import BuildSettings
from mambapipe.engine.build import build_engine
from mambapipe.models import ModelSpec

MAMBA1 = dict(mamba_version="Mamba1", hidden_size=32, num_layers=2, vocab_size=96, state_size=8)
MAMBA2 = dict(mamba_version="Mamba2", hidden_size=64, num_layers=2, vocab_size=96, state_size=16,
              head_dim=16, n_groups=4, chunk_size=8, tie_embeddings=False)


def hf_model(spec: ModelSpec, seed: int = 0):
    """A seeded HF model for `spec`, with weights scaled so logits are far from ties."""
    from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

    torch.manual_seed(seed)
    common = dict(vocab_size=spec.vocab_size, hidden_size=spec.hidden_size, state_size=spec.state_size,
                  num_hidden_layers=spec.num_layers, expand=spec.expand, conv_kernel=spec.conv_kernel,
                  use_bias=spec.use_bias, use_conv_bias=spec.use_conv_bias, layer_norm_epsilon=1e-5,
                  residual_in_fp32=True, tie_word_embeddings=spec.tie_embeddings)
    if spec.is_mamba2:
        model = Mamba2ForCausalLM(Mamba2Config(num_heads=spec.num_heads, head_dim=spec.head_dim,
                                               n_groups=spec.n_groups, chunk_size=spec.chunk_size, **common))
    else:
        model = MambaForCausalLM(MambaConfig(time_step_rank=spec.dt_rank, **common))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "norm_f.weight")):
                p.uniform_(0.5, 1.5)
            elif name.endswith("A_log"):
                p.copy_(torch.log(torch.empty_like(p).uniform_(0.5, 8.0)))
            elif name.endswith(("dt_bias", "dt_proj.bias")):
                p.normal_(0.0, 1.0)  # faster dynamics than HF's init, so outputs depend on the whole prompt
            elif name.endswith(".D"):
                p.normal_(1.0, 0.5)
            elif p.dim() >= 2:
                p.normal_(0.0, 1.0 if "embedding" in name else p.shape[-1] ** -0.5 * 1.5)
    return model.eval()


def _split(t: torch.Tensor, tp: int, rank: int, dim: int = 0) -> torch.Tensor:
    return t.chunk(tp, dim=dim)[rank]


def _pieces(t: torch.Tensor, sizes: list[int], tp: int, rank: int) -> torch.Tensor:
    """Split rows into named pieces, take this rank's part of each, concatenate (reference §1.7)."""
    return torch.cat([_split(piece, tp, rank) for piece in t.split(sizes)])


def _mixer(sd: dict, spec: ModelSpec, i: int, tp: int, r: int) -> dict[str, torch.Tensor]:
    src, dst = f"backbone.layers.{i}.mixer.", f"backbone.layers.{i}.ssm."
    Di, GN = spec.intermediate_size, spec.n_groups * spec.state_size
    conv_w = sd[src + "conv1d.weight"].unsqueeze(3)  # (C, 1, K, 1)
    out = {dst + "D": _split(sd[src + "D"].float(), tp, r),
           dst + "out_proj.weight": _split(sd[src + "out_proj.weight"], tp, r, 1)}
    A = -torch.exp(sd[src + "A_log"].float())
    if spec.is_mamba2:
        in_proj = _pieces(sd[src + "in_proj.weight"], [Di, Di, GN, GN, spec.num_heads], tp, r)
        out.update({dst + "in_proj.weight": in_proj,
                    dst + "conv1d.weight": _pieces(conv_w, [Di, GN, GN], tp, r),
                    dst + "conv1d.bias": _pieces(sd[src + "conv1d.bias"], [Di, GN, GN], tp, r),
                    dst + "A": _split(A, tp, r), dst + "dt_bias": _split(sd[src + "dt_bias"].float(), tp, r),
                    dst + "norm.weight": _split(sd[src + "norm.weight"], tp, r)})
        return out
    x, z = sd[src + "in_proj.weight"].chunk(2)
    out.update({dst + "in_proj_x.weight": _split(x, tp, r), dst + "in_proj_z.weight": _split(z, tp, r),
                dst + "conv1d.weight": _split(conv_w, tp, r),
                dst + "conv1d.bias": _split(sd[src + "conv1d.bias"], tp, r),
                dst + "x_proj.weight": _split(sd[src + "x_proj.weight"], tp, r, 1),
                dst + "dt_proj.weight": _split(sd[src + "dt_proj.weight"], tp, r),
                dst + "dt_bias": _split(sd[src + "dt_proj.bias"].float(), tp, r),
                dst + "A": _split(A.t(), tp, r, 1)})  # TensorRT-LLM stores Mamba1 A as [N, Di]
    return out


def write_trtllm_checkpoint(model, spec: ModelSpec, out_dir: Path, dtype: str = "float32", tp: int = 1) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    cast = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    sd = {k: v.to(cast) for k, v in model.state_dict().items()}  # cast first, as TensorRT-LLM does
    emb = sd["backbone.embeddings.weight"]
    for r in range(tp):
        t = {"backbone.vocab_embedding.weight": emb, "backbone.ln_f.weight": sd["backbone.norm_f.weight"],
             "lm_head.weight": _split(sd.get("lm_head.weight", emb), tp, r)}
        for i in range(spec.num_layers):
            t[f"backbone.layers.{i}.input_layernorm.weight"] = sd[f"backbone.layers.{i}.norm.weight"]
            t.update(_mixer(sd, spec, i, tp, r))
        save_file({k: v.contiguous().clone() for k, v in t.items()}, str(out_dir / f"rank{r}.safetensors"))
    (out_dir / "config.json").write_text(json.dumps(spec.to_trtllm_config(dtype, tp)))
    return out_dir


def build_from_hf(model, spec: ModelSpec, root: Path, dtype: str = "float32", tp: int = 1,
                  max_batch_size: int = 4, max_input_len: int = 64, max_seq_len: int = 128,
                  ssm_state_dtype: str = "auto") -> Path:
    ckpt = write_trtllm_checkpoint(model, spec, root / f"ckpt_{dtype}_tp{tp}", dtype, tp)
    engine = root / f"engine_{dtype}_tp{tp}_state_{ssm_state_dtype}"
    settings = BuildSettings(max_batch_size, max_input_len, max_seq_len, "cpu",
                             options={"ssm_state_dtype": ssm_state_dtype})
    build_engine(ckpt, engine, settings, show_progress=False)
    return engine


@pytest.fixture(scope="session")
def mamba1_spec() -> ModelSpec:
    return ModelSpec(**MAMBA1)


@pytest.fixture(scope="session")
def mamba2_spec() -> ModelSpec:
    return ModelSpec(**MAMBA2)
