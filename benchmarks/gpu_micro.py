"""Per-layer prefill pieces at 2048 tokens, to choose kernel shapes: the Triton Mamba1 scan (mamba-2.8b
shape) over block sizes and warps, and the Mamba2 chunked SSD (mamba2-2.7b and Codestral shapes).

    PYTHONPATH=$PWD python benchmarks/gpu_micro.py
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench

from mambapipe.engine import ops
from mambapipe.engine.kernels import scan


def scan_variants(L: int = 2048, Di: int = 5120, N: int = 16) -> dict:
    u, z = torch.randn(1, L, Di, device="cuda", dtype=torch.float16), torch.randn(1, L, Di, device="cuda", dtype=torch.float16)
    delta = F.softplus(torch.randn(1, L, Di, device="cuda") - 4)
    BC = torch.randn(1, L, 2 * N, device="cuda", dtype=torch.float16)
    A, D = -torch.rand(Di, N, device="cuda") * 4, torch.ones(Di, device="cuda")
    y, h = torch.empty_like(u), torch.empty(1, Di, N, device="cuda")
    B, C = BC[..., :N], BC[..., N:]
    results = {}
    for block in (16, 32, 64):
        for warps in (1, 2, 4):
            for stages in (1, 3):
                def launch():
                    scan._scan_kernel[(1, triton.cdiv(Di, block))](
                        u, delta, A, B, C, D, z, y, h, L, Di, u.stride(0), u.stride(1), delta.stride(0),
                        delta.stride(1), B.stride(0), B.stride(1), C.stride(0), C.stride(1), z.stride(0),
                        z.stride(1), y.stride(0), y.stride(1), N=N, BLOCK_D=block, num_warps=warps,
                        num_stages=stages)
                results[f"block{block}_w{warps}_s{stages}"] = do_bench(launch, return_mode="median")
    return results


def ssd_times(L: int = 2048) -> dict:
    results = {}
    for name, heads, groups in (("mamba2_2p7b", 80, 1), ("codestral_7b", 128, 8)):
        x = torch.randn(1, L, heads, 64, device="cuda", dtype=torch.float16)
        dt = F.softplus(torch.randn(1, L, heads, device="cuda") - 4)
        B, C = (torch.randn(1, L, groups, 128, device="cuda", dtype=torch.float16) for _ in range(2))
        A, D = -torch.rand(heads, device="cuda") * 4, torch.ones(heads, device="cuda")
        results[name] = do_bench(lambda: ops.ssd_chunk_scan(x, dt, A, B, C, D, 256), return_mode="median")
    return results


if __name__ == "__main__":
    out = {"scan_ms_per_layer": scan_variants(), "ssd_ms_per_layer": ssd_times()}
    print(json.dumps(out, indent=1))
