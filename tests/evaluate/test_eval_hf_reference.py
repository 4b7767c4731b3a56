"""When transformers can stand as the reference for a model: the checkpoint's layout, and for a grouped
Mamba2 whether the installed transformers norms the gated RMSNorm per group, as the engines do."""

from __future__ import annotations

import json

import pytest
import torch

from mambapipe.evaluate import hf_reference


def _model_dir(path, config):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_hf_norms_groups_matches_how_the_installed_transformers_norms():
    from transformers import Mamba2Config, Mamba2ForCausalLM

    config = Mamba2Config(vocab_size=16, hidden_size=16, num_hidden_layers=1, state_size=4, num_heads=4,
                          head_dim=8, n_groups=2)
    norm = Mamba2ForCausalLM(config).backbone.layers[0].mixer.norm.eval()
    x = torch.randn(1, 32)
    x[:, 16:] *= 100.0  # the two groups at very different scales
    with torch.no_grad():
        out = norm(x)
    per_group = x.view(1, 2, 16) * torch.rsqrt(x.view(1, 2, 16).pow(2).mean(-1, keepdim=True) + 1e-6)
    grouped = torch.allclose(out, per_group.view(1, 32), rtol=1e-4, atol=1e-5)
    assert hf_reference.hf_norms_groups() == grouped


@pytest.mark.parametrize("norms_groups", [True, False])
def test_grouped_mamba2_needs_a_transformers_that_norms_per_group(tmp_path, monkeypatch, norms_groups):
    monkeypatch.setattr(hf_reference, "hf_norms_groups", lambda: norms_groups)
    grouped = _model_dir(tmp_path, {"model_type": "mamba2", "n_groups": 8})
    problem = hf_reference.hf_reference_problem(grouped)
    assert (problem is None) == norms_groups
    if problem is not None:
        assert "over all 8 groups at once" in problem and "upgrade transformers" in problem


def test_ungrouped_models_need_no_grouped_norm(tmp_path, monkeypatch):
    monkeypatch.setattr(hf_reference, "hf_norms_groups", lambda: False)
    one_group = _model_dir(tmp_path / "a", {"model_type": "mamba2", "n_groups": 1})
    assert hf_reference.hf_reference_problem(one_group) is None
    assert hf_reference.hf_reference_problem(_model_dir(tmp_path / "b", {"model_type": "mamba"})) is None


def test_non_hf_layouts_are_named(tmp_path):
    assert "no config.json" in hf_reference.hf_reference_problem(tmp_path)
    assert "model_type='mistral'" in hf_reference.hf_reference_problem(_model_dir(tmp_path, {"model_type": "mistral"}))


# transformers' own words (transformers/integrations/hub_kernels.py), one of the four it says without the kernels.
FALLBACK = ("`mamba_chunk_scan_combined` is falling back to its reference PyTorch implementation because `mamba_ssm` "
            "is not installed. This is correct but much slower; install `mamba_ssm` for the optimized kernel.")


@pytest.mark.parametrize("show_progress", [True, False])
def test_transformers_progress_bars_follow_the_progress_setting(show_progress):
    from transformers.utils import logging as transformers_logging

    assert transformers_logging.is_progress_bar_enabled()
    with hf_reference.quiet_transformers(show_progress):
        assert transformers_logging.is_progress_bar_enabled() == show_progress  # its "Loading weights" bar
    assert transformers_logging.is_progress_bar_enabled()


def test_fallback_kernel_warnings_are_said_once_in_the_run_log_and_other_warnings_pass(caplog):
    """Found by a new user: eval.compare_hf=true printed four of these on a machine without mamba_ssm. They are
    emitted here as transformers does (warning_once would say each once a process, whichever test came first)."""
    import logging

    shown = []  # what reaches transformers' own handlers (its console line), which do not propagate to caplog's
    transformers_root = logging.getLogger("transformers")
    handler = logging.Handler()
    handler.emit = lambda record: shown.append(record.getMessage())
    transformers_root.addHandler(handler)
    kernels = logging.getLogger("transformers.integrations.hub_kernels")
    try:
        with caplog.at_level("INFO", logger=hf_reference.__name__), hf_reference.quiet_transformers(False):
            kernels.warning(FALLBACK)
            kernels.warning(FALLBACK.replace("mamba_chunk_scan_combined", "causal_conv1d_fn")
                            .replace("mamba_ssm", "causal_conv1d"))
            kernels.warning("Failed to load kernel mamba-ssm: no such file")  # a real problem is still shown
    finally:
        transformers_root.removeHandler(handler)
    assert shown == ["Failed to load kernel mamba-ssm: no such file"]
    assert [r.getMessage() for r in caplog.records if r.name == hf_reference.__name__] == [
        "eval.compare_hf: transformers runs Mamba's PyTorch reference kernels, correct but slower than the optimized "
        "ones of causal_conv1d and mamba_ssm (not installed)"]
