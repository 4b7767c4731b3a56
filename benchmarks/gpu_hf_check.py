"""Greedy tokens of the GPU engine (fused kernels + CUDA graphs) vs HF transformers on the same fp32
weights, through the real pipeline pieces (synthetic HF checkpoint -> convert -> build -> load_engine);
and the fp16 / bf16 engines' logits against the fp32 engine's on the same checkpoint."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from mambapipe.backends.base import BuildSettings, SamplingConfig
from mambapipe.checkpoint.convert import convert_checkpoint
from mambapipe.engine.api import load_engine
from mambapipe.engine.build import build_engine
from mambapipe.synthetic import write_synthetic_checkpoint

NEW_TOKENS = 32


def _engine(hf_dir: Path, root: Path, dtype: str):
    ckpt, engine = root / f"ckpt_{dtype}", root / f"engine_{dtype}"
    convert_checkpoint(hf_dir, ckpt, dtype, 1, progress=False)
    build_engine(ckpt, engine, BuildSettings(4, 64, 128, "cuda"), show_progress=False)
    return load_engine(engine, "cuda")


def _hf_greedy(hf_dir: Path, prompts: torch.Tensor) -> list[list[int]]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).cuda().eval()
    model.generation_config.eos_token_id = None  # 32 tokens exactly, like the engine with stop_at_eos=False
    with torch.inference_mode():
        out = model.generate(prompts.cuda(), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                             do_sample=False, pad_token_id=0)
    return out[:, prompts.shape[1]:].tolist()


def _prefill_logits(gen, prompts: torch.Tensor) -> torch.Tensor:
    state, n = gen.state, prompts.shape[0]
    lengths, slots = torch.full((n,), prompts.shape[1], device="cuda"), torch.arange(n, device="cuda")
    return gen.model.prefill(prompts.cuda(), lengths, state, slots, all_logits=True)  # (B, L, V) fp32


def check(spec, seed: int = 0) -> dict:
    prompts = torch.randint(1, 1000, (2, 16), generator=torch.Generator().manual_seed(seed))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_synthetic_checkpoint(spec, root / "hf", "float32", seed, progress=False)
        hf_tokens = _hf_greedy(root / "hf", prompts)
        gen32 = _engine(root / "hf", root, "float32")
        ours = gen32.generate(prompts.tolist(), NEW_TOKENS, SamplingConfig(greedy=True), stop_at_eos=False)
        ref = _prefill_logits(gen32, prompts)
        result = {"tokens_equal_hf": ours.output_ids == hf_tokens,
                  "first_mismatch": _first_mismatch(ours.output_ids, hf_tokens)}
        for dtype in ("float16", "bfloat16"):
            logits = _prefill_logits(_engine(root / "hf", root, dtype), prompts)
            diff = (logits - ref).abs()
            result[dtype] = {"max_abs": float(diff.max()), "rel": float(diff.norm() / ref.norm()),
                             "logit_std": float(ref.std()),
                             "argmax_agree": float((logits.argmax(-1) == ref.argmax(-1)).float().mean())}
    return result


def _first_mismatch(a: list[list[int]], b: list[list[int]]):
    for row, (x, y) in enumerate(zip(a, b)):
        for i, (p, q) in enumerate(zip(x, y)):
            if p != q:
                return {"row": row, "position": i}
    return None
