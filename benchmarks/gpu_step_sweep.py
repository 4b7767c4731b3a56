"""Launch settings timed inside the engine's step, not kernel by kernel: one model built once, then for each
variant a new generator with its own CUDA graphs, the variants alternating over rounds, every one against the
defaults ("base") in the same rounds. Timed alone, a kernel has no kernel before it whose run its PDL-early
loads overlap; timed in the decode step, other tiles won for the 130m models than the alone-sweep had picked
(GPU_NOTES.md v13).

    PYTHONPATH=$PWD python3 benchmarks/gpu_step_sweep.py --models mamba2_130m,mamba_130m \\
        --variant 'in512={"gemv.TILES": {"3352,768,1": [16, 512, 4, 1]}}' \\
        --variant 'p64={"ssm.BLOCK_P": 64, "ssm.MAMBA2_WARPS": 4}' [--scenario S1] [--rounds 2] [--out DIR]

A variant sets attributes of modules under `mambapipe.engine.kernels` ("module.NAME": value). A dict attribute
(gemv.TILES, scan.SHAPES) has the given entries merged in; keys "N,K,M[,gated]" become the table's tuples and
lists become tuples. Prints a table; writes step_sweep.json under --out. `--device cpu` runs the same loop on
the CPU (torch kernels, no graphs: a check of the script, not a timing of the GPU kernels).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
from pathlib import Path
from typing import Any, Iterator

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_bench import SCENARIOS, bench  # noqa: E402
from gpu_common import model_spec, random_model, table_key  # noqa: E402

BASE = "base"


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """'name={"module.NAME": value, ...}' -> (name, settings)."""
    name, sep, settings = text.partition("=")
    if not sep or not name or name == BASE:
        raise ValueError(f"--variant {text!r}: expected NAME={{JSON}} with a NAME other than {BASE!r}")
    return name, json.loads(settings)


def _as_set(old: Any, new: Any) -> Any:
    """The value to set: lists as tuples, a dict merged into a copy of the old one."""
    if isinstance(new, dict):
        return {**old, **{table_key(k): _as_set(None, v) for k, v in new.items()}}
    return tuple(new) if isinstance(new, list) else new


@contextlib.contextmanager
def applied(settings: dict[str, Any]) -> Iterator[None]:
    """Set each "module.NAME" under mambapipe.engine.kernels, and put every one back afterwards."""
    saved = []
    try:
        for dotted, value in settings.items():
            module_name, _, attr = dotted.rpartition(".")
            module = importlib.import_module(f"mambapipe.engine.kernels.{module_name}")
            old = getattr(module, attr)  # an unknown name fails here, before anything is timed
            saved.append((module, attr, old))
            setattr(module, attr, _as_set(old, value))
        yield
    finally:
        for module, attr, old in reversed(saved):
            setattr(module, attr, old)


def sweep(models: list[str], variants: dict[str, dict[str, Any]], scenario: str, rounds: int,
          device: str) -> dict[str, dict[str, list[dict[str, float]]]]:
    """model -> variant -> one row per round (decode ms a step, prefill ms, tokens/s), base first in each
    forward round and last in each backward one."""
    order = [BASE, *variants]
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for name in models:
        model = random_model(model_spec(name), device=device)
        rows: dict[str, list[dict[str, float]]] = {v: [] for v in order}
        for r in range(rounds):
            for variant in order if r % 2 == 0 else order[::-1]:
                with applied(variants.get(variant, {})):
                    row = bench(model, {scenario: SCENARIOS[scenario]}, repeats=2)[scenario]
                rows[variant].append({k: row[k] for k in ("decode_ms_per_step", "prefill_ms", "tokens_per_s")})
                print(f"{name} {variant}: decode {row['decode_ms_per_step']:.4f} ms/step, "
                      f"prefill {row['prefill_ms']:.2f} ms", flush=True)
        results[name] = rows
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    return results


def table(results: dict[str, dict[str, list[dict[str, float]]]]) -> str:
    lines = ["| model | variant | decode ms/step (each round) | best vs base | prefill ms (each round) |",
             "|---|---|---|---|---|"]
    for name, rows in results.items():
        base = min(r["decode_ms_per_step"] for r in rows[BASE])
        for variant, runs in rows.items():
            decode = [r["decode_ms_per_step"] for r in runs]
            change = (min(decode) / base - 1) * 100
            decode_text = ", ".join(f"{d:.4f}" for d in decode)
            prefill_text = ", ".join(f"{r['prefill_ms']:.2f}" for r in runs)
            lines.append(f"| {name} | {variant} | {decode_text} | {change:+.1f} % | {prefill_text} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", required=True, help="comma-separated names from configs/model")
    parser.add_argument("--variant", action="append", default=[], type=parse_variant,
                        help='NAME={"module.NAME": value, ...}; repeat for more variants')
    parser.add_argument("--scenario", default="S1", choices=sorted(SCENARIOS))
    parser.add_argument("--rounds", type=int, default=2, help="each variant is timed once a round")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--out", type=Path, default=Path("gpu_out"))
    args = parser.parse_args()
    variants = dict(args.variant)
    for settings in variants.values():  # fail on a misspelt name before any model is built
        with applied(settings):
            pass
    results = sweep(args.models.split(","), variants, args.scenario, args.rounds, args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_sweep.json").write_text(json.dumps({"variants": variants, "results": results}, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
