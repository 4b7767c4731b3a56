"""Generate with a built engine from the command line; runs alone or as one rank under a launcher.

    python -m mambapipe.engine --engine-dir DIR --prompt-ids '[[1, 2, 3]]' --max-new-tokens 20 --out out.json
    python -m torch.distributed.run --standalone --nproc-per-node 2 -m mambapipe.engine --engine-dir DIR ...

Only rank 0 writes `--out` (JSON: output_ids, prefill_ms, decode_ms_per_step) and `--logits-out` (torch.save of
a list with each prompt's fp32 logits at every position, (len, V): `EngineGenerator.score`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from contextlib import closing
from pathlib import Path

import torch

from mambapipe.backends.base import SamplingConfig
from mambapipe.engine.api import EngineLoadError, load_engine
from mambapipe.parallel import init_distributed, shutdown_distributed
from mambapipe.pipeline.resolve import resolve_device
from mambapipe.pipeline.step import StepError

# What a wrong engine directory, device or prompt raises (json's decode error and LimitError are ValueErrors):
# one line each, not a traceback.
USER_ERRORS = (ValueError, OSError, StepError, EngineLoadError)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m mambapipe.engine", description=__doc__.split("\n")[0])
    parser.add_argument("--engine-dir", required=True)
    parser.add_argument("--device", default="cpu", type=_device,
                        help="cpu, cuda, cuda:N, or auto (cuda where torch sees a GPU, else cpu)")
    parser.add_argument("--prompt-ids", required=True, help="JSON list of token-id lists")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--eos-id", type=int, default=None)
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    parser.add_argument("--logits-out", default=None, help="also save every prompt position's logits here")
    args = parser.parse_args()
    try:
        _generate(args)
    except USER_ERRORS as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)  # the form mambapipe.parallel.launch quotes
        return 1
    return 0


def _device(text: str) -> str:
    """The --device value as torch names it; `auto` is decided here, as the pipeline's device=auto is."""
    if text == "auto":
        return resolve_device("auto")[0]
    if text == "cpu" or text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not cpu, cuda, cuda:N or auto")


def _prompts(text: str) -> list[list[int]]:
    try:
        prompts = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--prompt-ids is not JSON ({err}); pass a list of token-id lists, e.g. '[[1, 2, 3]]'") \
            from None
    if not isinstance(prompts, list) or not all(isinstance(p, list) for p in prompts):
        raise ValueError(f"--prompt-ids must be a list of token-id lists, e.g. '[[1, 2, 3]]', got {text!r}")
    return prompts


def _generate(args: argparse.Namespace) -> None:
    prompts = _prompts(args.prompt_ids)
    rank, _ = init_distributed(args.device)
    try:
        # Closed before the process group goes: while CUDA graphs that captured NCCL collectives live,
        # destroy_process_group hangs (pytorch/pytorch#115388; closing drops the graphs).
        with closing(load_engine(Path(args.engine_dir), args.device)) as generator:
            sampling = SamplingConfig(greedy=not args.sample, temperature=args.temperature, top_k=args.top_k,
                                      top_p=args.top_p, seed=args.seed)
            result = generator.generate(prompts, args.max_new_tokens, sampling, args.eos_id)
            logits = generator.score(prompts) if args.logits_out else None  # every rank: the TP collectives
        if rank == 0:
            if logits is not None:
                torch.save(logits, args.logits_out)
            text = json.dumps(dataclasses.asdict(result))
            if args.out:
                Path(args.out).write_text(text)
            else:
                print(text)
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    sys.exit(main())
