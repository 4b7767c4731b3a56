"""Issue 6 on one GPU, in one call: fused path vs torch path, greedy tokens vs HF, and every scenario of
anchors-h200.md timed against the decode floor.

    PYTHONPATH=$PWD python benchmarks/gpu_bench.py --out $OUT [--models mamba_130m,...] [--dtype bfloat16] [--skip-hf]
        [--torch-ssd] [--tune-gemv | --tune-gemv-split] [--gemv-tiles JSON] [--gemv-max-batch N] [--scenarios S1,S3]
        [--tune-scan] [--no-pdl] [--no-queue-ahead] [--no-prefill-graphs] ... (--help lists every switch)

Prints a table last; writes results.json (and the HF check) under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_common import MODELS, generator, model_names, model_spec, random_model, require_cuda, table_key, torch_twin  # noqa: E402

from mambapipe.dtypes import TORCH_DTYPES  # noqa: E402
from mambapipe.engine.state import InferenceState  # noqa: E402
from mambapipe.evaluate.benchmark import run_benchmark  # noqa: E402
from mambapipe.evaluate.floor import H200_BYTES_PER_S  # noqa: E402
from mambapipe.evaluate.scenarios import Scenario  # noqa: E402

SCENARIOS = {"S1": Scenario(1, 100, 100), "S2": Scenario(64, 100, 100), "S3": Scenario(1, 2048, 128),
             "S4": Scenario(8, 923, 100)}
# anchors-h200.md, mamba_ssm: S1 prefill, S1 decode, S1 tok/s, S2 decode, S2 tok/s, S3 prefill, S4 tok/s
MAMBA_SSM = {"mamba_130m": (13.0, 0.772, 1118, 0.874, 60255, 12.9, 8865),
             "mamba_2p8b": (32.8, 3.339, 275, 4.669, 9873, 37.0, 1668),
             "mamba2_130m": (27.3, 0.764, 971, 1.457, 34898, 52.1, 6753),
             "mamba2_2p7b": (89.5, 3.538, 227, 9.730, 5915, 85.8, 1616),
             "codestral_7b": (85.0, 5.552, 158, 15.676, 3553, 87.9, 888)}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def _argmax_flips(out: torch.Tensor, ref: torch.Tensor) -> list[float]:
    """The reference's top-two logit margin at each row whose argmax the fused path does not share. A flip needs
    a margin within twice the paths' largest logit difference, so the margins (against the logits' spread, ~0.5 for
    random weights) tell a near tie from a wrong kernel, which the rel. L2 error shows first."""
    flipped = out.argmax(-1) != ref.argmax(-1)  # (B,)
    top2 = ref[flipped].float().topk(2, dim=-1).values  # (flips, 2)
    return [round(float(m), 5) for m in top2[:, 0] - top2[:, 1]]


def fused_vs_torch(model, batch: int = 2, prompt: int = 64, steps: int = 8, seed: int = 0) -> dict:
    """Logits of the fused path (fp16 state) vs the torch path (fp32 state) on the same fp16 weights,
    teacher-forced with the torch path's greedy tokens from seeded random prompts."""
    spec = model.spec
    gen = torch.Generator(device="cuda").manual_seed(seed)
    tokens = torch.randint(1, 1000, (batch, prompt), device="cuda", generator=gen)
    lengths, slots = torch.full((batch,), prompt, device="cuda"), torch.arange(batch, device="cuda")
    baseline = torch_twin(model)
    st = InferenceState.allocate(spec, 1, batch, model.dtype, "cuda")
    ref = baseline.prefill(tokens, lengths, st, slots)
    sf = InferenceState.allocate(spec, 1, batch, model.dtype, "cuda", ssm_dtype=model.dtype)
    out = model.prefill(tokens, lengths, sf, slots)
    errs, flips = [_rel(out, ref)], _argmax_flips(out, ref)
    tok = ref.argmax(-1)
    for _ in range(steps):
        ref = baseline.decode(tok, st, 0)
        out = model.decode(tok, sf, 0)
        errs.append(_rel(out, ref))
        flips += _argmax_flips(out, ref)
        tok = ref.argmax(-1)
    return {"prefill_rel_err": errs[0], "decode_rel_err_max": max(errs[1:]), "rows": batch * (steps + 1),
            "argmax_flips": len(flips), "flip_margins": flips}


