"""Where a decode step and a 2048-token prefill spend GPU time, to choose the next kernel to write.

For each model: the device time of every kernel of one eager fused decode step (batch 1 and 64), next to the
step's time as a replayed CUDA graph (their difference is launch gaps); cuBLAS F.linear at the decode's
projection shapes (µs and GB/s at batch 1 and 8); the top kernels of a 2048-token prefill.

    PYTHONPATH=$PWD python3 benchmarks/gpu_profile.py [--models a,b] [--decode-only] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from gpu_common import MODELS, model_names, model_spec, random_model, require_cuda
from torch.profiler import ProfilerActivity, profile
from triton.testing import do_bench

from mambapipe.engine.cuda_graphs import GraphedGreedyDecode
from mambapipe.engine.state import InferenceState


def kernel_times(fn, steps: int) -> tuple[dict[str, float], int]:
    """µs of device time per call of `fn` by kernel name (longest first), and kernel launches per call."""
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    totals: dict[str, float] = defaultdict(float)
    launches = 0
    for evt in prof.events():
        if evt.device_type == torch.autograd.DeviceType.CUDA:
            totals[evt.name[:80]] += evt.time_range.elapsed_us() / steps
            launches += 1
    return dict(sorted(totals.items(), key=lambda kv: -kv[1])), launches // steps


def decode_profile(model, batch: int) -> dict:
    state = InferenceState.allocate(model.spec, 1, batch, model.dtype, "cuda", ssm_dtype=model.dtype)
    tokens = torch.randint(1, 1000, (batch,), device="cuda")
    kernels, launches = kernel_times(lambda: model.decode(tokens, state, 0), steps=5)
    graphed = GraphedGreedyDecode(model, state, tokens, [batch])
    graph_ms = do_bench(lambda: graphed.greedy_step(batch), return_mode="median")
    return {"graph_step_us": graph_ms * 1e3, "kernel_sum_us": sum(kernels.values()),
            "launches": launches, "kernels_us": kernels}


def linear_shapes(model) -> dict[str, tuple[int, int]]:
    w = model.layers[0]
    names = ["in_proj", "out_proj"] + ([] if model.spec.is_mamba2 else ["x_proj", "dt_proj"])
    shapes = {n: tuple(w[n].shape) for n in names}
    shapes["lm_head"] = tuple(model.glob["lm_head"].shape)
    return shapes


def gemv_bandwidth(model) -> dict:
    """cuBLAS F.linear (M, K) x (N, K)^T at the decode's shapes: µs and the weight bytes' GB/s."""
    out = {}
    for name, (N, K) in linear_shapes(model).items():
        W = torch.randn(N, K, device="cuda", dtype=model.dtype)
        for M in (1, 8):
            x = torch.randn(M, K, device="cuda", dtype=model.dtype)
            us = do_bench(lambda: F.linear(x, W), return_mode="median") * 1e3
            out[f"{name}_{N}x{K}_M{M}"] = {"us": us, "GB_s": N * K * 2 / us / 1e3}
    return out


def prefill_profile(model, length: int = 2048, top: int = 12) -> dict:
    state = InferenceState.allocate(model.spec, 1, 1, model.dtype, "cuda", ssm_dtype=model.dtype)
    tokens = torch.randint(1, 1000, (1, length), device="cuda")
    lengths, slots = torch.tensor([length], device="cuda"), torch.zeros(1, dtype=torch.long, device="cuda")
    kernels, launches = kernel_times(lambda: model.prefill(tokens, lengths, state, slots), steps=2)
    return {"kernel_sum_ms": sum(kernels.values()) / 1e3, "launches": launches,
            "top_ms": {k: v / 1e3 for k, v in list(kernels.items())[:top]}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=model_names, default=",".join(MODELS))
    parser.add_argument("--out", type=Path, default=Path("gpu_out"))
    parser.add_argument("--decode-only", action="store_true")
    args = parser.parse_args()
    require_cuda()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.models.split(","):
        model = random_model(model_spec(name))
        r = {"gemv": gemv_bandwidth(model)}
        for batch in (1, 64):
            r[f"decode_B{batch}"] = decode_profile(model, batch)
        if name != "mamba_130m" and not args.decode_only:
            r["prefill_2048"] = prefill_profile(model)
        results[name] = r
        d1 = r["decode_B1"]
        print(f"[{name}] decode B=1: graph {d1['graph_step_us']:.0f} us, kernels {d1['kernel_sum_us']:.0f} us",
              flush=True)
        print(json.dumps(r, indent=1), flush=True)
        del model
        torch.cuda.empty_cache()
    (args.out / "gpu_profile.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
