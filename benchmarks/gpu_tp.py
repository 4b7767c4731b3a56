"""Issue 9: the codestral_tp2 recipe on two GPUs vs tp_size=1 on the same synthetic weights.

    PYTHONPATH=$PWD python benchmarks/gpu_tp.py --cache /tmp/mpc --out $OUT [--model codestral_7b]

Runs `python -m mambapipe recipe=codestral_tp2 model.source=synthetic eval.task=benchmark` at tp 2 and 1
(one shared download), then greedy 32 tokens from both engines (`python -m mambapipe.engine`, its tp ranks
launched by `mambapipe.parallel.launch`), and prints a table of
decode ms/step and tokens/s at batch 1, 8 and 64 side by side. Equal tokens are not expected on random weights
in half precision: their top two logits are often closer than the rounding a different reduction order makes,
so both engines also score the prompts followed by tp1's tokens (teacher-forced logits at every position), and
the script reports how far those logits differ and how close the top two were wherever the argmax differs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
from gpu_common import positive_int, require_cuda

from mambapipe.engine.api import read_native_engine_config
from mambapipe.parallel import launch

SCENARIOS = "[{batch:1,input_len:100,output_len:100},{batch:8,input_len:100,output_len:100},"\
            "{batch:64,input_len:100,output_len:100}]"
NEW_TOKENS = 32


def run_recipe(cache: Path, tp: int, model: str) -> None:
    cmd = [sys.executable, "-m", "mambapipe", "recipe=codestral_tp2", "model.source=synthetic",
           "eval.task=benchmark", f"tp_size={tp}", f"cache_dir={cache}", "build.max_batch_size=64",
           f"eval.scenarios={SCENARIOS}", "eval.repeats=3"]
    if model != "codestral_7b":
        cmd.append(f"model={model}")
    print("$", " ".join(cmd), flush=True)
    # the pipeline launches its ranks with parallel.RANK_ENV itself, and says why it failed on standard error
    code = subprocess.run(cmd).returncode
    if code:
        sys.exit(f"the recipe at tp {tp} failed (exit {code}): its reason is above")


def artifact(cache: Path, step: str, tp: int) -> Path:
    """The newest artifact of `step` whose manifest params say tp_size=tp."""
    for manifest in sorted((cache / step).glob("*/manifest.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        if int(json.loads(manifest.read_text())["params"].get("tp_size", -1)) == tp:
            return manifest.parent
    raise FileNotFoundError(f"no {step} artifact with tp_size={tp} under {cache}")


def prompts_for(engine: Path) -> list[list[int]]:
    """4 fixed random prompts of 50 tokens."""
    vocab = read_native_engine_config(engine)["pretrained_config"]["vocab_size"]
    return torch.randint(1, min(1000, vocab), (4, 50), generator=torch.Generator().manual_seed(0)).tolist()


def run_engine(engine: Path, tp: int, prompts: list[list[int]], out: Path, *extra: str,
               new_tokens: int = NEW_TOKENS) -> list[list[int]]:
    """The first `new_tokens` greedy tokens of `prompts`, from `python -m mambapipe.engine` run as tp ranks by the
    project's launcher (which closes its generator before leaving the process group and puts
    parallel.RANK_ENV into every rank's environment)."""
    launch(tp, "mambapipe.engine", ["--engine-dir", str(engine), "--device", "cuda", "--prompt-ids",
                                    json.dumps(prompts), "--max-new-tokens", str(new_tokens), "--out", str(out),
                                    *extra])  # no --eos-id: all of them
    return json.loads(out.read_text())["output_ids"]


def compare_logits(ours: list[torch.Tensor], ref: list[torch.Tensor]) -> str:
    """One line: how far `ours` (per prompt (len, V)) is from `ref` at each position (relative L2), how often the
    argmax agrees, and wherever it does not, ref's gap between its top two against the largest difference."""
    ours, ref = torch.cat(ours).double(), torch.cat(ref).double()  # (positions, V)
    rel = (ours - ref).norm(dim=-1) / ref.norm(dim=-1)
    differ = (ours.argmax(-1) != ref.argmax(-1)).nonzero().flatten()
    top2 = ref[differ].topk(2, dim=-1).values
    gaps, largest = top2[:, 0] - top2[:, 1], (ours - ref)[differ].abs().amax(-1)
    ties = ", ".join(f"{g:.3g} vs {d:.3g}" for g, d in zip(gaps.tolist(), largest.tolist()))
    return (f"teacher-forced logits over {len(ref)} positions: relative L2 median {rel.median():.2e}, max "
            f"{rel.max():.2e}; argmax equal at {len(ref) - len(differ)}; where it differs, tp1's top-two gap vs "
            f"the largest logit difference: {ties or '-'}")


def table(rows: dict[int, list[dict]]) -> str:
    """Decode ms/step, tokens/s and % of floor per batch, one column group per tp size that ran."""
    tps = sorted(rows)
    lines = ["| batch | " + " | ".join(f"tp{t} decode ms/step | tp{t} tok/s | tp{t} % floor" for t in tps) + " |",
             "|---|" + "---|---|---|" * len(tps)]
    for i, first in enumerate(rows[tps[0]]):
        cells = [f"{rows[t][i]['decode_ms_per_step']:.3f} | {rows[t][i]['tokens_per_s']:.0f} | "
                 f"{rows[t][i]['floor_pct']:.0f}" for t in tps]
        lines.append(f"| {first['batch']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", type=Path, default=Path("/tmp/mambapipe-tp"))
    parser.add_argument("--out", type=Path, default=Path("gpu_tp_out"))
    parser.add_argument("--model", default="codestral_7b")
    # at least 1: a size below needs no GPU, so it would pass require_cuda and fail in the recipe
    parser.add_argument("--tp", type=positive_int, nargs="+", default=[2, 1], help="tp sizes to run (1 alone: one GPU)")
    args = parser.parse_args(argv)
    require_cuda(max(args.tp))  # before the recipe: on the CPU it would build and write the 7B model
    return args


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows, tokens, engines = {}, {}, {}
    for tp in args.tp:
        run_recipe(args.cache, tp, args.model)
        rows[tp] = json.loads((artifact(args.cache, "evaluate", tp) / "metrics.json").read_text())["rows"]
        engines[tp] = artifact(args.cache, "build", tp)
        prompts = prompts_for(engines[tp])
        tokens[tp] = run_engine(engines[tp], tp, prompts, args.out / f"tokens_tp{tp}.json")
    text = table(rows)
    if len(tokens) == 2 and 1 in tokens:  # the other size against tp1 (`--tp 4 1` as well as the default)
        other = max(tokens)
        scored = [p + t for p, t in zip(prompts, tokens[1])]
        logits = {}
        for tp in engines:
            run_engine(engines[tp], tp, scored, args.out / f"scored_tp{tp}.json", "--logits-out",
                       str(args.out / f"logits_tp{tp}.pt"), new_tokens=1)
            logits[tp] = torch.load(args.out / f"logits_tp{tp}.pt")
        same = sum(a == b for a, b in zip(tokens[1], tokens[other]))
        text += (f"\n\nfirst {NEW_TOKENS} greedy tokens, tp{other} == tp1 on {same} of {len(prompts)} prompts\n"
                 + compare_logits(logits[other], logits[1]))
    (args.out / "tp_table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
