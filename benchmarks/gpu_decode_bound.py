"""How fast a batch-1 decode step could be in its present structure, one kernel per weight: the bytes a step
reads, streamed by plain read kernels instead of the engine's, in the step's order and kernel count.

For each model it times, as CUDA graphs:
- `one kernel`: every layer's weights (and the SSM state) read by a single kernel: the HBM read rate;
- `chain` variants: one read kernel per weight, in the step's order (Mamba2: in_proj, SSM state, out_proj;
  Mamba1: in_proj, x_proj, dt_proj + SSM state, out_proj; then the lm_head), without PDL, and with PDL
  either waiting for the kernel before first thing ("wait first") or after issuing all of its own loads
  ("loads first": a kernel that held its whole weight slice in registers before the wait);
- and from the engine (`gpu_step_sweep.sweep`, S1): the step itself, and the step with only its projections
  launched (the SSM update and the separate gated norm left out).
So step - projections is what the small kernels cost, projections - chain what the engine's GEMVs lose to a
plain read of the same bytes, chain - one kernel what the kernel boundaries cost.

    PYTHONPATH=$PWD:$PWD/benchmarks python3 benchmarks/gpu_decode_bound.py --models mamba2_2p7b [--out DIR]

Measured on the H200 in GPU_NOTES.md v24. Each read kernel's sums are checked against torch's first.
`--device cpu` (with TRITON_INTERPRET=1 and a tiny `--arch`) checks the script, not the GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_common import graph_replay_ms, model_names, model_spec, parse_arch, require_cuda  # noqa: E402

from mambapipe.engine.kernels import pdl  # noqa: E402
from mambapipe.models import ModelSpec  # noqa: E402

# (BLOCK elements a load round, rounds a program, warps): each program reads BLOCK * ROUNDS contiguous
# elements with every round's loads issued together (static_range unrolls the loop; nothing orders them)
READ_SHAPES = ((2048, 4, 4), (2048, 8, 4), (4096, 8, 8), (4096, 16, 8), (8192, 8, 8))


@triton.jit
def _read_kernel(src_ptr, out_ptr, n_elements, BLOCK: tl.constexpr, ROUNDS: tl.constexpr,
                 PDL: tl.constexpr, LOADS_FIRST: tl.constexpr):
    """Sums this program's BLOCK * ROUNDS contiguous elements of src into out[pid] (fp32). Under PDL it lets
    the next kernel launch first thing, and waits for the kernel before either before its loads or after."""
    start = tl.program_id(0).to(tl.int64) * BLOCK * ROUNDS  # a whole model's weights pass 2**31 elements
    pdl.allow_next(PDL)
    if not LOADS_FIRST:
        pdl.wait_previous(PDL)
    acc = tl.zeros((BLOCK,), tl.float32)
    for r in tl.static_range(ROUNDS):
        offs = start + r * BLOCK + tl.arange(0, BLOCK)
        acc += tl.load(src_ptr + offs, mask=offs < n_elements, other=0.0).to(tl.float32)
    if LOADS_FIRST:
        pdl.wait_previous(PDL)
    tl.store(out_ptr + tl.program_id(0), tl.sum(acc, axis=0))


def read(src: torch.Tensor, out: torch.Tensor, shape: tuple[int, int, int], pdl_mode: str) -> torch.Tensor:
    """Launch `_read_kernel` over the flat `src` into `out` (at least `programs(src, shape)` fp32 slots).
    pdl_mode: "off", "wait first" or "loads first"."""
    block, rounds, warps = shape
    launch = pdl.launch_options(src) if pdl_mode != "off" else {}
    _read_kernel[(programs(src, shape),)](src, out, src.numel(), BLOCK=block, ROUNDS=rounds, PDL=bool(launch),
                                          LOADS_FIRST=pdl_mode == "loads first", num_warps=warps, **launch)
    return out


def programs(src: torch.Tensor, shape: tuple[int, int, int]) -> int:
    return triton.cdiv(src.numel(), shape[0] * shape[1])


def step_buffers(spec: ModelSpec, device: str) -> list[torch.Tensor]:
    """The fp16 buffers a batch-1 step reads, one per kernel, in the step's order (values do not matter)."""
    H, Di, N = spec.hidden_size, spec.intermediate_size, spec.state_size
    state = spec.num_heads * spec.head_dim * N if spec.is_mamba2 else Di * N

    def buf(elements: int) -> torch.Tensor:
        return torch.randn(elements, device=device).to(torch.float16)

    buffers = []
    for _ in range(spec.num_layers):
        if spec.is_mamba2:
            buffers += [buf(spec.in_proj_rows * H), buf(state), buf(H * Di)]
        else:
            R = spec.dt_rank
            buffers += [buf(spec.in_proj_rows * H), buf((R + 2 * N) * Di), buf(Di * R + state), buf(H * Di)]
    return buffers + [buf(spec.vocab_size * H)]


