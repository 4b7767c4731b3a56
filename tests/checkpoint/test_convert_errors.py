"""Bad input fails with one line naming the file and the tensor, and leaves nothing that looks complete."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from checkpoint_support import MAMBA2_MISTRAL, as_mamba_ssm, as_mistral, build_hf, save_hf
from safetensors.torch import load_file, save_file

from mambapipe.checkpoint import ConvertError, convert_checkpoint


@pytest.fixture
def hf_copy(tmp_path, hf_mamba1) -> Path:
    return Path(shutil.copytree(hf_mamba1, tmp_path / "src"))


def edit_weights(src: Path, edit) -> None:
    weights = src / "model.safetensors"
    tensors = load_file(str(weights))
    edit(tensors)
    save_file(tensors, str(weights))


def assert_fails_cleanly(src: Path, out: Path, match: str, dtype: str = "float16", tp_size: int = 1) -> str:
    out.mkdir(exist_ok=True)
    (out / "config.json").write_text("{}")  # a stale config from an earlier run must not survive
    with pytest.raises(ConvertError, match=match) as info:
        convert_checkpoint(src, out, dtype, tp_size, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert sorted(p.name for p in out.iterdir()) == []
    return message


def test_missing_tensor(tmp_path, hf_copy):
    edit_weights(hf_copy, lambda t: t.pop("backbone.layers.1.mixer.D"))
    msg = assert_fails_cleanly(hf_copy, tmp_path / "out", r"missing tensor 'backbone\.layers\.1\.mixer\.D'")
    assert "model.safetensors" in msg


LAYOUTS = {"hf": (save_hf, "model.safetensors"), "mamba_ssm": (as_mamba_ssm, "pytorch_model.bin"),
           "mistral": (as_mistral, "consolidated.safetensors")}


@pytest.mark.parametrize("layout, key", [
    ("hf", "backbone.layers.1.mixer.D"), ("hf", "backbone.embeddings.weight"), ("hf", "lm_head.weight"),
    ("mamba_ssm", "backbone.layers.0.mixer.conv1d.bias"), ("mamba_ssm", "backbone.embedding.weight"),
    ("mamba_ssm", "lm_head.weight"),
    ("mistral", "model.backbone.norm_f.weight"), ("mistral", "model.backbone.embedding.weight"),
    ("mistral", "model.lm_head.weight"),
])
def test_a_missing_tensor_is_named_as_the_source_spells_its_keys(tmp_path, layout, key):
    """Not by the internal canonical name (`layers.1.mixer.D`), which the user's files do not contain."""
    write, weights_file = LAYOUTS[layout]
    src = write(build_hf(MAMBA2_MISTRAL), tmp_path / "src")
    weights = src / weights_file
    if weights.suffix == ".bin":
        tensors = torch.load(weights, weights_only=True)
        del tensors[key]
        torch.save(tensors, weights)
    else:
        tensors = load_file(str(weights))
        del tensors[key]
        save_file(tensors, str(weights))
    assert_fails_cleanly(src, tmp_path / "out", f"{re.escape(weights_file)}: missing tensor {re.escape(repr(key))} ")


def test_unexpected_tensor(tmp_path, hf_copy):
    edit_weights(hf_copy, lambda t: t.update({"backbone.layers.0.mixer.extra.weight": torch.zeros(2)}))
    assert_fails_cleanly(hf_copy, tmp_path / "out", r"model\.safetensors: tensor 'backbone\.layers\.0\.mixer\.extra"
                                                    r"\.weight' is unexpected")


def test_mis_shaped_tensor(tmp_path, hf_copy):
    edit_weights(hf_copy, lambda t: t.update({"backbone.layers.0.mixer.conv1d.weight": torch.zeros(32, 1, 3)}))
    assert_fails_cleanly(hf_copy, tmp_path / "out", r"model\.safetensors: tensor 'backbone\.layers\.0\.mixer\.conv1d"
                                                    r"\.weight' has shape \[32, 1, 3\], expected \[32, 1, 4\]")


def test_non_float_tensor(tmp_path, hf_copy):
    edit_weights(hf_copy, lambda t: t.update({"backbone.norm_f.weight": torch.ones(16, dtype=torch.int32)}))
    assert_fails_cleanly(hf_copy, tmp_path / "out", r"'backbone\.norm_f\.weight' has dtype torch\.int32")


def test_truncated_safetensors(tmp_path, hf_copy):
    weights = hf_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert_fails_cleanly(hf_copy, tmp_path / "out", r"model\.safetensors: truncated safetensors file \(tensor '.*'")


def test_unknown_architecture(tmp_path, hf_copy):
    config = json.loads((hf_copy / "config.json").read_text())
    config.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (hf_copy / "config.json").write_text(json.dumps(config))
    assert_fails_cleanly(hf_copy, tmp_path / "out", r"config\.json: unknown architecture \(model_type='llama'")


def test_hybrid_mamba_ssm_refused(tmp_path):
    src = as_mamba_ssm(build_hf(MAMBA2_MISTRAL), tmp_path / "ssm")
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(config | {"attn_layer_idx": [1]}))
    assert_fails_cleanly(src, tmp_path / "out", r"attn_layer_idx=\[1\] makes a hybrid model")


@pytest.mark.parametrize("payload, match", [
    ([1, 2, 3], r"pytorch_model\.bin: holds a list, not a state dict"),
    ({"backbone.norm_f.weight": "not a tensor"}, r"pytorch_model\.bin: holds a dict, not a state dict"),
])
def test_bin_that_is_not_a_state_dict(tmp_path, payload, match):
    src = as_mamba_ssm(build_hf(MAMBA2_MISTRAL), tmp_path / "ssm")
    torch.save(payload, src / "pytorch_model.bin")
    assert_fails_cleanly(src, tmp_path / "out", match)


