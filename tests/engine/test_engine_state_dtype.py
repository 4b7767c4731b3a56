"""build.ssm_state_dtype on the CPU torch path: the engine config records it, the state is allocated in
it, and a low-precision state stays close to the fp32 one (each update computes in fp32 and rounds once)."""

from __future__ import annotations

import pytest
import torch
from engine_support import MAMBA1, MAMBA2, build_from_hf, hf_model

from mambapipe.engine.api import load_engine, read_native_engine_config
from mambapipe.models import ModelSpec

# Worst relative logits error over the 6 teacher-forced decode steps below, measured on these tiny models:
# bfloat16 state 3.7e-3 (Mamba1) / 6.2e-3 (Mamba2), float16 4.9e-4 / 1.5e-3; bounds give >= 3x margin.
TOLERANCE = {"bfloat16": 2e-2, "float16": 5e-3}


@pytest.fixture(scope="module", params=["mamba1", "mamba2"])
def engines(request, tmp_path_factory):
    spec = ModelSpec(**(MAMBA1 if request.param == "mamba1" else MAMBA2))
    hf = hf_model(spec)
    root = tmp_path_factory.mktemp(request.param)
    return {s: build_from_hf(hf, spec, root, max_batch_size=2, ssm_state_dtype=s)
            for s in ("auto", "float32", "float16", "bfloat16")}


def _teacher_forced_logits(engine, steps: int = 6) -> list[torch.Tensor]:
    """Prefill two prompts of unequal length, then feed fixed tokens; every step's (2, V) logits."""
    gen = load_engine(engine)
    prompts = torch.tensor([[5, 9, 13, 2, 7, 30], [44, 3, 8, 0, 0, 0]])  # (2, 6) right-padded
    logits = [gen.model.prefill(prompts, torch.tensor([6, 3]), gen.state, torch.tensor([0, 1]))]
    for step in range(steps):
        logits.append(gen.model.decode(torch.tensor([11 + step, 60 - step]), gen.state, 0))  # (2, V)
    return logits


@pytest.mark.parametrize("setting,resolved", [("auto", "float32"), ("float32", "float32"),
                                              ("float16", "float16"), ("bfloat16", "bfloat16")])
def test_engine_config_and_state_follow_the_setting(engines, setting, resolved):
    build = read_native_engine_config(engines[setting])["build_config"]
    assert build["ssm_state_dtype"] == resolved  # auto on the CPU is fp32, the torch path's dtype
    gen = load_engine(engines[setting])
    assert gen.state.ssm.dtype == getattr(torch, resolved)
    assert gen.runtime_path == {"kernels": "torch", "cuda_graphs": False, "ssm_state_dtype": resolved}
    out = gen.generate([[1, 2, 3], [4, 5]], max_new_tokens=4)
    assert [len(t) for t in out.output_ids] == [4, 4]


@pytest.mark.parametrize("low", ["float16", "bfloat16"])
def test_low_precision_state_stays_close_to_fp32(engines, low):
    ref, out = _teacher_forced_logits(engines["float32"]), _teacher_forced_logits(engines[low])
    assert torch.equal(out[0], ref[0])  # prefill computes in fp32 whatever the stored state's dtype
    errs = [float((o - r).norm() / r.norm()) for o, r in zip(out[1:], ref[1:])]
    assert 0 < max(errs) < TOLERANCE[low], f"relative logits errors {errs}"
