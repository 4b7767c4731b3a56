"""A real TensorRT-LLM engine: synthetic HF checkpoint -> our convert -> trtllm-build -> ModelRunner(Cpp).

Runs only where tensorrt_llm is importable and a GPU is present (never on our CPU CI machines)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from mambapipe.backends import get_backend
from mambapipe.backends.base import BuildSettings
from mambapipe.models import ModelSpec

pytestmark = [pytest.mark.gpu, pytest.mark.slow, pytest.mark.skipif(
    importlib.util.find_spec("tensorrt_llm") is None or not torch.cuda.is_available(),
    reason="needs tensorrt_llm and a CUDA GPU (pip install -e '.[trtllm]' --extra-index-url https://pypi.nvidia.com)")]

PROMPTS = [[5, 17, 300, 42, 7], [99], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]


@pytest.mark.parametrize("spec", [
    ModelSpec("Mamba1", 64, 2, 512, 16),
    # TensorRT-LLM's SSD kernels are built for the real models' head_dim 64 / d_state 128 / chunk 256.
    ModelSpec("Mamba2", 128, 2, 512, 128, head_dim=64, n_groups=1, chunk_size=256),
], ids=["mamba1", "mamba2"])
def test_build_and_generate_matches_hf_first_tokens(tmp_path, spec):
    from transformers import AutoModelForCausalLM

    from mambapipe.checkpoint.convert import convert_checkpoint
    from mambapipe.synthetic import write_synthetic_checkpoint

    hf_dir, ckpt, engine = tmp_path / "hf", tmp_path / "ckpt", tmp_path / "engine"
    write_synthetic_checkpoint(spec, hf_dir, "float32", seed=0, progress=False)
    convert_checkpoint(hf_dir, ckpt, "float32", 1)
    backend = get_backend("trtllm")
    assert backend.unavailable_reason("cuda") is None
    facts = backend.build(ckpt, engine, BuildSettings(4, 32, 64, "cuda"))
    assert facts["tp_size"] == 1 and (engine / "rank0.engine").is_file()

    generator = backend.load(engine, "cuda")
    try:
        out = generator.generate(PROMPTS, 8, eos_id=None, stop_at_eos=False)
        assert [len(t) for t in out.output_ids] == [8, 8, 8]
        assert out.prefill_ms > 0 and out.decode_ms_per_step > 0
        eos = out.output_ids[0][0]
        stopped = generator.generate(PROMPTS[:1], 8, eos_id=eos)
        assert stopped.output_ids == [[eos]]
    finally:
        generator.close()

    hf = AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).cuda().eval()
    with torch.no_grad():
        firsts = [int(hf(torch.tensor([p], device="cuda")).logits[0, -1].argmax()) for p in PROMPTS]
    assert [t[0] for t in out.output_ids] == firsts
