"""Greedy tokens of the GPU engine (fused kernels + CUDA graphs) vs HF transformers on the same fp32
weights, through the real pipeline pieces (synthetic HF checkpoint -> convert -> build -> load_engine); the
engine's logits at HF's tokens (teacher-forced) against the logits HF chose them by, and HF's generate
against its own forward pass; where the tokens part, both sides' top-1 margins there (a near-tie, or a real
difference); and the fp16 / bf16 engines' logits against the fp32 engine's on the same checkpoint.

    PYTHONPATH=$PWD:$PWD/benchmarks python3 benchmarks/gpu_hf_check.py [--models mamba_2p8b,mamba2_2p7b]
        [--arch num_layers=4] [--prompt-length 16] [--out DIR] [--device cpu]

`gpu_bench.py` runs it on the two 130m models. A kernel's launch (tiles, 8-byte loads, scan shape) follows
the model's widths, not its depth, so `--arch num_layers=4` checks the big models' kernels against HF at
their real widths on a few layers: a checkpoint written four times (HF, then converted and built per dtype)
at 64 layers would not fit the GPU machine's disk for Codestral. Launches also follow the prompt's length (the
Mamba1 scan is cut into time segments from 512 tokens): `--prompt-length 1024` checks those."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Optional

import torch

from mambapipe.backends.base import BuildSettings, SamplingConfig
from mambapipe.checkpoint.convert import convert_checkpoint
from mambapipe.engine.api import load_engine
from mambapipe.engine.build import build_engine
from mambapipe.evaluate.hf_reference import grouped_norm_problem
from mambapipe.synthetic import write_synthetic_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_common import model_names, model_spec, parse_arch, positive_int, require_cuda  # noqa: E402

NEW_TOKENS = 32


def _engine(hf_dir: Path, root: Path, dtype: str, device: str, prompt_length: int):
    ckpt, engine = root / f"ckpt_{dtype}", root / f"engine_{dtype}"
    convert_checkpoint(hf_dir, ckpt, dtype, 1, progress=False)
    longest = prompt_length + NEW_TOKENS  # the teacher-forced prefill's input
    build_engine(ckpt, engine, BuildSettings(4, max(64, longest), max(128, longest + NEW_TOKENS), device),
                 show_progress=False)
    return load_engine(engine, device)


def _hf_greedy(hf_dir: Path, prompts: torch.Tensor, device: str) -> tuple[list[list[int]], torch.Tensor, float]:
    """HF's greedy tokens, the logits it chose them by (B, NEW_TOKENS, V) fp32, and how far those are from its
    own forward pass over the same tokens without a cache (rel. L2): its decode path against its prefill."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).to(device).eval()
    model.generation_config.eos_token_id = None  # 32 tokens exactly, like the engine with stop_at_eos=False
    with torch.inference_mode():
        out = model.generate(prompts.to(device), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                             do_sample=False, pad_token_id=0, output_logits=True, return_dict_in_generate=True)
        chosen = torch.stack(out.logits, 1).float()
        forward = model(out.sequences[:, :-1]).logits[:, prompts.shape[1] - 1:].float()
    return out.sequences[:, prompts.shape[1]:].tolist(), chosen, float((forward - chosen).norm() / chosen.norm())


def _prefill_logits(gen, prompts: torch.Tensor, device: str) -> torch.Tensor:
    state, n = gen.state, prompts.shape[0]
    lengths, slots = torch.full((n,), prompts.shape[1], device=device), torch.arange(n, device=device)
    return gen.model.prefill(prompts.to(device), lengths, state, slots, all_logits=True)  # (B, L, V) fp32


def check(spec, seed: int = 0, device: str = "cuda", prompt_length: int = 16) -> dict:
    problem = grouped_norm_problem(spec.n_groups) if spec.is_mamba2 else None
    if problem is not None:  # HF would be another model
        return {"skipped": problem}
    prompts = torch.randint(1, min(1000, spec.vocab_size), (2, prompt_length),
                            generator=torch.Generator().manual_seed(seed))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_synthetic_checkpoint(spec, root / "hf", "float32", seed, progress=False)
        hf_tokens, hf_logits, hf_self = _hf_greedy(root / "hf", prompts, device)
        gen32 = _engine(root / "hf", root, "float32", device, prompt_length)
        ours = gen32.generate(prompts.tolist(), NEW_TOKENS, SamplingConfig(greedy=True), stop_at_eos=False)
        # the engine's logits at HF's tokens (teacher-forced, one prefill): the step HF chose each token at
        forced = torch.cat([prompts, torch.tensor(hf_tokens)[:, :-1]], 1)
        our_logits = _prefill_logits(gen32, forced, device)[:, prompts.shape[1] - 1:]  # (B, NEW_TOKENS, V)
        ref = _prefill_logits(gen32, prompts, device)
        diff = (our_logits - hf_logits).abs()
        result = {"tokens_equal_hf": ours.output_ids == hf_tokens,
                  "first_mismatch": _first_mismatch(ours.output_ids, hf_tokens, hf_logits, our_logits),
                  "logits_vs_hf": {"max_abs": float(diff.max()), "rel": float(diff.norm() / hf_logits.norm())},
                  "hf_generate_vs_forward": hf_self}
        for dtype in ("float16", "bfloat16"):
            logits = _prefill_logits(_engine(root / "hf", root, dtype, device, prompt_length), prompts, device)
            diff = (logits - ref).abs()
            result[dtype] = {"max_abs": float(diff.max()), "rel": float(diff.norm() / ref.norm()),
                             "logit_std": float(ref.std()),
                             "argmax_agree": float((logits.argmax(-1) == ref.argmax(-1)).float().mean())}
    return result


def _first_mismatch(ours: list[list[int]], hf: list[list[int]], hf_logits: torch.Tensor,
                    our_logits: torch.Tensor) -> Optional[dict]:
    """Where the engine's greedy tokens first leave HF's, with each side's margin there (top-1 minus top-2
    logit; HF's from its generate, ours teacher-forced): a near-tie, or a real difference."""
    for row, (x, y) in enumerate(zip(ours, hf)):
        for i, (p, q) in enumerate(zip(x, y)):
            if p != q:
                margins = [float(top[0] - top[1]) for top in (hf_logits[row, i].topk(2).values,
                                                                our_logits[row, i].topk(2).values)]
                return {"row": row, "position": i, "ours": p, "hf": q, "hf_margin": margins[0],
                        "our_margin": margins[1], "our_forced_argmax": int(our_logits[row, i].argmax())}
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=model_names, default="mamba_130m,mamba2_130m",
                        help="comma-separated names from configs/model")
    parser.add_argument("--arch", default="", type=parse_arch, help="FIELD=INT,...: ModelSpec fields replaced")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cpu: the torch engine, a check of the script with tiny widths (--arch)")
    parser.add_argument("--prompt-length", type=positive_int, default=16)
    parser.add_argument("--out", type=Path, default=Path("gpu_out"))
    args = parser.parse_args()
    if args.device == "cuda":
        require_cuda()
    results = {}
    for name in args.models.split(","):
        results[name] = check(dataclasses.replace(model_spec(name), **args.arch), device=args.device,
                              prompt_length=args.prompt_length)
        print(name, json.dumps(results[name]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hf_check.json").write_text(json.dumps({"arch": args.arch, "prompt_length": args.prompt_length,
                                                        "models": results}, indent=1))


if __name__ == "__main__":
    main()