def test_bin_with_arbitrary_pickle(tmp_path):
    src = as_mamba_ssm(build_hf(MAMBA2_MISTRAL), tmp_path / "ssm")
    torch.save({"weights": Path("/etc")}, src / "pytorch_model.bin")  # a global weights_only refuses
    message = assert_fails_cleanly(src, tmp_path / "out", r"pytorch_model\.bin: not a loadable weights-only PyTorch "
                                                          r"state dict \(Unsupported global: GLOBAL pathlib")
    assert "\x1b" not in message  # torch's advice, with its terminal escapes, is left out


@pytest.mark.parametrize("write, match", [
    (lambda f: torch.save({"a": torch.ones(2)}, f, _use_new_zipfile_serialization=False),
     r"pytorch_model\.bin: a legacy \(pre-zip\) torch.save file, which cannot be memory-mapped; re-save it"),
    (lambda f: f.write_bytes(b"not a pickle at all"),
     r"pytorch_model\.bin: not a loadable weights-only PyTorch state dict \(Unsupported operand 110\)"),
])
def test_a_bin_that_cannot_be_memory_mapped_says_which_kind_it_is(tmp_path, write, match):
    """torch's own message for both is its hint to re-save with the zip format, which fits only the first."""
    src = as_mamba_ssm(build_hf(MAMBA2_MISTRAL), tmp_path / "ssm")
    write(src / "pytorch_model.bin")
    assert "_use_new_zipfile_serialization" not in assert_fails_cleanly(src, tmp_path / "out", match)


def test_an_index_that_maps_a_tensor_to_no_file_name_is_named(tmp_path, hf_copy):
    index = {"metadata": {}, "weight_map": {"backbone.norm_f.weight": 3}}
    (hf_copy / "model.safetensors.index.json").write_text(json.dumps(index))
    assert_fails_cleanly(hf_copy, tmp_path / "out", r"model\.safetensors\.index\.json: weight_map maps a tensor to "
                                                     r"something other than a shard's file name")


def test_values_that_overflow_float16(tmp_path, hf_copy):
    """The bad tensor is late in the write order, so rank files were half written when it is found."""
    def poison(t):
        t["backbone.layers.1.mixer.out_proj.weight"][0, 0] = 1e6
    edit_weights(hf_copy, poison)
    assert_fails_cleanly(hf_copy, tmp_path / "out", r"'backbone\.layers\.1\.mixer\.out_proj\.weight' has values up "
                                                    r"to 1e\+06, beyond torch\.float16.*bfloat16", tp_size=2)
    convert_checkpoint(hf_copy, tmp_path / "bf16", "bfloat16", progress=False)  # bf16 can hold it


def test_nan_in_source(tmp_path, hf_copy):
    edit_weights(hf_copy, lambda t: t["backbone.norm_f.weight"].__setitem__(3, float("nan")))
    assert_fails_cleanly(hf_copy, tmp_path / "out", r"'backbone\.norm_f\.weight' contains NaN or inf", "float32")


def test_unknown_dtype(tmp_path, hf_copy):
    with pytest.raises(ConvertError, match=r"unknown dtype 'float8'; use one of float16, bfloat16, float32"):
        convert_checkpoint(hf_copy, tmp_path / "out", "float8", progress=False)


def test_not_a_checkpoint_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConvertError, match=r"empty: no config\.json"):
        convert_checkpoint(tmp_path / "empty", tmp_path / "out", "float16", progress=False)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_finiteness_check_by_exponent_bits(dtype):
    from mambapipe.checkpoint.convert import _all_finite

    values = torch.randn(100).to(dtype)
    values[:3] = torch.tensor([torch.finfo(dtype).max, torch.finfo(dtype).tiny, -0.0], dtype=dtype)
    assert _all_finite(values)
    for bad in (float("inf"), float("-inf"), float("nan")):
        poisoned = values.clone()
        poisoned[50] = bad
        assert not _all_finite(poisoned)


def test_a_rank_file_that_cannot_open_leaves_no_partial_files(tmp_path, hf_copy, monkeypatch):
    from mambapipe.checkpoint import convert

    class SecondOpenFails(convert.StreamingSafetensorsWriter):
        opened = 0

        def __init__(self, path, plan):
            SecondOpenFails.opened += 1
            if SecondOpenFails.opened == 2:
                raise OSError(f"{path}: no space left on device")
            super().__init__(path, plan)

    monkeypatch.setattr(convert, "StreamingSafetensorsWriter", SecondOpenFails)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="no space left"):
        convert_checkpoint(hf_copy, out, "float32", 2, progress=False)
    assert sorted(p.name for p in out.iterdir()) == []  # rank0's .partial is gone too


def test_an_unreadable_weight_file_or_directory_is_one_line_naming_it(tmp_path, monkeypatch):
    from mambapipe.checkpoint.detect import source_format
    from mambapipe.checkpoint.safetensors_io import read_header

    (tmp_path / "model.safetensors").mkdir()  # opening it fails as an unreadable file would (root reads any mode)
    with pytest.raises(ConvertError, match=r"model\.safetensors: cannot be read \(Is a directory\); make it readable"):
        read_header(tmp_path / "model.safetensors")

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "is_dir", denied)
    with pytest.raises(ConvertError, match=rf"^{tmp_path}: cannot be read \(Permission denied\); make it readable$"):
        source_format(tmp_path)
