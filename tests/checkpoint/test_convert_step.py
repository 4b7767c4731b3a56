"""The `convert` step: plan-time checks, the run on a download artifact, and arch mismatches."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from checkpoint_support import MAMBA2_MISTRAL, as_mamba_ssm, build_hf

from mambapipe.checkpoint import detect_source
from mambapipe.models import ModelSpec
from mambapipe.pipeline.step import StepContext, StepError
from mambapipe.steps.convert import STEP
from mambapipe.steps.download import link_tree
from mambapipe.synthetic import write_synthetic_checkpoint

CREATED = "2026-11-30T00:00:00+00:00"  # a download manifest is complete with its date, as the runner writes it

CODESTRAL = dict(mamba_version="Mamba2", hidden_size=4096, num_layers=64, vocab_size=32768, state_size=128,
                 n_groups=8, tie_embeddings=False)
MAMBA2_130M = dict(mamba_version="Mamba2", hidden_size=768, num_layers=24, vocab_size=50288, state_size=128,
                   pad_vocab_size_multiple=16)


def params(arch: dict, dtype: str = "float16", tp_size: int = 1) -> dict:
    return {"dtype": dtype, "tp_size": tp_size, "model.arch": arch}


def test_declares_its_inputs():
    assert STEP.name == "convert" and STEP.needs == ("download",)
    assert set(STEP.uses) == {"dtype", "tp_size", "model.arch"}


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_check_accepts_codestral_tp(tp):
    STEP.check(params(CODESTRAL, tp_size=tp))


def test_check_refuses_single_group_tp2():
    with pytest.raises(StepError, match=r"^tp_size=2 does not fit model\.arch: use tp_size=1; 2 does not divide "
                                        r"n_groups=1$"):
        STEP.check(params(MAMBA2_130M, tp_size=2))


def test_check_names_the_keys_a_derived_size_comes_from():
    """Mamba1's d_inner is no key: the refusal says which keys make it (found by QA: it said d_inner=194), after the
    tp sizes the model does take: the fix comes first (it was last, after four long reasons, wrapping a sweep's
    table over 20 lines)."""
    arch = dict(mamba_version="Mamba1", hidden_size=97, num_layers=3, vocab_size=1024, state_size=8)
    with pytest.raises(StepError) as refused:
        STEP.check(params(arch, tp_size=4))
    assert str(refused.value) == ("tp_size=4 does not fit model.arch: use tp_size=1 or 2; 4 does not divide "
                                  "d_inner=194 (expand × hidden_size)")


def test_check_names_the_mamba2_keys():
    arch = dict(mamba_version="Mamba2", hidden_size=96, num_layers=2, vocab_size=512, state_size=16, head_dim=16,
                n_groups=4)
    with pytest.raises(StepError) as refused:
        STEP.check(params(arch, tp_size=8))
    assert str(refused.value) == ("tp_size=8 does not fit model.arch: use tp_size=1, 2 or 4; 8 does not divide "
                                  "n_groups=4 or heads=12 (d_inner / head_dim)")


def test_check_refuses_unknown_dtype():
    with pytest.raises(StepError, match="unknown dtype 'int4'"):
        STEP.check(params(MAMBA2_130M, dtype="int4"))


MAMBA1_130M = dict(mamba_version="Mamba1", hidden_size=768, num_layers=24, vocab_size=50280, state_size=16)


@pytest.mark.parametrize("arch, field, value", [
    (MAMBA2_130M, "hidden_size", 0), (MAMBA1_130M, "num_layers", 0), (MAMBA2_130M, "vocab_size", 0),
    (MAMBA1_130M, "state_size", -1), (MAMBA1_130M, "conv_kernel", 0), (MAMBA2_130M, "expand", 0),
    (MAMBA2_130M, "head_dim", 0), (MAMBA2_130M, "n_groups", 0), (MAMBA2_130M, "chunk_size", 0),
    (MAMBA1_130M, "time_step_rank", -1),
])
def test_check_refuses_a_size_below_its_minimum_naming_it(arch, field, value):
    """Caught at plan time: a 0 hidden_size divided by zero mid-run, 0 layers built a model computing nothing."""
    with pytest.raises(StepError, match=rf"^model\.arch is not a valid architecture: {field} must be >= "):
        STEP.check(params(arch | {field: value}))


def test_sizes_a_version_does_not_use_are_not_checked():
    STEP.check(params(MAMBA1_130M | {"head_dim": 0, "n_groups": 0, "chunk_size": 0}))


def download_artifact(tmp_path, spec: ModelSpec, commit: str | None = None):
    download = tmp_path / "download"
    write_synthetic_checkpoint(spec, download / "model", "float32", seed=0, progress=False)
    if commit:
        (download / "manifest.json").write_text(json.dumps({"environment": {"commit": commit}, "created": CREATED}))
    return download


def test_run_converts_the_synthetic_download(tmp_path):
    spec = ModelSpec("Mamba2", 64, 2, 64, 4, head_dim=8, n_groups=8)
    download = download_artifact(tmp_path, spec, commit="a" * 40)
    arch = dataclasses.asdict(spec)
    STEP.check(params(arch, tp_size=4))
    facts = STEP.run(params(arch, tp_size=4), {"download": download}, tmp_path / "out",
                     StepContext(show_progress=False))
    assert facts["source_format"] == "hf_mamba2" and facts["source_revision"] == "a" * 40
    assert sorted(facts["sha256"]) == ["config.json"] + [f"rank{r}.safetensors" for r in range(4)]
    assert ModelSpec.from_trtllm_config(json.loads((tmp_path / "out/config.json").read_text())) == spec


def arch_mismatch_error(tmp_path, checkpoint: Path, download: Path) -> str:
    """The StepError of a run on `download` whose model.arch is `checkpoint`'s own but for hidden_size 32."""
    arch = dataclasses.asdict(detect_source(checkpoint).spec) | {"hidden_size": 32}
    with pytest.raises(StepError) as info:
        STEP.run(params(arch), {"download": download}, tmp_path / "out", StepContext(show_progress=False))
    return str(info.value)


