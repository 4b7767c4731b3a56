"""The native engine on a CUDA device agrees with itself on the CPU (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch
from engine_support import MAMBA1, MAMBA2, build_from_hf, hf_model

from mambapipe.engine.api import load_engine
from mambapipe.models import ModelSpec

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
PROMPTS = [[5, 17, 3, 88, 41, 9, 60, 2, 2], [12], [70, 2, 33, 8]]


@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
@pytest.mark.parametrize("dtype,rel", [("float32", 1e-4), ("bfloat16", 1e-1)])
def test_cuda_matches_cpu(arch, dtype, rel, tmp_path):
    spec = ModelSpec(**(MAMBA1 if arch == "mamba1" else MAMBA2))
    engine = build_from_hf(hf_model(spec), spec, tmp_path, dtype=dtype)
    cpu, gpu = load_engine(engine, "cpu"), load_engine(engine, "cuda")
    lengths = torch.tensor([len(p) for p in PROMPTS])
    tokens = torch.zeros(len(PROMPTS), int(lengths.max()), dtype=torch.long)
    for row, p in enumerate(PROMPTS):
        tokens[row, : len(p)] = torch.tensor(p)
    slots = torch.arange(len(PROMPTS))
    ref = cpu.model.prefill(tokens, lengths, cpu.state, slots)
    out = gpu.model.prefill(tokens.cuda(), lengths.cuda(), gpu.state, slots.cuda()).cpu()
    assert (out - ref).abs().max() <= rel * ref.abs().max()
    if dtype == "float32":
        assert gpu.generate(PROMPTS, 12).output_ids == cpu.generate(PROMPTS, 12).output_ids
