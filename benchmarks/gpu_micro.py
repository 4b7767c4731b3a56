"""Per-layer prefill pieces at 2048 tokens, to choose kernel shapes: the Triton Mamba1 scan (mamba-2.8b
shape) over tokens-per-chunk, channel block and warps, and the Mamba2 chunked SSD (mamba2-2.7b and
Codestral shapes), reference vs regrouped.

    PYTHONPATH=$PWD python benchmarks/gpu_micro.py
"""

from __future__ import annotations

import itertools
import json

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from mambapipe.engine import ops
from mambapipe.engine.kernels import scan, ssd


def scan_variants(L: int = 2048, Di: int = 5120, N: int = 16) -> dict:
    """Median ms of one layer's scan per (tokens per chunk, channel block, warps)."""
    u, z = (torch.randn(1, L, Di, device="cuda", dtype=torch.float16) for _ in range(2))
    delta = F.softplus(torch.randn(1, L, Di, device="cuda") - 4)
    BC = torch.randn(1, L, 2 * N, device="cuda", dtype=torch.float16)
    A, D = -torch.rand(Di, N, device="cuda") * 4, torch.ones(Di, device="cuda")
    results = {}
    for T, block, warps in itertools.product((8, 16, 32), (16, 32), (4, 8)):
        scan.TOKENS_PER_CHUNK, scan.BLOCK_D, scan.NUM_WARPS = T, block, warps
        try:
            results[f"T{T}_bd{block}_w{warps}"] = do_bench(
                lambda: scan.selective_scan(u, delta, A, BC[..., :N], BC[..., N:], D, z), return_mode="median")
        except Exception as err:  # noqa: BLE001 - a shape the compiler rejects is just not a candidate
            results[f"T{T}_bd{block}_w{warps}"] = repr(err)[:200]
    return results


def use_fastest_scan(results: dict) -> str:
    """Set the scan's module constants to the fastest measured variant; returns its name."""
    best = min((v, k) for k, v in results.items() if isinstance(v, float))[1]
    T, block, warps = (int(part[len(tag):]) for part, tag in zip(best.split("_"), ("T", "bd", "w")))
    scan.TOKENS_PER_CHUNK, scan.BLOCK_D, scan.NUM_WARPS = T, block, warps
    return best


def ssd_times(L: int = 2048) -> dict:
    results = {}
    for name, heads, groups in (("mamba2_2p7b", 80, 1), ("codestral_7b", 128, 8)):
        x = torch.randn(1, L, heads, 64, device="cuda", dtype=torch.float16)
        dt = F.softplus(torch.randn(1, L, heads, device="cuda") - 4)
        B, C = (torch.randn(1, L, groups, 128, device="cuda", dtype=torch.float16) for _ in range(2))
        A, D = -torch.rand(heads, device="cuda") * 4, torch.ones(heads, device="cuda")
        for label, fn in (("reference", ops.ssd_chunk_scan), ("regrouped", ssd.ssd_chunk_scan)):
            results[f"{name}_{label}"] = do_bench(lambda: fn(x, dt, A, B, C, D, 256), return_mode="median")
        y, h = ssd.ssd_chunk_scan(x, dt, A, B, C, D, 256)
        y_ref, h_ref = ops.ssd_chunk_scan(x, dt, A, B, C, D, 256)
        results[f"{name}_rel_err"] = float((y - y_ref).norm() / y_ref.norm())
    return results


if __name__ == "__main__":
    variants = scan_variants()
    print(json.dumps({"scan_ms_per_layer": variants, "fastest": use_fastest_scan(variants),
                      "ssd_ms_per_layer": ssd_times()}, indent=1))