def test_run_refuses_a_checkpoint_that_is_not_model_arch(tmp_path, hf_mamba1):
    download = tmp_path / "download"
    shutil.copytree(hf_mamba1, download / "model")
    message = arch_mismatch_error(tmp_path, hf_mamba1, download)
    assert "does not match model.arch (hidden_size: config 32, checkpoint 16; " in message


def test_run_reports_bad_weights_as_step_error(tmp_path, hf_mamba1):
    download = tmp_path / "download"
    shutil.copytree(hf_mamba1, download / "model")
    weights = download / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    arch = dataclasses.asdict(detect_source(hf_mamba1).spec)
    with pytest.raises(StepError, match=r"model\.safetensors: truncated safetensors file"):
        STEP.run(params(arch), {"download": download}, tmp_path / "out", StepContext(show_progress=False))


@pytest.mark.parametrize("source, fix", [
    ("local", "fix or replace it in model.path"),
    ("hub", "remove the damaged copy from the Hugging Face cache (hf cache rm model/state-spaces/mamba-130m-hf), "
            "then run with force=[download]"),
])
def test_a_damaged_file_is_named_where_the_source_keeps_it_with_the_fix_for_that_source(tmp_path, hf_mamba1,
                                                                                       source, fix):
    """Not the download artifact's link to it, nor "re-download" for a file the user keeps in model.path."""
    origin = Path(shutil.copytree(hf_mamba1, tmp_path / "origin"))  # model.path, or the hub snapshot
    weights = origin / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    download = tmp_path / "cache" / "download" / "key"
    link_tree(origin, download / "model")
    manifest = {"params": {"model.source": source, "model.repo_id": "state-spaces/mamba-130m-hf"},
                "facts": {"source": source, "from": str(origin)}}
    (download / "manifest.json").write_text(json.dumps(manifest | {"created": CREATED}))
    arch = dataclasses.asdict(detect_source(hf_mamba1).spec)
    with pytest.raises(StepError) as info:
        STEP.run(params(arch), {"download": download}, tmp_path / "out", StepContext(show_progress=False))
    message = str(info.value)
    assert message.startswith(f"{weights}: truncated safetensors file (") and message.endswith(f"; {fix}")
    assert str(download) not in message and "re-download" not in message


