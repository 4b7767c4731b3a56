"""Tokens/s of the native engine vs HF transformers' `generate` on the same synthetic model, on this CPU.

    python benchmarks/cpu_generate.py                       # mamba-130m and mamba2-130m shapes, batch 1 and 8
    python benchmarks/cpu_generate.py --models mamba2-130m --batches 1 --prompt-len 16 --new-tokens 16

Both sides get the same seeded random weights (mambapipe.synthetic -> HF dir; the engine is built from it
through the convert step's converter), the same prompts, greedy decoding, no early stop, fp32 by default. Tokens/s
counts generated tokens over the whole call (prefill included); the table shows the best of --repeats
interleaved runs after one warm-up (the least disturbed run on a shared machine). `--dtype float16` (or bfloat16)
runs both sides in that dtype instead; their greedy tokens can then part at the random weights' near ties.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch
from gpu_common import positive_int, require_cuda

from mambapipe.backends.base import BuildSettings
from mambapipe.checkpoint.convert import convert_checkpoint
from mambapipe.dtypes import TORCH_DTYPES
from mambapipe.engine.api import load_engine
from mambapipe.engine.build import build_engine
from mambapipe.models import ModelSpec
from mambapipe.synthetic import write_synthetic_checkpoint

SHAPES = {  # the real models' architectures (reference §2), random weights
    "mamba-130m": ModelSpec("Mamba1", hidden_size=768, num_layers=24, vocab_size=50280, state_size=16),
    "mamba2-130m": ModelSpec("Mamba2", hidden_size=768, num_layers=24, vocab_size=50288, state_size=128,
                             head_dim=64, n_groups=1, chunk_size=256),
}


def _best_seconds(fns, repeats: int, device: str) -> list[float]:
    """Best-of-`repeats` wall time of each fn, the fns interleaved so background load hits them alike
    (the minimum is the least disturbed run; this 2-core machine is shared)."""
    for fn in fns:
        fn()  # warm-up
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def _prepare(name: str, root: Path, max_batch: int, max_seq: int, device: str, dtype: str):
    from transformers import AutoModelForCausalLM

    spec = SHAPES[name]
    write_synthetic_checkpoint(spec, root / "hf", "float32", seed=0, progress=False)
    convert_checkpoint(root / "hf", root / "ckpt", dtype, 1, progress=False)
    build_engine(root / "ckpt", root / "engine", BuildSettings(max_batch, max_seq - 1, max_seq, device),
                 show_progress=False)
    hf = AutoModelForCausalLM.from_pretrained(root / "hf", dtype=TORCH_DTYPES[dtype]).eval().to(device)
    return spec, hf, load_engine(root / "engine", device)


def bench_model(name: str, batches: list[int], prompt_len: int, new_tokens: int, repeats: int,
                device: str, dtype: str = "float32") -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        spec, hf, engine = _prepare(name, Path(tmp), max(batches), prompt_len + new_tokens + 1, device, dtype)
        for batch in batches:
            prompts = torch.randint(1, spec.vocab_size, (batch, prompt_len), generator=torch.Generator().manual_seed(0))

            def run_hf():
                with torch.inference_mode():
                    return hf.generate(prompts.to(device), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                       do_sample=False, eos_token_id=None, pad_token_id=0)

            def run_native():
                return engine.generate(prompts.tolist(), new_tokens)

            hf_s, native_s = _best_seconds([run_hf, run_native], repeats, device)
            same = run_hf()[:, prompt_len:].tolist() == run_native().output_ids
            out = run_native()
            rows.append({"model": name, "batch": batch, "hf_tok_s": batch * new_tokens / hf_s,
                         "native_tok_s": batch * new_tokens / native_s, "speedup": hf_s / native_s,
                         "prefill_ms": out.prefill_ms, "decode_ms": out.decode_ms_per_step, "same_tokens": same})
    return rows


def thread_count(text: str) -> int:
    """An argparse type for --threads: torch.set_num_threads refuses a negative count with a traceback."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected 0 (torch's default) or a positive integer")
    return int(text)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    # sizes and counts of at least 1: at 0 there is nothing to time (tokens/s would be NaN)
    parser.add_argument("--batches", nargs="+", type=positive_int, default=[1, 8])
    parser.add_argument("--prompt-len", type=positive_int, default=32)
    parser.add_argument("--new-tokens", type=positive_int, default=32)
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=list(TORCH_DTYPES))
    parser.add_argument("--threads", type=thread_count, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        require_cuda()
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, {args.dtype}, "
          f"prompt {args.prompt_len}, {args.new_tokens} new tokens, greedy")
    print("| model | batch | HF tok/s | native tok/s | speedup | native prefill ms | native decode ms/step "
          "| same tokens |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        for r in bench_model(name, args.batches, args.prompt_len, args.new_tokens, args.repeats, args.device,
                             args.dtype):
            print(f"| {r['model']} | {r['batch']} | {r['hf_tok_s']:.1f} | {r['native_tok_s']:.1f} | "
                  f"{r['speedup']:.1f}x | {r['prefill_ms']:.0f} | {r['decode_ms']:.1f} | {r['same_tokens']} |",
                  flush=True)


if __name__ == "__main__":
    main()
