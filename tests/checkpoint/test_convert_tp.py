"""Tensor-parallel shards put back together (by the reference's piece-wise rules) equal the TP1 tensors."""

from __future__ import annotations

import json

import pytest
import torch
from checkpoint_support import MAMBA1_UNTIED_BIAS, MAMBA2_TP8, build_hf, save_hf
from safetensors import safe_open

from mambapipe.checkpoint import ConvertError, convert_checkpoint


def load_rank(path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def join_pieces(shards: list[torch.Tensor], pieces: list[int], tp: int, dim: int = 0) -> torch.Tensor:
    """Inverse of the §1.7 fused split: each rank holds [piece_0/tp, piece_1/tp, ...]."""
    per_rank = [n // tp for n in pieces]
    split = [s.split(per_rank, dim=dim) for s in shards]
    return torch.cat([torch.cat([split[r][p] for r in range(tp)], dim=dim) for p in range(len(pieces))], dim=dim)


def mamba2_dims(cfg: dict) -> dict[str, int]:
    Di = cfg["expand"] * cfg["hidden_size"]
    return {"Di": Di, "GN": cfg["n_groups"] * cfg["state_size"], "Hh": Di // cfg["head_dim"]}


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_mamba2_shards_rebuild_tp1(tmp_path, hf_mamba2_tp8, tp):
    convert_checkpoint(hf_mamba2_tp8, tmp_path / "tp1", "float16", 1, progress=False)
    convert_checkpoint(hf_mamba2_tp8, tmp_path / "tpn", "float16", tp, progress=False)
    full = load_rank(tmp_path / "tp1" / "rank0.safetensors")
    ranks = [load_rank(tmp_path / "tpn" / f"rank{r}.safetensors") for r in range(tp)]
    d = mamba2_dims(MAMBA2_TP8)
    for name, want in full.items():
        shards = [r[name] for r in ranks]
        if name.endswith("in_proj.weight"):
            got = join_pieces(shards, [d["Di"], d["Di"], d["GN"], d["GN"], d["Hh"]], tp)
        elif name.endswith(("conv1d.weight", "conv1d.bias")):
            got = join_pieces(shards, [d["Di"], d["GN"], d["GN"]], tp)
        elif name.endswith("out_proj.weight"):
            got = torch.cat(shards, dim=1)
        elif name.endswith(("ssm.A", "ssm.D", "dt_bias", "ssm.norm.weight", "lm_head.weight")):
            got = torch.cat(shards, dim=0)
        else:  # embedding and RMSNorm weights are replicated
            assert all(torch.equal(s, want) for s in shards), name
            continue
        assert torch.equal(got, want), name
    config = json.loads((tmp_path / "tpn" / "config.json").read_text())
    assert config["mapping"]["tp_size"] == config["mapping"]["world_size"] == tp


@pytest.mark.parametrize("tp", [2, 4])
def test_mamba1_shards_rebuild_tp1(tmp_path, tp):
    src = save_hf(build_hf(MAMBA1_UNTIED_BIAS, seed=5), tmp_path / "src")
    convert_checkpoint(src, tmp_path / "tp1", "bfloat16", 1, progress=False)
    convert_checkpoint(src, tmp_path / "tpn", "bfloat16", tp, progress=False)
    full = load_rank(tmp_path / "tp1" / "rank0.safetensors")
    ranks = [load_rank(tmp_path / "tpn" / f"rank{r}.safetensors") for r in range(tp)]
    column_split = ("x_proj.weight", "ssm.A", "out_proj.weight")  # d_inner is their second dim
    replicated = ("vocab_embedding.weight", "input_layernorm.weight", "ln_f.weight", "out_proj.bias")
    for name, want in full.items():
        shards = [r[name] for r in ranks]
        if name.endswith(replicated):
            assert all(torch.equal(s, want) for s in shards), name
            continue
        got = torch.cat(shards, dim=1 if name.endswith(column_split) else 0)
        assert torch.equal(got, want), name
    Di = 2 * MAMBA1_UNTIED_BIAS["hidden_size"]
    assert ranks[0]["backbone.layers.0.ssm.A"].shape == (MAMBA1_UNTIED_BIAS["state_size"], Di // tp)
    assert ranks[0]["lm_head.weight"].shape == (MAMBA1_UNTIED_BIAS["vocab_size"] // tp, 16)


def test_refuses_groups_not_divisible(tmp_path, hf_mamba2):
    """n_groups=2, 2 heads: a 4-way split is refused before anything is written, naming the numbers."""
    with pytest.raises(ConvertError, match=r"n_groups=2 is not divisible by tp_size=4; heads=2 \(d_inner / head_dim\) "
                                           r"is not divisible by tp_size=4"):
        convert_checkpoint(hf_mamba2, tmp_path / "out", "float16", 4, progress=False)
    assert not (tmp_path / "out").exists()


def test_refuses_d_inner_not_divisible(tmp_path, hf_mamba1):
    with pytest.raises(ConvertError,
                       match=r"d_inner=32 \(expand × hidden_size\) is not divisible by tp_size=3; "
                             r"vocab_size=64 is not divisible by tp_size=3"):
        convert_checkpoint(hf_mamba1, tmp_path / "out", "float16", 3, progress=False)