def test_an_arch_mismatch_names_model_path_not_the_cache(tmp_path, hf_mamba1):
    download = tmp_path / "cache" / "download" / "key"
    link_tree(hf_mamba1, download / "model")
    manifest = {"params": {"model.source": "local"}, "facts": {"source": "local", "from": str(hf_mamba1)}}
    (download / "manifest.json").write_text(json.dumps(manifest | {"created": CREATED}))
    message = arch_mismatch_error(tmp_path, hf_mamba1, download)
    assert message.startswith(f"{hf_mamba1}: checkpoint does not match model.arch")


def test_a_damaged_synthetic_file_says_to_make_the_download_again(tmp_path, hf_mamba1):
    download = tmp_path / "download"
    shutil.copytree(hf_mamba1, download / "model")
    (download / "model" / "model.safetensors").write_bytes(b"\0" * 4)
    manifest = {"params": {}, "facts": {"source": "synthetic"}, "created": CREATED}
    (download / "manifest.json").write_text(json.dumps(manifest))
    arch = dataclasses.asdict(detect_source(hf_mamba1).spec)
    with pytest.raises(StepError, match=r"model\.safetensors: truncated safetensors file \(no header\); the cached "
                                        r"download is damaged: run with force=\[download\]$"):
        STEP.run(params(arch), {"download": download}, tmp_path / "out", StepContext(show_progress=False))


def test_run_accepts_hf_config_without_vocab_padding_field(tmp_path):
    """HF configs may omit pad_vocab_size_multiple; the padded vocab_size itself is still compared."""
    spec = ModelSpec("Mamba1", 16, 2, 64, 4, pad_vocab_size_multiple=8)
    download = download_artifact(tmp_path, spec)
    facts = STEP.run(params(dataclasses.asdict(spec)), {"download": download}, tmp_path / "out",
                     StepContext(show_progress=False))
    assert facts["source_format"] == "hf_mamba" and facts["source_files"] == ["model.safetensors"]


def test_a_mamba_ssm_mamba2_without_its_ssm_cfg_says_why_it_reads_as_mamba1(tmp_path):
    """mamba_ssm builds Mamba1 unless ssm_cfg.layer says "Mamba2": a config that lost its ssm_cfg says so."""
    model = as_mamba_ssm(build_hf(MAMBA2_MISTRAL), tmp_path / "download" / "model")
    arch = dataclasses.asdict(detect_source(model).spec)
    config = json.loads((model / "config.json").read_text())
    del config["ssm_cfg"]
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(StepError) as info:
        STEP.run(params(arch), {"download": tmp_path / "download"}, tmp_path / "out", StepContext(show_progress=False))
    assert ('mamba_version: config Mamba2, checkpoint Mamba1 (config.json has no ssm_cfg with layer "Mamba2", so '
            "mamba_ssm reads it as Mamba1)") in str(info.value)


def test_a_tp_size_below_1_is_one_problem_that_does_not_blame_the_model(compose_config, tmp_path):
    """It was two: 'convert: tp_size=0 does not fit model.arch: tp_size must be >= 1, got 0; it runs with tp_size=1,
    2 or 4' and build's 'tp_size must be >= 1, got 0'."""
    import io

    from rich.console import Console

    from mambapipe.pipeline.runner import run_recipe

    console = Console(file=io.StringIO(), width=400, color_system=None)
    result = run_recipe(compose_config("tp_size=0"), tmp_path / "run", console=console)
    assert result.reason == "convert: tp_size must be >= 1, got 0"
    assert [line for line in console.file.getvalue().splitlines() if line.startswith("problem ")] == \
        ["problem convert: tp_size must be >= 1, got 0"]
