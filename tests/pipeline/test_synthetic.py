"""Synthetic checkpoints: seeded, streamed into bounded shards, initialised like mamba_ssm, and a
deterministic tokenizer trained on the bundled sample data."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from mambapipe.models import ModelSpec
from mambapipe.synthetic import DT_MAX, DT_MIN, tensor_shapes, write_synthetic_checkpoint, write_synthetic_tokenizer

MAMBA1 = ModelSpec("Mamba1", 64, 2, 512, 16)
MAMBA2_UNTIED = ModelSpec("Mamba2", 64, 2, 512, 16, head_dim=16, n_groups=4, chunk_size=16, tie_embeddings=False)


def load_all(directory) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def test_same_seed_same_weights_whatever_the_sharding(tmp_path):
    write_synthetic_checkpoint(MAMBA2_UNTIED, tmp_path / "a", "float32", seed=1, progress=False)
    write_synthetic_checkpoint(MAMBA2_UNTIED, tmp_path / "b", "float32", seed=1, max_shard_bytes=50_000, progress=False)
    write_synthetic_checkpoint(MAMBA2_UNTIED, tmp_path / "c", "float32", seed=2, progress=False)
    a, b, c = (load_all(tmp_path / d) for d in "abc")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["backbone.layers.0.mixer.in_proj.weight"], c["backbone.layers.0.mixer.in_proj.weight"])


def test_shards_are_bounded_indexed_like_save_pretrained_and_load_in_transformers(tmp_path):
    from transformers import AutoModelForCausalLM

    limit = 50_000  # the bf16 embedding (64 KiB) is over it, so it takes a shard of its own
    facts = write_synthetic_checkpoint(MAMBA2_UNTIED, tmp_path, "bfloat16", seed=0, max_shard_bytes=limit,
                                       progress=False)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shapes = tensor_shapes(MAMBA2_UNTIED)
    assert set(index["weight_map"]) == set(shapes) and set(index["weight_map"].values()) == set(facts["files"])
    assert index["metadata"]["total_size"] == 2 * sum(math.prod(s) for s in shapes.values())
    for file in facts["files"]:
        tensors = load_file(tmp_path / file)
        assert set(tensors) == {name for name, f in index["weight_map"].items() if f == file}
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        assert size <= limit or len(tensors) == 1  # a tensor larger than the limit gets a shard alone
        assert all(t.dtype == torch.bfloat16 for t in tensors.values())
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).state_dict()
    written = load_all(tmp_path)
    assert loaded.keys() == written.keys() and all(torch.equal(loaded[k], written[k]) for k in written)


def test_a_single_shard_is_model_safetensors_without_an_index(tmp_path):
    facts = write_synthetic_checkpoint(MAMBA1, tmp_path, "float32", seed=0, progress=False)
    assert facts["files"] == ["model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_mamba1_initialisation(tmp_path):
    write_synthetic_checkpoint(MAMBA1, tmp_path, "float32", seed=0, progress=False)
    w = load_all(tmp_path)
    assert "lm_head.weight" not in w  # tied: saved once, as save_pretrained does
    a_log = w["backbone.layers.0.mixer.A_log"]  # (Di, N)
    assert torch.allclose(a_log, torch.log(torch.arange(1, 17.0)).expand(128, 16))
    dt = torch.nn.functional.softplus(w["backbone.layers.0.mixer.dt_proj.bias"])  # (Di,)
    assert DT_MIN * 0.99 <= dt.min() and dt.max() <= DT_MAX * 1.01 and dt.std() > 0
    assert torch.equal(w["backbone.layers.1.mixer.D"], torch.ones(128))
    assert torch.equal(w["backbone.norm_f.weight"], torch.ones(64))
    assert abs(w["backbone.embeddings.weight"].std().item() - 0.02) < 0.002


def test_mamba2_initialisation(tmp_path):
    write_synthetic_checkpoint(MAMBA2_UNTIED, tmp_path, "float32", seed=0, progress=False)
    w = load_all(tmp_path)
    assert w["lm_head.weight"].shape == (512, 64)
    assert not torch.equal(w["lm_head.weight"], w["backbone.embeddings.weight"])
    a = torch.exp(w["backbone.layers.0.mixer.A_log"])  # (Hh,)
    assert a.shape == (8,) and a.min() == pytest.approx(1.0) and a.max() == pytest.approx(16.0)
    dt = torch.nn.functional.softplus(w["backbone.layers.0.mixer.dt_bias"])
    assert DT_MIN * 0.99 <= dt.min() and dt.max() <= DT_MAX * 1.01
    assert torch.equal(w["backbone.layers.0.mixer.norm.weight"], torch.ones(128))


def test_tokenizer_is_deterministic_and_fits_the_model(tmp_path):
    a = write_synthetic_tokenizer(tmp_path / "a", 512)
    write_synthetic_tokenizer(tmp_path / "b", 512)
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (tmp_path / "b" / "tokenizer.json").read_text()
    assert a["vocab_size"] == 512 and a["eos_id"] == 0
    big = write_synthetic_tokenizer(tmp_path / "c", 50280)
    assert 512 < big["vocab_size"] <= 50280  # as many merges as the sample text supports


def test_tokenizer_needs_room_for_the_bytes(tmp_path):
    with pytest.raises(ValueError, match="257"):
        write_synthetic_tokenizer(tmp_path, 100)