def _check(buffers: list[torch.Tensor], out: torch.Tensor, shape: tuple[int, int, int]) -> None:
    """The read kernel's per-program sums add up to torch's sum of each buffer (a kernel that skipped
    loads would time faster than the bytes allow)."""
    for src in (buffers[0], buffers[-1]):
        read(src, out, shape, "off")
        got, want = float(out[:programs(src, shape)].double().sum()), float(src.double().sum())
        if abs(got - want) > 1e-3 * float(src.double().abs().sum()) + 1e-3:
            raise AssertionError(f"read kernel {shape}: sum {got} against torch's {want}")


def bound(spec: ModelSpec, replays: int, device: str) -> dict:
    buffers = step_buffers(spec, device)
    total_bytes = sum(b.numel() * 2 for b in buffers)
    flat = torch.cat(buffers)
    out = torch.empty(max(programs(flat, s) for s in READ_SHAPES), device=device)
    rows = {"bytes": total_bytes, "kernels": len(buffers), "shapes": {}}
    for shape in READ_SHAPES:
        _check(buffers, out, shape)
        timed = {"one kernel": graph_replay_ms(lambda: read(flat, out, shape, "off"), replays, device)}
        for mode in ("off", "wait first", "loads first"):
            timed[f"chain, PDL {mode}"] = graph_replay_ms(lambda: [read(b, out, shape, mode) for b in buffers],
                                                          replays, device)
        rows["shapes"][str(shape)] = timed
        print(f"{spec.num_layers} layers, {shape}: " + ", ".join(f"{k} {v:.4f} ms" for k, v in timed.items()),
              flush=True)
    rows["best"] = {k: min(t[k] for t in rows["shapes"].values()) for k in next(iter(rows["shapes"].values()))}
    return rows


def engine_steps(name: str, arch: dict, device: str, rounds: int) -> dict:
    """S1 decode ms a step of the engine: as it is, and with only its projections launched."""
    from gpu_step_sweep import left_out, sweep
    projections_only = {**left_out("ssm_update"), **left_out("gated_norm")}
    result = sweep([name], {"projections only": projections_only}, "S1", rounds, device, arch)[name]
    return {variant: min(r["decode_ms_per_step"] for r in runs) for variant, runs in result.items()}


def table(results: dict) -> str:
    lines = ["| model | MB a step | kernels | step | projections only | chain, PDL loads first | chain, PDL wait "
             "first | chain, no PDL | one kernel |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        best, steps = r["bound"]["best"], r.get("engine", {})

        def cell(ms):
            return f"{ms:.3f} ({r['bound']['bytes'] / ms / 1e9:.2f} TB/s)" if ms else "-"
        lines.append(f"| {name} | {r['bound']['bytes'] / 1e6:.0f} | {r['bound']['kernels']} | "
                     f"{cell(steps.get('base'))} | {cell(steps.get('projections only'))} | "
                     f"{cell(best['chain, PDL loads first'])} | {cell(best['chain, PDL wait first'])} | "
                     f"{cell(best['chain, PDL off'])} | {cell(best['one kernel'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=model_names, default="mamba_2p8b,mamba2_2p7b,codestral_7b")
    parser.add_argument("--arch", default="", type=parse_arch, help="FIELD=INT,...: ModelSpec fields replaced")
    parser.add_argument("--replays", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2, help="of the engine's step timing")
    parser.add_argument("--no-engine", action="store_true", help="time the read kernels only")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cpu: a check of the script with a tiny --arch, under TRITON_INTERPRET=1")
    parser.add_argument("--out", type=Path, default=Path("gpu_out"))
    args = parser.parse_args()
    if args.device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        # the read kernels are Triton's: without the interpreter they end in "0 active drivers", a traceback
        parser.error("--device cpu runs the read kernels in Triton's interpreter: set TRITON_INTERPRET=1")
    if args.device == "cuda":
        require_cuda()
    results = {}
    for name in args.models.split(","):
        spec = dataclasses.replace(model_spec(name), **args.arch)
        results[name] = {"bound": bound(spec, args.replays, args.device)}
        if args.device == "cuda":
            torch.cuda.empty_cache()
        if not args.no_engine:
            results[name]["engine"] = engine_steps(name, args.arch, args.device, args.rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "decode_bound.json").write_text(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