def bench(model, scenarios: dict, repeats: int, **engine_options) -> dict:
    gen = generator(model, max(s.batch for s in scenarios.values()), max(s.input_len for s in scenarios.values()),
                    max(s.input_len + s.output_len for s in scenarios.values()), **engine_options)
    rows = run_benchmark(gen, list(scenarios.values()), warmup=1, repeats=repeats, seed=0, tp_size=1,
                         bytes_per_s=H200_BYTES_PER_S, show_progress=False)
    gen.close()
    return dict(zip(scenarios, rows))


def run_model(name: str, torch_baseline: bool, scenarios: dict, dtype: torch.dtype = torch.float16) -> dict:
    spec = model_spec(name)
    start = time.perf_counter()
    model = random_model(spec, dtype)
    result = {"check": fused_vs_torch(model)}
    print(f"[{name}] fused vs torch: {result['check']}", flush=True)
    result["fused"] = bench(model, scenarios, repeats=3)
    if torch_baseline:
        # The plain torch engine: no Triton kernels, no graphs, fp32 state
        result["torch"] = bench(torch_twin(model), {"S1": SCENARIOS["S1"]}, repeats=1, ssm_state_dtype="float32",
                                cuda_graphs=False)
    result["seconds"] = time.perf_counter() - start
    print(f"[{name}] {json.dumps(result)}", flush=True)
    del model
    torch.cuda.empty_cache()
    return result


