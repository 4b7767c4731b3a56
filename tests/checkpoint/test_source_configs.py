"""The hub models' own config files give the architectures of the reference's §2 table.

The config dicts below are the published files' fields (mamba-*-hf config.json, state-spaces mamba2
config.json, Codestral params.json); the expected numbers are the §2 table, not the parser's output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mambapipe.checkpoint import detect_source
from mambapipe.checkpoint.errors import ConvertError
from mambapipe.checkpoint.source_specs import (
    spec_from_hf_mamba,
    spec_from_hf_mamba2,
    spec_from_mamba_ssm,
    spec_from_mistral,
)

MAMBA_130M_HF = {"architectures": ["MambaForCausalLM"], "model_type": "mamba", "d_model": 768, "n_layer": 24,
                 "hidden_size": 768, "num_hidden_layers": 24, "intermediate_size": 1536, "d_inner": 1536,
                 "expand": 2, "state_size": 16, "conv_kernel": 4, "time_step_rank": 48, "vocab_size": 50280,
                 "pad_vocab_size_multiple": 8, "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
                 "ssm_cfg": {}, "use_bias": False, "use_conv_bias": True, "layer_norm_epsilon": 1e-5}
MAMBA_2P8B_HF = MAMBA_130M_HF | {"d_model": 2560, "hidden_size": 2560, "n_layer": 64, "num_hidden_layers": 64,
                                 "intermediate_size": 5120, "d_inner": 5120, "time_step_rank": 160}
MAMBA2_130M = {"d_model": 768, "d_intermediate": 0, "n_layer": 24, "vocab_size": 50277,
               "ssm_cfg": {"layer": "Mamba2"}, "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True,
               "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 16, "tie_embeddings": True}
MAMBA2_2P7B = MAMBA2_130M | {"d_model": 2560, "n_layer": 64}
CODESTRAL = {"dim": 4096, "n_layers": 64, "vocab_size": 32768, "n_groups": 8, "rms_norm": True,
             "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 1,
             "tie_embeddings": False, "model_type": "mamba"}

# §2: d_model, layers, vocab (stored), N, Di, heads, G, conv_dim, in_proj rows, dt_rank, tied
TABLE = {
    "mamba-130m-hf": (spec_from_hf_mamba, MAMBA_130M_HF, (768, 24, 50280, 16, 1536, 0, 1, 1536, 3072, 48, True)),
    "mamba-2.8b-hf": (spec_from_hf_mamba, MAMBA_2P8B_HF, (2560, 64, 50280, 16, 5120, 0, 1, 5120, 10240, 160, True)),
    "mamba2-130m": (spec_from_mamba_ssm, MAMBA2_130M, (768, 24, 50288, 128, 1536, 24, 1, 1792, 3352, None, True)),
    "mamba2-2.7b": (spec_from_mamba_ssm, MAMBA2_2P7B, (2560, 64, 50288, 128, 5120, 80, 1, 5376, 10576, None, True)),
    "codestral-7b": (spec_from_mistral, CODESTRAL, (4096, 64, 32768, 128, 8192, 128, 8, 10240, 18560, None, False)),
}


@pytest.mark.parametrize("name", TABLE)
def test_hub_configs_give_reference_shapes(name):
    parse, config, expected = TABLE[name]
    s = parse(config, Path(name))
    dt_rank = s.dt_rank if not s.is_mamba2 else None
    got = (s.hidden_size, s.num_layers, s.vocab_size, s.state_size, s.intermediate_size, s.num_heads,
           s.n_groups, s.conv_dim, s.in_proj_rows, dt_rank, s.tie_embeddings)
    assert got == expected


@pytest.mark.parametrize("field, value, match", [
    ("norm_before_gate", True, r"ssm_cfg\.norm_before_gate=True is not supported"),
    ("D_has_hdim", True, r"ssm_cfg\.D_has_hdim=True is not supported"),
    ("dt_limit", [0.001, 0.1], r"ssm_cfg\.dt_limit=\[0\.001, 0\.1\] clamps dt"),
    ("mystery_knob", 3, r"unknown ssm_cfg field\(s\) \['mystery_knob'\]"),
])
def test_mamba_ssm_fields_trtllm_cannot_express_are_refused(field, value, match):
    config = MAMBA2_130M | {"ssm_cfg": {"layer": "Mamba2", field: value}}
    with pytest.raises(ConvertError, match=match):
        spec_from_mamba_ssm(config, Path("config.json"))


def test_mamba_ssm_mlp_blocks_refused():
    with pytest.raises(ConvertError, match=r"d_intermediate=4096 \(MLP blocks\)"):
        spec_from_mamba_ssm(MAMBA2_130M | {"d_intermediate": 4096}, Path("config.json"))


HF_MAMBA2 = {"model_type": "mamba2", "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 512, "num_heads": 8,
             "head_dim": 16, "n_groups": 1, "state_size": 16}


@pytest.mark.parametrize("parse, config, field, shown, expected", [
    (spec_from_hf_mamba, MAMBA_130M_HF | {"hidden_size": "sixty-four"}, "hidden_size", '"sixty-four"', "an integer"),
    (spec_from_hf_mamba, MAMBA_130M_HF | {"vocab_size": 512.7}, "vocab_size", "512.7", "an integer"),  # not 512
    (spec_from_hf_mamba, MAMBA_130M_HF | {"expand": None}, "expand", "null", "an integer"),
    (spec_from_hf_mamba, MAMBA_130M_HF | {"use_bias": "false"}, "use_bias", '"false"', "true or false"),
    (spec_from_hf_mamba, MAMBA_130M_HF | {"time_step_rank": "48"}, "time_step_rank", '"48"', 'an integer or "auto"'),
    (spec_from_hf_mamba2, HF_MAMBA2 | {"time_step_limit": "abc"}, "time_step_limit", '"abc"', "a pair of numbers"),
    (spec_from_hf_mamba2, HF_MAMBA2 | {"num_heads": True}, "num_heads", "true", "an integer"),
    (spec_from_mamba_ssm, MAMBA2_130M | {"d_model": "768"}, "d_model", '"768"', "an integer"),
    (spec_from_mamba_ssm, MAMBA2_130M | {"ssm_cfg": {"layer": "Mamba2", "expand": None}}, "ssm_cfg.expand", "null",
     "an integer"),
    (spec_from_mamba_ssm, MAMBA2_130M | {"ssm_cfg": "Mamba2"}, "ssm_cfg", '"Mamba2"', "an object"),
    (spec_from_mamba_ssm, MAMBA2_130M | {"tie_embeddings": "no"}, "tie_embeddings", '"no"', "true or false"),
    (spec_from_mistral, CODESTRAL | {"n_groups": 8.0}, "n_groups", "8.0", "an integer"),
])
def test_a_field_of_the_wrong_type_is_named_in_one_line(parse, config, field, shown, expected):
    """int() and bool() would truncate 512.7, read "false" as true, or crash on "sixty-four" with neither file nor
    field named."""
    path = Path("/models/mine/config.json")
    with pytest.raises(ConvertError) as info:
        parse(config, path)
    assert str(info.value) == f"{path}: {field}={shown} is not {expected}; correct {field} in config.json"


@pytest.mark.parametrize("field, value, shown, reason", [
    ("dtype", "float17", '"float17"', "module 'torch' has no attribute 'float17'"),  # found by its value
    ("vocab_size", 512.7, "512.7", "Field 'vocab_size' expected int, got float (value: 512.7)"),
    ("num_heads", "2", '"2"', "Field 'num_heads' expected int, got str (value: '2')"),
])
def test_an_hf_config_transformers_refuses_is_one_line_naming_the_field(tmp_path, hf_mamba2, field, value, shown,
                                                                        reason):
    """The evaluate step's AutoTokenizer and compare_hf read config.json through transformers: what it refuses is
    found where the checkpoint is detected (the download step's plan check, the convert step), not after the build."""
    model_dir = shutil.copytree(hf_mamba2, tmp_path / "model")
    config = model_dir / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {field: value}))
    with pytest.raises(ConvertError) as info:
        detect_source(model_dir)
    assert str(info.value) == (f"{config}: transformers' Mamba2Config refuses {field}={shown} ({reason}); "
                               f"correct {field} in config.json")


