"""Per-layer pieces, to choose kernel shapes: at 2048 tokens the Triton Mamba1 scan (mamba-2.8b shape) over
tokens-per-chunk, channel block and warps, the Mamba2 chunked SSD (mamba2-2.7b and
Codestral shapes): torch reference vs regrouped torch vs the Triton kernels (over their tile sizes), and the
prefill conv's tiles; the batched Mamba1 decode update over its launch shapes.

    PYTHONPATH=$PWD python benchmarks/gpu_micro.py [--ssd-only]
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch
import torch.nn.functional as F
from gpu_common import require_cuda
from triton.testing import do_bench, do_bench_cudagraph

from mambapipe.engine import ops
from mambapipe.engine.kernels import prefill, scan, scan_cuda, ssd, ssd_cuda, ssd_triton, ssm

# (tokens per chunk, channel block, warps) of the scan. Its (BLOCK_D, N=16) state tile is laid out 8 channels x 4
# lanes a warp, 4 states a lane, so BLOCK_D / (8 warps) channels a thread; compiled for sm_90 its chunk loop is
# 9.1-10.8 SASS instructions an element at these shapes (120-255 registers, no spills): fewer with more channels
# a thread or longer chunks, at fewer resident warps.
SCAN_SHAPES = ((8, 16, 1), (4, 32, 1), (8, 16, 2), (16, 16, 2), (8, 32, 2), (16, 32, 2), (8, 64, 2), (8, 32, 4),
               (16, 32, 4), (8, 64, 4), (8, 128, 4), (16, 64, 8),
               # 2026-11-29 (v11): ncu put (16, 64, 8) at 12.5 % occupancy (164 registers, one program an SM) on
               # 80 of the 132 SMs, MUFU pipe 41 % busy: more warps a program or more programs
               (16, 64, 16), (8, 64, 16), (8, 64, 8), (16, 32, 8), (8, 32, 8), (16, 16, 4), (8, 16, 4), (16, 16, 8))


def scan_variants(L: int = 2048, Di: int = 5120, N: int = 16) -> dict:
    """Median ms (as a CUDA graph) of one layer's scan at width Di per (tokens per chunk, channel block, warps) of the
    scan kernel, with B and C in fp16 (as the standard launch reads them) and in fp32 (key suffix `_fp32bc`, as the
    prefill widens them for the narrow launch: `scan.wants_fp32_bc`); restores the module's shapes, as
    `ssd_triton_variants` does (`use_fastest_scan` then sets one). These fp16 prompts run the CUDA kernel in the
    model (`scan_cuda`), so the Triton kernels are timed with it switched off, and it is timed once (key "cuda")."""
    u, z = (torch.randn(1, L, Di, device="cuda", dtype=torch.float16) for _ in range(2))
    delta = F.softplus(torch.randn(1, L, Di, device="cuda") - 4)
    BC = torch.randn(1, L, 2 * N, device="cuda", dtype=torch.float16)
    A, D = -torch.rand(Di, N, device="cuda") * 4, torch.ones(Di, device="cuda")
    y_ref = ops.selective_scan(u, delta, A, BC[..., :N], BC[..., N:], D, z)[0].float()
    args = (u, delta, A, BC[..., :N], BC[..., N:], D, z)
    results = {"cuda": _graph_ms(lambda: scan.selective_scan(*args))} if scan_cuda.usable(
        *args, torch.empty(1, Di, N, device="cuda"), None) else {}
    saved, cuda_enabled, scan_cuda.ENABLED = dict(scan.SHAPES), scan_cuda.ENABLED, False
    for (T, block, warps), bc in itertools.product(SCAN_SHAPES, (BC, BC.float())):
        key = f"T{T}_bd{block}_w{warps}" + ("_fp32bc" if bc.dtype == torch.float32 else "")
        args = (u, delta, A, bc[..., :N], bc[..., N:], D, z)
        # whichever shape `launch_for` picks (the segment-end kernel keeps its own, as `use_fastest_scan` does)
        scan.SHAPES.update(dict.fromkeys(("standard", "narrow"), (T, block, warps)))
        try:  # a variant off the torch scan is reported, never timed, so it cannot be chosen
            error = _rel(scan.selective_scan(*args)[0].float(), y_ref)
            results[key] = (_graph_ms(lambda: scan.selective_scan(*args)) if error < 1e-2
                            else f"rel. error {error:.2e} against ops.selective_scan")
        except Exception as err:  # noqa: BLE001 - a shape the compiler rejects is just not a candidate
            results[key] = repr(err)[:200]
    scan.SHAPES.update(saved)
    scan_cuda.ENABLED = cuda_enabled
    return results


def use_fastest_scan(results: dict, Di: int = 5120, L: int = 2048) -> str:
    """Set the launch shape that one row of L tokens at width Di runs (`scan.launch_for`: the standard one, in
    time segments at 2048 tokens since v25) to the sweep's fastest with B and C in the dtype that launch reads
    them in; returns its name. Batches of rows and one row of mamba-130m take the same shape, so a pick other
    than the default moves their prefills too; at mamba-130m's width a sweep like this ranked (8, 16, 2) first,
    which made its 2048-token prefill 5.5 -> 6.5 ms (GPU_NOTES.md v13, device call 58)."""
    cuda = torch.device("cuda")
    name, _ = scan.launch_for(1, Di, L, cuda)
    fp32_bc = scan.wants_fp32_bc(1, Di, L, cuda)
    timed = {k: v for k, v in results.items()
             if k.startswith("T") and isinstance(v, float) and k.endswith("_fp32bc") == fp32_bc}
    fastest = min(timed, key=timed.get)
    parts = fastest.removesuffix("_fp32bc").split("_")
    scan.SHAPES[name] = tuple(int(part[len(tag):]) for part, tag in zip(parts, ("T", "bd", "w")))
    return fastest


SSD_SHAPES = (("mamba2_2p7b", 80, 1), ("codestral_7b", 128, 8))  # (name, heads, groups); P 64, N 128
# Triton SSD launch settings tried, one kernel at a time (the others at their defaults): the chunk scan's
# (BLOCK_L, warps, stages), the chunk state's (BLOCK_L, BLOCK_N, warps, stages), the heads a cumsum program
# and the state entries a state-passing program.
SSD_SETTINGS = {
    ("BLOCK_L", "CHUNK_SCAN_WARPS", "CHUNK_SCAN_STAGES"):
        ((64, 4, 1), (64, 4, 2), (64, 4, 3), (64, 8, 3), (64, 8, 2), (32, 4, 3), (32, 4, 2), (32, 2, 3)),
    ("CHUNK_STATE_BLOCK_L", "CHUNK_STATE_BLOCK_N", "CHUNK_STATE_WARPS", "CHUNK_STATE_STAGES"):
        ((64, 64, 4, 3), (64, 128, 8, 3), (32, 64, 4, 3), (64, 64, 8, 3), (32, 128, 4, 3)),
    ("BLOCK_HEADS",): ((16,), (4,), (2,)),
    ("STATE_BLOCK",): ((1024,), (256,), (4096,)),
}


def _ssd_inputs(heads: int, groups: int, L: int) -> tuple:
    x = torch.randn(1, L, heads, 64, device="cuda", dtype=torch.float16)
    dt = F.softplus(torch.randn(1, L, heads, device="cuda") - 4)
    B, C = (torch.randn(1, L, groups, 128, device="cuda", dtype=torch.float16) for _ in range(2))
    A, D = -torch.rand(heads, device="cuda") * 4, torch.ones(heads, device="cuda")
    return x, dt, A, B, C, D


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def ssd_times(L: int = 2048) -> dict:
    """Median ms of one layer's SSD (the torch reference and regrouped ops eagerly; the kernels as the engine runs
    them, the CUDA C chunk scan where it takes the inputs, and with the Triton chunk scan, as CUDA graphs) and their
    relative errors against the reference."""
    results = {}
    for name, heads, groups in SSD_SHAPES:
        args = _ssd_inputs(heads, groups, L)
        for label, fn in (("reference", ops.ssd_chunk_scan), ("regrouped", ssd.regrouped_ssd_chunk_scan)):
            results[f"{name}_{label}"] = do_bench(lambda: fn(*args, 256), return_mode="median")
        results[f"{name}_triton"] = _graph_ms(lambda: ssd_triton.ssd_chunk_scan(*args, 256))
        enabled, ssd_cuda.ENABLED = ssd_cuda.ENABLED, False
        results[f"{name}_triton_chunk_scan"] = _graph_ms(lambda: ssd_triton.ssd_chunk_scan(*args, 256))
        ssd_cuda.ENABLED = enabled
        y_ref, h_ref = ops.ssd_chunk_scan(*args, 256)
        for label, fn in (("regrouped", ssd.regrouped_ssd_chunk_scan), ("triton", ssd_triton.ssd_chunk_scan)):
            y, h = fn(*args, 256)
            results[f"{name}_{label}_rel_err"] = {"y": _rel(y, y_ref), "state": _rel(h, h_ref)}
    return results


def _graph_ms(fn) -> float:
    """Median ms of fn replayed as a CUDA graph: kernel time and the gaps between kernels, not the host's
    launch cost (which bounds an eager call of the five SSD kernels)."""
    return do_bench_cudagraph(fn, return_mode="median")


def ssd_triton_variants(L: int = 2048) -> dict:
    """Median ms (as a CUDA graph) of one layer's Triton SSD per launch setting of each of its kernels, both
    shapes; restores the module defaults."""
    results = {}
    for knobs, settings in SSD_SETTINGS.items():
        saved = tuple(getattr(ssd_triton, knob) for knob in knobs)
        for name, heads, groups in SSD_SHAPES:
            args = _ssd_inputs(heads, groups, L)
            for setting in settings:
                for knob, value in zip(knobs, setting):
                    setattr(ssd_triton, knob, value)
                key = f"{name}_{knobs[0]}_" + "_".join(map(str, setting))
                try:
                    results[key] = _graph_ms(lambda: ssd_triton.ssd_chunk_scan(*args, 256))
                except Exception as err:  # noqa: BLE001 - a setting the compiler rejects is no candidate
                    results[key] = repr(err)[:200]
        for knob, value in zip(knobs, saved):
            setattr(ssd_triton, knob, value)
    return results


# (rows, channels, warps) of a batched Mamba1 decode update program (kernels/ssm.py BATCHED_SHAPE)
MAMBA1_UPDATE_SHAPES = ((1, 32, 4), (2, 32, 4), (4, 32, 4), (8, 32, 4), (1, 64, 4), (2, 64, 4), (4, 64, 4),
                        (4, 64, 8), (8, 64, 8), (2, 128, 4), (4, 32, 2), (2, 32, 2))


def mamba1_update_variants(batches: tuple[int, ...] = (64, 8)) -> dict:
    """Microseconds (as a CUDA graph, the dt_proj GEMM included) of one layer's batched Mamba1 decode update per
    launch shape, at mamba-2.8b's and mamba-130m's widths, each first checked against the torch twin on an
    untouched state; restores the module default."""
    saved, results = ssm.BATCHED_SHAPE, {}
    for name, Di, R in (("mamba_2p8b", 5120, 160), ("mamba_130m", 1536, 48)):
        for batch in batches:
            N = 16
            state = torch.randn(batch, Di, N, device="cuda").half()
            x, z, dt_low = (torch.randn(batch, cols, device="cuda").half() for cols in (Di, Di, R))
            dt_proj = (torch.randn(Di, R, device="cuda") * R ** -0.5).half()
            dt_bias, D = torch.randn(Di, device="cuda") - 4, torch.ones(Di, device="cuda")
            A = -torch.rand(Di, N, device="cuda") * 4
            B, C = (torch.randn(batch, N, device="cuda").half() for _ in range(2))
            ref = ssm.mamba1_state_update_ref(state.clone(), x, dt_low, dt_proj, dt_bias, A, B, C, D, z)
            for shape in MAMBA1_UPDATE_SHAPES:
                ssm.BATCHED_SHAPE = shape
                y = ssm.mamba1_state_update(state.clone(), x, dt_low, dt_proj, dt_bias, A, B, C, D, z, False)
                error = _rel(y.float(), ref.float())
                work = state.clone()  # the timed updates evolve their own copy
                results[f"{name}_B{batch}_{shape}"] = (
                    do_bench_cudagraph(lambda: ssm.mamba1_state_update(work, x, dt_low, dt_proj, dt_bias, A, B, C, D,
                                                                       z, False)) * 1e3
                    if error < 1e-2 else f"rel. error {error:.2e} against the torch twin")
    ssm.BATCHED_SHAPE = saved
    return results


CONV_TILES = ((16, 128), (16, 256), (32, 128), (8, 256), (32, 64), (64, 64), (8, 512))  # (BLOCK_L, BLOCK_C)
CONV_WIDTHS = (("mamba_130m", 1536), ("mamba2_130m", 1792), ("mamba_2p8b", 5120), ("mamba2_2p7b", 5376),
               ("codestral_7b", 10240))  # conv channels: d_inner (Mamba1), d_inner + 2 G N (Mamba2)


def conv_variants(L: int = 2048, inputs: int = 4) -> dict:
    """Median ms of the prefill conv (kernels/prefill.py) per tile at each model's conv width, as a CUDA graph
    (timed eagerly, one Triton launch costs about what the kernel does) convolving `inputs` inputs in turn, so
    they come from HBM as a layer's in_proj output mostly does, not from L2; restores the module defaults."""
    saved = (prefill.CONV_BLOCK_L, prefill.CONV_BLOCK_C)
    results = {}
    for name, channels in CONV_WIDTHS:
        # the conv reads a column slice of the in_proj output
        xz = [torch.randn(1, L, channels + 512, device="cuda", dtype=torch.float16) for _ in range(inputs)]
        weight, bias = (torch.randn(*shape, device="cuda", dtype=torch.float16)
                        for shape in ((channels, 4), (channels,)))
        xs, lengths = [t[..., 256:256 + channels] for t in xz], torch.tensor([L], device="cuda")
        for rows, cols in CONV_TILES:
            prefill.CONV_BLOCK_L, prefill.CONV_BLOCK_C = rows, cols
            results[f"{name}_L{rows}_C{cols}"] = _graph_ms(
                lambda: [prefill.causal_conv1d_prefill(x, weight, bias, lengths) for x in xs]) / inputs
    prefill.CONV_BLOCK_L, prefill.CONV_BLOCK_C = saved
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--ssd-only", action="store_true", help="skip the Mamba1 scan sweep")
    ssd_only = parser.parse_args().ssd_only
    require_cuda()
    report = {"ssd_ms_per_layer": ssd_times(), "ssd_triton_tiles_ms_per_layer": ssd_triton_variants(),
              "conv_tiles_ms_per_layer": conv_variants(), "mamba1_update_us_per_layer": mamba1_update_variants()}
    if not ssd_only:
        variants = scan_variants()
        report.update(scan_ms_per_layer=variants, fastest=use_fastest_scan(variants))
    print(json.dumps(report, indent=1))