def _fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def table(results: dict) -> str:
    head = ("| model | path | S1 prefill ms | S1 decode ms/step | S1 tok/s | S1 % floor | S2 decode ms/step | "
            "S2 tok/s | S2 % floor | S3 prefill(2048) ms | S3 tok/s | S4 tok/s |")
    lines = [head, "|" + "---|" * 12]
    for name, r in results.items():
        f = {s: r["fused"].get(s, {}) for s in SCENARIOS}  # scenarios left out print as "-"
        lines.append(f"| {name} | mambapipe fused+graphs | {_fmt(f['S1'].get('prefill_ms'), '.1f')} | "
                     f"{_fmt(f['S1'].get('decode_ms_per_step'), '.3f')} | {_fmt(f['S1'].get('tokens_per_s'), '.0f')} | "
                     f"{_fmt(f['S1'].get('floor_pct'), '.0f')} | {_fmt(f['S2'].get('decode_ms_per_step'), '.3f')} | "
                     f"{_fmt(f['S2'].get('tokens_per_s'), '.0f')} | {_fmt(f['S2'].get('floor_pct'), '.0f')} | "
                     f"{_fmt(f['S3'].get('prefill_ms'), '.1f')} | {_fmt(f['S3'].get('tokens_per_s'), '.0f')} | "
                     f"{_fmt(f['S4'].get('tokens_per_s'), '.0f')} |")
        if "torch" in r:
            t = r["torch"]["S1"]
            lines.append(f"| {name} | mambapipe torch (eager) | {_fmt(t['prefill_ms'], '.1f')} | "
                         f"{_fmt(t['decode_ms_per_step'], '.3f')} | {_fmt(t['tokens_per_s'], '.0f')} | "
                         f"{_fmt(t['floor_pct'], '.0f')} | | | | | | |")
        m = MAMBA_SSM[name]
        lines.append(f"| {name} | mamba_ssm (anchor) | {m[0]} | {m[1]} | {m[2]} | | {m[3]} | {m[4]} | | {m[5]} | | "
                     f"{m[6]} |")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("gpu_out"))
    parser.add_argument("--models", type=model_names, default=",".join(MODELS))
    parser.add_argument("--dtype", default="float16", choices=("float16", "bfloat16"),
                        help="the models' weights and activations (the anchors and targets are fp16's)")
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--no-torch-baseline", action="store_true")
    parser.add_argument("--tune-scan", action="store_true")
    parser.add_argument("--torch-ssd", action="store_true",
                        help="Mamba2 prefill SSD through the regrouped torch ops (kernels/ssd.py), not ssd_triton")
    parser.add_argument("--gemv-max-batch", type=int, help="decode batches up to this take kernels/gemv.py (0: none)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="a subset of S1,S2,S3,S4")
    parser.add_argument("--tune-gemv", action="store_true", help="sweep the small-batch GEMV tiles first, use the best")
    parser.add_argument("--tune-gemv-split", action="store_true",
                        help="sweep only the out_proj / x_proj tiles with K split over programs (and the current one)")
    parser.add_argument("--gemv-tiles", type=json.loads, default={},
                        help='JSON {"N,K,M[,gated]": [BLOCK_N, BLOCK_K, warps, stages, split]} set in gemv.TILES')
    parser.add_argument("--no-pdl", action="store_true",
                        help="launch the decode kernels without programmatic dependent launch (kernels/pdl.py)")
    parser.add_argument("--pdl-prefetch-max-mb", type=float, help="decode GEMV weights up to this size are prefetched "
                        "into L2 before the PDL wait (default: pdl.PREFETCH_MAX_BYTES)")
    parser.add_argument("--fused-gate-max-groups", type=int,
                        help="batch-1 Mamba2 decode: gate inside out_proj up to this many norm groups")
    parser.add_argument("--decode-blas", choices=("cublas", "cublaslt"),
                        help="the BLAS library the decode graphs capture (cuda_graphs.DECODE_BLAS)")
    parser.add_argument("--no-prefill-graphs", action="store_true", help="prefill eagerly (the decode stays graphed)")
    parser.add_argument("--prefill-eager-min-work", type=float,
                        help="padded prefills of at least this many prompt tokens x layer weights run eagerly "
                             "(cuda_graphs.EAGER_MIN_WORK; inf: every prefill within the token budget is graphed)")
    parser.add_argument("--no-queue-ahead", action="store_true",
                        help="read each greedy decode step's tokens before issuing the next (engine/generate.py)")
    parser.add_argument("--first-tile-early", help="comma list of the GEMV kernels (norm_gemv, gemv) that load their "
                        "first weight tile before the PDL wait (default: gemv.FIRST_TILE_EARLY; 'none': neither)")
    parser.add_argument("--gemv-load-ahead-max-mb", type=float, help="decode GEMV weights up to this size are read "
                        "one tile ahead (default: gemv.LOAD_AHEAD_MAX_BYTES; 0: none)")
    parser.add_argument("--tma-min-mb", type=float, help="batch-1 norm + in_proj / lm_head weights over this size "
                        "take the TMA kernel (default: gemv.TMA_MIN_BYTES)")
    return parser.parse_args()


def apply_engine_switches(args: argparse.Namespace) -> dict:
    """Set the engine's module switches the flags name; returns them as they now stand (for results.json)."""
    from mambapipe.engine import cuda_graphs, generate
    from mambapipe.engine.kernels import decode, gemv, pdl, ssd

    for key, tiles in args.gemv_tiles.items():
        gemv.TILES[table_key(key)] = tuple(tiles)
    if args.first_tile_early is not None:
        gemv.FIRST_TILE_EARLY = frozenset(k for k in args.first_tile_early.split(",") if k != "none")
    if args.gemv_load_ahead_max_mb is not None:
        gemv.LOAD_AHEAD_MAX_BYTES = int(args.gemv_load_ahead_max_mb * 2**20)
    if args.tma_min_mb is not None:
        gemv.TMA_MIN_BYTES = int(args.tma_min_mb * 2**20)
    if args.no_prefill_graphs:
        cuda_graphs.PREFILL_TOKEN_BUDGET = 0
    if args.prefill_eager_min_work is not None:
        cuda_graphs.EAGER_MIN_WORK = args.prefill_eager_min_work
    if args.decode_blas is not None:
        cuda_graphs.DECODE_BLAS = args.decode_blas
    generate.QUEUE_AHEAD = not args.no_queue_ahead
    if args.fused_gate_max_groups is not None:
        decode.FUSED_GATE_MAX_GROUPS = args.fused_gate_max_groups
    if args.gemv_max_batch is not None:
        decode.GEMV_MAX_BATCH = args.gemv_max_batch
    pdl.ENABLED = not args.no_pdl
    if args.pdl_prefetch_max_mb is not None:
        pdl.PREFETCH_MAX_BYTES = int(args.pdl_prefetch_max_mb * 2**20)
    if args.torch_ssd:  # the Triton SSD is the default; this times the torch one it replaced
        ssd.TRITON_SSD = False
    return {"pdl": pdl.ENABLED, "pdl_prefetch_max_bytes": pdl.PREFETCH_MAX_BYTES, "queue_ahead": generate.QUEUE_AHEAD,
            "fused_gate_max_groups": decode.FUSED_GATE_MAX_GROUPS, "gemv_max_batch": decode.GEMV_MAX_BATCH,
            "triton_ssd": ssd.TRITON_SSD, "prefill_graph_token_budget": cuda_graphs.PREFILL_TOKEN_BUDGET,
            "prefill_eager_min_work": cuda_graphs.EAGER_MIN_WORK, "decode_blas": cuda_graphs.DECODE_BLAS,
            "gemv_load_ahead_max_bytes": gemv.LOAD_AHEAD_MAX_BYTES, "first_tile_early": sorted(gemv.FIRST_TILE_EARLY),
            "gemv_tiles_set": {k: list(v) for k, v in args.gemv_tiles.items()}, "tma_min_bytes": gemv.TMA_MIN_BYTES}


def main() -> None:
    args = parse_args()
    require_cuda()
    switches = apply_engine_switches(args)
    args.out.mkdir(parents=True, exist_ok=True)
    import triton

    env = {"torch": torch.__version__, "triton": triton.__version__, "gpu": torch.cuda.get_device_name(),
           "dtype": args.dtype, **switches}
    print(json.dumps(env), flush=True)
    out = {"env": env}
    if args.tune_scan:  # pick the launch shape of a mamba-2.8b row's scan on this GPU before anything runs it
        from gpu_micro import scan_variants, ssd_times, use_fastest_scan

        variants = scan_variants()
        out["micro"] = {"scan_ms_per_layer": variants, "scan_choice": use_fastest_scan(variants),
                        "ssd_ms_per_layer": ssd_times()}
        print("micro:", json.dumps(out["micro"]), flush=True)
    if args.tune_gemv or args.tune_gemv_split:  # time the projections per tile; the models then run the fastest
        from gpu_gemv import sweep, use_fastest_tiles

        try:  # a failed sweep leaves the default tiles; the models' runs still count
            out["gemv"] = sweep([1], tuple(args.models.split(",")), split=args.tune_gemv_split)
            out["gemv_tiles"] = use_fastest_tiles(out["gemv"])
            print("gemv tiles:", json.dumps(out["gemv_tiles"]), flush=True)
            (args.out / "results.json").write_text(json.dumps(out, indent=1))
        except Exception:  # noqa: BLE001 - reported, then the run goes on
            out["gemv_error"] = traceback.format_exc()
            print(out["gemv_error"], flush=True)
    if not args.skip_hf:
        from gpu_hf_check import check

        try:  # a failed check is reported; the timing runs still count
            out["hf"] = {n: check(model_spec(n)) for n in ("mamba_130m", "mamba2_130m")}
            print("HF check:", json.dumps(out["hf"]), flush=True)
        except Exception:  # noqa: BLE001 - reported in the log and results.json, then the run goes on
            out["hf_error"] = traceback.format_exc()
            print(out["hf_error"], flush=True)
    out["models"] = {}
    for name in args.models.split(","):
        try:  # one model's failure must not cost the other models' device minutes
            out["models"][name] = run_model(name, torch_baseline=not args.no_torch_baseline,
                                            scenarios={s: SCENARIOS[s] for s in args.scenarios.split(",")},
                                            dtype=TORCH_DTYPES[args.dtype])
        except Exception:  # noqa: BLE001 - reported in the log and results.json, then the run goes on
            out.setdefault("errors", {})[name] = traceback.format_exc()
            print(out["errors"][name], flush=True)
        (args.out / "results.json").write_text(json.dumps(out, indent=1))
    text = table(out["models"])
    (args.out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
