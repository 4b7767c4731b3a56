"""Launch settings timed inside the engine's step, not kernel by kernel: one model built once, then for each
variant a new generator with its own CUDA graphs, the variants alternating over rounds, every one against the
defaults ("base") in the same rounds. Timed alone, a kernel has no kernel before it whose run its PDL-early
loads overlap; timed in the decode step, other tiles won for the 130m models than the alone-sweep had picked
(GPU_NOTES.md v13).

    PYTHONPATH=$PWD python3 benchmarks/gpu_step_sweep.py --models mamba2_130m,mamba_130m \\
        --variant 'in512={"gemv.TILES": {"3352,768,1": [16, 512, 4, 1]}}' \\
        --variant 'p64={"ssm.BLOCK_P": 64, "ssm.MAMBA2_WARPS": 4}' [--scenario S1] [--rounds 2] [--dtype bfloat16]
        [--out DIR]

A variant sets attributes of modules under `mambapipe.engine.kernels` ("module.NAME": value). A dict attribute
(gemv.TILES, scan.SHAPES) has the given entries merged in; keys "N,K,M[,gated]" become the table's tuples and
lists become tuples. Prints a table; writes step_sweep.json under --out. `--device cpu` runs the same loop on
the CPU (torch kernels, no graphs: a check of the script, not a timing of the GPU kernels).

`--arch expand=1,n_groups=4,vocab_size=16384` builds each model with those fields of its architecture replaced:
e.g. at the shapes one tensor-parallel rank of it multiplies (that one is Codestral's at tp=2: its in_proj
(9280, 4096) and out_proj (4096, 4096), GPU_NOTES.md eleventh session), without the all-reduces.

`--leave-out in_proj,out_proj,...` adds a variant per kind of kernel of the batch-1 decode step that skips
its launches (each output an uninitialised tensor of its shape: timing only, the tokens are garbage), so
base minus that variant is the kind's marginal cost in the step. Under PDL the kernels overlap, so profiler
times per kernel do not add up to the step; this does (GPU_NOTES.md v14).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_bench import SCENARIOS, bench  # noqa: E402
from gpu_common import model_names, model_spec, parse_arch, random_model, require_cuda, table_key  # noqa: E402

from mambapipe.dtypes import TORCH_DTYPES  # noqa: E402
from mambapipe.engine.kernels import gemv  # noqa: E402

BASE = "base"
LEAVE_OUT = ("in_proj", "x_proj", "ssm_update", "gated_norm", "out_proj")


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


class _GemvWithout:
    """kernels.gemv as decode.py calls it, with the functions given replaced."""

    def __init__(self, **replaced: Any) -> None:
        self.__dict__.update(replaced)

    def __getattr__(self, name: str) -> Any:
        return getattr(gemv, name)


def _without_in_proj(residual, norm_weight, weight, bias, eps, conv=None, out_dtype=None):
    """norm_gemv for the lm_head only (the one launch with fp32 out), an empty in_proj output otherwise."""
    if out_dtype is torch.float32:
        return gemv.norm_gemv(residual, norm_weight, weight, bias, eps, conv=conv, out_dtype=out_dtype)
    return torch.empty(residual.shape[0], weight.shape[0], dtype=weight.dtype, device=residual.device)


def left_out(kind: str) -> dict[str, Any]:
    """Settings (for `applied`) under which the batch-1 decode step does not launch `kind`'s kernels."""
    if kind == "in_proj":
        return {"decode.gemv": _GemvWithout(norm_gemv=_without_in_proj)}
    if kind == "x_proj":
        return {"decode.gemv": _GemvWithout(gemv=lambda y, weight: torch.empty(
            y.shape[0], weight.shape[0], dtype=weight.dtype, device=y.device))}
    if kind == "out_proj":
        return {"decode.gemv": _GemvWithout(gemv_residual=lambda *args, **kwargs: None)}
    if kind == "ssm_update":  # Mamba2's y is fp32 (B, heads * P), Mamba1's (B, d_inner) in x's dtype
        return {"decode.mamba2_state_update": lambda state, x, *rest: torch.empty(
                    x.shape[0], state.shape[1] * state.shape[2], dtype=torch.float32, device=x.device),
                "decode.mamba1_state_update": lambda state, x, *rest, **kwargs: torch.empty_like(x)}
    if kind == "gated_norm":
        return {"decode.gated_rms_norm": lambda y, z, *rest: torch.empty(y.shape, dtype=z.dtype, device=y.device)}
    raise ValueError(f"no kernel kind {kind!r}; expected one of {', '.join(LEAVE_OUT)}")


def sweep(models: list[str], variants: dict[str, dict[str, Any]], scenario: str, rounds: int,
          device: str, arch: Optional[dict[str, int]] = None,
          dtype: torch.dtype = torch.float16) -> dict[str, dict[str, list[dict[str, float]]]]:
    """model -> variant -> one row per round (decode ms a step, prefill ms, tokens/s), base first in each
    forward round and last in each backward one. arch: ModelSpec fields replaced in every model."""
    order = [BASE, *variants]
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for name in models:
        model = random_model(dataclasses.replace(model_spec(name), **(arch or {})), dtype, device=device)
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
    lines = ["| model | variant | decode ms/step (each round) | best vs base | best - base ms | "
             "prefill ms (each round) |", "|---|---|---|---|---|---|"]
    for name, rows in results.items():
        base = min(r["decode_ms_per_step"] for r in rows[BASE])
        for variant, runs in rows.items():
            decode = [r["decode_ms_per_step"] for r in runs]
            change = (min(decode) / base - 1) * 100
            decode_text = ", ".join(f"{d:.4f}" for d in decode)
            prefill_text = ", ".join(f"{r['prefill_ms']:.2f}" for r in runs)
            lines.append(f"| {name} | {variant} | {decode_text} | {change:+.1f} % | {min(decode) - base:+.4f} | "
                         f"{prefill_text} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=model_names, required=True, help="comma-separated names from configs/model")
    parser.add_argument("--variant", action="append", default=[], type=parse_variant,
                        help='NAME={"module.NAME": value, ...}; repeat for more variants')
    parser.add_argument("--arch", default="", type=parse_arch, help="FIELD=INT,...: ModelSpec fields replaced")
    parser.add_argument("--leave-out", default="", help=f"comma-separated, of: {', '.join(LEAVE_OUT)}")
    parser.add_argument("--scenario", default="S1", choices=sorted(SCENARIOS))
    parser.add_argument("--rounds", type=int, default=2, help="each variant is timed once a round")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--dtype", default="float16", choices=("float16", "bfloat16"), help="the models' dtype")
    parser.add_argument("--out", type=Path, default=Path("gpu_out"))
    args = parser.parse_args()
    if args.device == "cuda":
        require_cuda()
    variants = dict(args.variant)
    described = dict(variants)  # what step_sweep.json records of each variant
    for kind in filter(None, args.leave_out.split(",")):
        if kind not in LEAVE_OUT:
            parser.error(f"--leave-out {kind!r}: expected some of {', '.join(LEAVE_OUT)}")
        variants[f"without_{kind}"], described[f"without_{kind}"] = left_out(kind), f"{kind} not launched"
    for settings in variants.values():  # fail on a misspelt name before any model is built
        with applied(settings):
            pass
    results = sweep(args.models.split(","), variants, args.scenario, args.rounds, args.device, args.arch,
                    TORCH_DTYPES[args.dtype])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_sweep.json").write_text(json.dumps({"variants": described, "results": results}, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
