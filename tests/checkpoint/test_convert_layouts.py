"""The same weights in every source layout are recognised by content and convert to identical bytes."""

from __future__ import annotations

import pytest
from checkpoint_support import (
    MAMBA1_UNTIED_BIAS,
    MAMBA2_MISTRAL,
    as_mamba_ssm,
    as_mistral,
    build_hf,
    save_hf,
    ssm_state_dict,
)

from mambapipe.checkpoint import HF_MAMBA, HF_MAMBA2, MAMBA_SSM, MISTRAL, convert_checkpoint, detect_source


def convert_all(layouts: dict, tmp_path, dtype: str, tp_size: int) -> dict[str, dict[str, bytes]]:
    outputs = {}
    for fmt, src in layouts.items():
        assert detect_source(src).format == fmt
        out = tmp_path / f"out-{fmt}"
        convert_checkpoint(src, out, dtype, tp_size, progress=False)
        outputs[fmt] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    return outputs


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mamba2_layouts_convert_to_identical_files(tmp_path, dtype):
    model = build_hf(MAMBA2_MISTRAL, seed=2)
    layouts = {HF_MAMBA2: save_hf(model, tmp_path / "hf"), MAMBA_SSM: as_mamba_ssm(model, tmp_path / "ssm"),
               MISTRAL: as_mistral(model, tmp_path / "mistral")}
    outputs = convert_all(layouts, tmp_path, dtype, tp_size=2)
    assert set(outputs[HF_MAMBA2]) == {"config.json", "rank0.safetensors", "rank1.safetensors"}
    assert outputs[MAMBA_SSM] == outputs[HF_MAMBA2]
    assert outputs[MISTRAL] == outputs[HF_MAMBA2]


def test_mamba1_layouts_convert_to_identical_files(tmp_path):
    model = build_hf(MAMBA1_UNTIED_BIAS, seed=3)
    layouts = {HF_MAMBA: save_hf(model, tmp_path / "hf"), MAMBA_SSM: as_mamba_ssm(model, tmp_path / "ssm")}
    outputs = convert_all(layouts, tmp_path, "float16", tp_size=1)
    assert outputs[MAMBA_SSM] == outputs[HF_MAMBA]


def test_detection_ignores_directory_names(tmp_path):
    model = build_hf(MAMBA2_MISTRAL, seed=2)
    # A misleading name: mamba_ssm content in a directory called like an HF Mamba1 repo.
    src = as_mamba_ssm(model, tmp_path / "mamba-130m-hf")
    info = detect_source(src)
    assert info.format == MAMBA_SSM and info.spec.is_mamba2 and info.spec.n_groups == 2


def test_mamba_ssm_honours_ssm_cfg(tmp_path):
    """TensorRT-LLM ignores ssm_cfg and assumes d_state=128, headdim=64, ngroups=1; we read it."""
    model = build_hf(dict(MAMBA2_MISTRAL, state_size=16, head_dim=32, num_heads=4, n_groups=4), seed=4)
    spec = detect_source(as_mamba_ssm(model, tmp_path / "ssm")).spec
    assert (spec.state_size, spec.head_dim, spec.num_heads, spec.n_groups) == (16, 32, 4, 4)
    assert spec.conv_dim == 128 + 2 * 4 * 16


def test_sharded_safetensors_index(tmp_path):
    """HF sharded checkpoints (model.safetensors.index.json) read like a single file."""
    model = build_hf(MAMBA2_MISTRAL, seed=2)
    single = save_hf(model, tmp_path / "single")
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="100KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    convert_checkpoint(single, tmp_path / "a", "float16", progress=False)
    convert_checkpoint(sharded, tmp_path / "b", "float16", progress=False)
    assert (tmp_path / "a/rank0.safetensors").read_bytes() == (tmp_path / "b/rank0.safetensors").read_bytes()


def test_mamba_ssm_pads_vocab(tmp_path):
    """mamba_ssm stores the embedding padded to pad_vocab_size_multiple (50277 -> 50288 for mamba2)."""
    model = build_hf(dict(MAMBA2_MISTRAL, vocab_size=64), seed=2)
    src = as_mamba_ssm(model, tmp_path / "ssm")
    cfg = (src / "config.json").read_text().replace('"vocab_size": 64', '"vocab_size": 60')
    (src / "config.json").write_text(cfg.replace('"pad_vocab_size_multiple": 1', '"pad_vocab_size_multiple": 16'))
    assert detect_source(src).spec.vocab_size == 64


def test_sharded_bin_index(tmp_path):
    """mamba_ssm-style weights split over pytorch_model-0000x.bin files with an index read like one file."""
    import json

    import torch

    model = build_hf(MAMBA2_MISTRAL, seed=2)
    single = as_mamba_ssm(model, tmp_path / "single")
    sharded = as_mamba_ssm(model, tmp_path / "sharded")
    (sharded / "pytorch_model.bin").unlink()
    state = ssm_state_dict(model)
    names = sorted(state)
    weight_map = {}
    for part, chunk in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
        file = f"pytorch_model-0000{part + 1}-of-00002.bin"
        torch.save({n: state[n] for n in chunk}, sharded / file)
        weight_map.update({n: file for n in chunk})
    (sharded / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    convert_checkpoint(single, tmp_path / "a", "float16", progress=False)
    convert_checkpoint(sharded, tmp_path / "b", "float16", progress=False)
    assert (tmp_path / "a/rank0.safetensors").read_bytes() == (tmp_path / "b/rank0.safetensors").read_bytes()
