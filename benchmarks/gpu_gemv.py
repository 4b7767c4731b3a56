"""The small-batch decode projections (kernels/gemv.py) against the unfused kernels they replace, per
weight shape of the five models, both replayed in CUDA graphs (as the decode runs): norm + in_proj + conv
update, (gated norm +) out_proj + residual add, norm + lm_head, Mamba1's x_proj. Sweeps the tile table and
reports the fastest tiles, which `use_fastest_tiles` installs in `gemv.TILES` for a later run in the same
process. Each kernel is timed alone here, with no kernel before it for its PDL-early loads to overlap: for the
130m models the decode step ranked tiles differently (GPU_NOTES.md v13), so confirm a pick with
`gpu_step_sweep.py`.

    PYTHONPATH=$PWD python3 benchmarks/gpu_gemv.py [--batches 1 8] [--out DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from gpu_common import MODELS, model_spec, require_cuda
from triton.testing import do_bench_cudagraph

from mambapipe.engine.kernels import decode, gemv
from mambapipe.engine.kernels.conv import causal_conv1d_update
from mambapipe.engine.kernels.norms import add_rms_norm, gated_rms_norm

# (BLOCK_N, BLOCK_K, warps, stages) tried per batch tile (BLOCK_M = 1 and 8)
CANDIDATES = {1: [(4, 512, 4, 1), (4, 512, 4, 3), (8, 256, 4, 1), (8, 256, 4, 3), (8, 512, 4, 3), (16, 128, 4, 3),
                  (16, 256, 4, 1), (16, 256, 4, 3), (32, 128, 4, 3), (32, 256, 8, 3), (16, 512, 8, 3), (8, 1024, 4, 2),
                  (2, 1024, 4, 2), (2, 512, 4, 3), (4, 1024, 4, 2),  # the last ones for x_proj's few rows
                  # 2026-11-29 (v7): stages made no difference (no loop pipelining of plain loads), so the
                  # added tiles vary the warps and the work a thread has in flight instead
                  (8, 128, 2, 1), (16, 128, 2, 1), (16, 64, 2, 1), (32, 64, 4, 1), (8, 256, 2, 1), (4, 256, 2, 1),
                  (4, 512, 2, 1), (16, 128, 8, 1), (32, 128, 8, 1), (8, 512, 8, 1), (4, 1024, 8, 1), (2, 2048, 8, 1),
                  (4, 2048, 8, 1), (16, 128, 4, 1),
                  # v14: with the lane sums, the in-step picks were twice as wide
                  (16, 512, 4, 3), (8, 2048, 8, 1), (4, 4096, 8, 1), (8, 1024, 4, 1)],
              8: [(2, 256, 4, 2), (4, 128, 4, 2), (4, 256, 4, 2), (8, 128, 4, 2)]}
# K split over 2, 4 or 8 programs a row block (gemv.py): only the out_proj and x_proj kernel splits, and the
# split sweep (`split_sweep`) tries these next to the table's current tile
SPLIT_CANDIDATES = [(*tiles, split) for tiles in ((8, 1024, 4, 1), (8, 512, 4, 1), (16, 256, 4, 1), (4, 1024, 8, 1),
                                                   (16, 512, 8, 1), (8, 256, 4, 1)) for split in (2, 4, 8)]
SPLIT_PROJECTIONS = ("out_proj", "x_proj")
EPS = 1e-5


def _rand(*shape, dtype=torch.float16, scale=1.0):
    return (torch.randn(*shape, device="cuda") * scale).to(dtype)


def projections(name: str, batch: int) -> dict:
    """name -> (fused call, unfused call, weight, gated) at one model's shapes (gated: the out_proj kernel with
    the gated norm inside, which has its own TILES entries)."""
    spec = model_spec(name)
    H, Di, rows = spec.hidden_size, spec.intermediate_size, spec.in_proj_rows
    conv_lo = Di if spec.is_mamba2 else 0
    residual, delta, norm_w = _rand(batch, H, dtype=torch.float32), _rand(batch, H), _rand(H)
    w_in, w_out, w_head = _rand(rows, H, scale=H ** -0.5), _rand(H, Di, scale=Di ** -0.5), _rand(spec.vocab_size, H)
    conv_w, conv_b, state = _rand(spec.conv_dim, 4), _rand(spec.conv_dim), _rand(batch, spec.conv_dim, 3)
    y = _rand(batch, Di, dtype=torch.float32 if spec.is_mamba2 else torch.float16)
    z, gate_w = _rand(batch, rows)[:, :Di], _rand(Di)
    group = Di // spec.n_groups
    gate = (z, gate_w, group) if spec.is_mamba2 else None

    def in_unfused():
        h = add_rms_norm(residual, delta, norm_w, EPS)
        xz = F.linear(h, w_in)
        causal_conv1d_update(xz[:, conv_lo:conv_lo + spec.conv_dim], state, conv_w, conv_b)

    def out_unfused():
        x = gated_rms_norm(y, z, gate_w, group, EPS) if spec.is_mamba2 else y
        residual.add_(F.linear(x, w_out))  # the next layer's add_rms_norm does this add in the old path

    def head_unfused():
        F.linear(add_rms_norm(residual, None, norm_w, EPS), w_head).float()

    gated = spec.is_mamba2 and spec.n_groups <= decode.FUSED_GATE_MAX_GROUPS  # as kernels/decode.py runs it
    calls = {"in_proj": (lambda: gemv.norm_gemv(residual, norm_w, w_in, None, EPS, conv=(state, conv_w, conv_b,
                                                                                         conv_lo)), in_unfused, w_in,
                         False),
             "out_proj": (lambda: gemv.gemv_residual(residual, y, w_out, None, gate=gate, eps=EPS), out_unfused, w_out,
                          True)
             if gated else  # several norm groups: the gated norm first, then the plain product
             (lambda: gemv.gemv_residual(residual, gated_rms_norm(y, z, gate_w, group, EPS) if spec.is_mamba2 else y,
                                         w_out, None), out_unfused, w_out, False),
             "lm_head": (lambda: gemv.norm_gemv(residual, norm_w, w_head, None, EPS, out_dtype=torch.float32),
                         head_unfused, w_head, False)}
    if not spec.is_mamba2:
        w_x = _rand(spec.dt_rank + 2 * spec.state_size, Di, scale=Di ** -0.5)
        x = _rand(batch, 2 * Di)[:, :Di]
        calls["x_proj"] = (lambda: gemv.gemv(x, w_x), lambda: F.linear(x, w_x), w_x, False)
    return calls


def _time(fn) -> float:
    fn()  # compile outside the graph
    return do_bench_cudagraph(fn, rep=20, return_mode="median") * 1e3  # µs


def sweep(batches: list[int], models: tuple[str, ...] = MODELS, split: bool = False) -> dict:
    """Every candidate tile per projection; split: only the projections that can split K, trying
    SPLIT_CANDIDATES and the table's current tile."""
    results = {}
    for name, batch in itertools.product(models, batches):
        for proj, (fused, unfused, weight, gated) in projections(name, batch).items():
            if (proj == "lm_head" and batch > 1) or (split and proj not in SPLIT_PROJECTIONS):
                continue
            key = gemv.tiles_key(weight, batch, gated)
            current = gemv.TILES.pop(key, None)
            candidates = ([current] if current else []) + SPLIT_CANDIDATES if split else CANDIDATES[min(key[2], 8)]
            row = {"key": key, "unfused_us": _time(unfused), "tiles_us": {}}
            for tiles in candidates:
                gemv.TILES[key] = tiles
                try:
                    row["tiles_us"][str(tiles)] = _time(fused)
                except Exception as err:  # noqa: BLE001 - a tile the compiler rejects is no candidate
                    row["tiles_us"][str(tiles)] = repr(err)[:120]
            gemv.TILES.pop(key)
            row["default_us"] = _time(fused)
            if current:
                gemv.TILES[key] = current
            timed = {k: v for k, v in row["tiles_us"].items() if isinstance(v, float)}
            row["best"] = min(timed, key=timed.get)
            row["best_us"] = timed[row["best"]]
            row["best_GB_s"] = weight.numel() * 2 / row["best_us"] / 1e3
            results[f"{name}_B{batch}_{proj}"] = row
            print(f"{name} B={batch} {proj} {key}: unfused {row['unfused_us']:.1f} us, default "
                  f"{row['default_us']:.1f}, best {row['best_us']:.1f} {row['best']} ({row['best_GB_s']:.0f} GB/s)",
                  flush=True)
    return results


def _parse(tiles: str) -> tuple[int, ...]:
    return tuple(json.loads(tiles.replace("(", "[").replace(")", "]")))


def use_fastest_tiles(results: dict) -> dict:
    """Install the fastest measured tiles for every (shape, batch tile); returns the installed table."""
    for row in results.values():
        gemv.TILES[tuple(row["key"])] = _parse(row["best"])
    return {str(k): v for k, v in gemv.TILES.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, nargs="+", default=[1])
    parser.add_argument("--out", type=Path, default=Path("gpu_out"))
    args = parser.parse_args()
    require_cuda()
    args.out.mkdir(parents=True, exist_ok=True)
    results = sweep(args.batches)
    (args.out / "gpu_gemv.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