@pytest.mark.parametrize("parse, config", [(spec_from_hf_mamba, MAMBA_130M_HF),
                                           (spec_from_hf_mamba2, {"hidden_size": 64, "num_hidden_layers": 2,
                                                                  "vocab_size": 100, "num_heads": 2, "n_groups": 1})])
def test_an_activation_other_than_silu_is_refused(parse, config):
    """TensorRT-LLM's layers hard-wire SiLU; a gelu model converted anyway would compute a different function."""
    with pytest.raises(ConvertError, match=r'hidden_act="gelu" is not supported: .* only hidden_act "silu" converts'):
        parse(config | {"hidden_act": "gelu"}, Path("config.json"))
    assert parse(config | {"hidden_act": "silu"}, Path("config.json")).conv_kernel == 4


def test_a_width_one_conv_is_refused_by_the_spec():
    with pytest.raises(ValueError, match="conv_kernel must be >= 2"):
        spec_from_hf_mamba(MAMBA_130M_HF | {"conv_kernel": 1}, Path("config.json"))


def test_a_layer_norm_epsilon_the_format_drops_is_said_once_at_conversion(tmp_path, hf_mamba2, caplog):
    from mambapipe.checkpoint.convert import convert_checkpoint

    model_dir = shutil.copytree(hf_mamba2, tmp_path / "model")
    config = model_dir / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"layer_norm_epsilon": 1e-6}))
    convert_checkpoint(model_dir, tmp_path / "out", "float32", progress=False)
    said = [r.getMessage() for r in caplog.records if "layer_norm_epsilon" in r.getMessage()]
    assert said == [f"{config}: layer_norm_epsilon=1e-06 is not carried over: TensorRT-LLM's Mamba checkpoint "
                    "normalizes with 1e-05, so logits differ slightly from transformers' on this checkpoint"]
    caplog.clear()
    config.write_text(json.dumps(json.loads(config.read_text()) | {"layer_norm_epsilon": 1e-5}))
    convert_checkpoint(model_dir, tmp_path / "out", "float32", progress=False)
    assert not [r for r in caplog.records if "layer_norm_epsilon" in r.getMessage()]
