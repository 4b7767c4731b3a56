"""Would one persistent kernel beat a chain of kernels at batch-1 decode? A chain of dependent GEMVs at a
model's shapes (each layer's in_proj, then its out_proj on the first Di of the in_proj's outputs; then the
lm_head; fp16 weights, fp32 vectors), timed as CUDA graphs in two structures:
- `kernels`: one GEMV kernel per weight, with and without PDL (each program loads its first weight tile, then
  waits for the kernel before), one row block a program or a fixed grid of programs looping over row blocks;
- `persistent`: one kernel whose programs (all resident at once) run every GEMV in turn, with a grid barrier
  (an atomic arrival count, then a poll) between GEMVs; before it polls, a program loads its first tile of the
  next weight. The poll is by every thread, or by one a program; a third variant drops the barriers, which
  makes the results wrong but times the structure without them.
Each variant's logits are checked against torch's fp32 chain over the same weights first (the no-barrier one
excepted). The engine's own projections, with their norms, conv and gate, are `gpu_decode_bound.py`'s
"projections only".

    PYTHONPATH=$PWD:$PWD/benchmarks python3 benchmarks/gpu_persistent_chain.py --models mamba2_2p7b [--out DIR]

Measured on the H200 in GPU_NOTES.md v26: at best the persistent kernel tied the chain of kernels (mamba2-2.7b)
or lost to it (Codestral); its barriers cost 1.6-3.3 us each, no less than a PDL kernel boundary. CUDA only:
the Triton interpreter runs programs one after another, so a barrier would never open.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_common import graph_replay_ms, model_names, model_spec, parse_arch, require_cuda  # noqa: E402

from mambapipe.engine.kernels import pdl  # noqa: E402


def pieces(K: int) -> tuple[int, int]:
    """K as two power-of-two pieces (tl.arange needs them): halves of a power of two, else 2560 = 2048 + 512.
    Not `gemv_slice.pieces`, which pads the second piece and gives none for a power of two: `_tile` loads both
    pieces unmasked, so each must be exact and non-empty."""
    if K & (K - 1) == 0:
        return K // 2, K // 2
    main = triton.next_power_of_2(K) // 2
    rest = K - main
    assert rest & (rest - 1) == 0, K
    return main, rest


@triton.jit
def _ld_acquire(ptr):
    """The counter at ptr, read with acquire semantics at GPU scope (what other programs stored before their
    release is visible after it)."""
    return tl.inline_asm_elementwise("ld.global.acquire.gpu.b32 $0, [$1];", "=r,l", [ptr], dtype=tl.int32,
                                     is_pure=False, pack=1)


@triton.jit
def _ld_acquire_lane0(ptrs, lane, other):
    """Lane 0 reads the counter (acquire); every other lane returns `other`: one request a program."""
    return tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.eq.s32 p, $2, 0; mov.b32 $0, $3; @p ld.global.acquire.gpu.b32 $0, [$1]; }",
        "=r,l,r,r", [ptrs, lane, other], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _arrive_and_wait(counter, target, BARRIER: tl.constexpr = 1, THREADS: tl.constexpr = 128):
    """BARRIER 0: none (timing only, the stages overlap and the results are wrong); 1: every thread polls;
    2: one thread a program polls and a block reduction hands its value to the others."""
    if BARRIER > 0:
        tl.debug_barrier()  # every thread's stores of this program are issued before its arrival
        tl.atomic_add(counter, 1, sem="release", scope="gpu")
        if BARRIER == 1:
            while _ld_acquire(counter) < target:
                pass
        else:
            lane = tl.arange(0, THREADS)
            ptrs = counter + lane * 0
            others = tl.full((THREADS,), 2**30, tl.int32)
            while tl.min(_ld_acquire_lane0(ptrs, lane, others), axis=0) < target:
                pass


@triton.jit
def _tile(w_ptr, block, N, KA: tl.constexpr, KB: tl.constexpr, BLOCK_N: tl.constexpr):
    """Row block `block` of a (N, KA + KB) weight as its two K pieces, (BLOCK_N, KA) and (BLOCK_N, KB)."""
    rows = block * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = rows[:, None] < N
    base = w_ptr + rows[:, None].to(tl.int64) * (KA + KB)
    wa = tl.load(base + tl.arange(0, KA)[None, :], mask=mask, other=0.0)
    wb = tl.load(base + KA + tl.arange(0, KB)[None, :], mask=mask, other=0.0)
    return wa, wb


@triton.jit
def _block_out(wa, wb, xa, xb, y_ptr, block, N, BLOCK_N: tl.constexpr):
    """The two pieces' sums are stored apart (y[0] and y[1], summed by the reader): adding them here made
    Triton move one piece's tile into the other's layout through shared memory."""
    rows = block * BLOCK_N + tl.arange(0, BLOCK_N)
    tl.store(y_ptr + rows, tl.sum(wa.to(tl.float32) * xa[None, :], axis=1), mask=rows < N)
    tl.store(y_ptr + N + rows, tl.sum(wb.to(tl.float32) * xb[None, :], axis=1), mask=rows < N)


@triton.jit
def _input(x_ptr, M, ks):
    """The reader's sum of a vector stored as two partials, rows 0 and M apart (.cg: from L2, not a stale L1)."""
    return tl.load(x_ptr + ks, cache_modifier=".cg") + tl.load(x_ptr + M + ks, cache_modifier=".cg")


@triton.jit
def _gemv(w_ptr, x_ptr, M, y_ptr, N, pid, nprog, wa, wb, KA: tl.constexpr, KB: tl.constexpr,
          BLOCK_N: tl.constexpr):
    """y[rows] = W[rows] @ x for row blocks pid, pid + nprog, ...; (wa, wb): the first block, loaded already;
    x in two partials M apart. No tile is carried from one iteration to the next (a loop-carried tile was
    converted between layouts through shared memory every iteration)."""
    xa = _input(x_ptr, M, tl.arange(0, KA))
    xb = _input(x_ptr, M, KA + tl.arange(0, KB))
    _block_out(wa, wb, xa, xb, y_ptr, pid, N, BLOCK_N)
    for block in range(pid + nprog, tl.cdiv(N, BLOCK_N), nprog):
        ta, tb = _tile(w_ptr, block, N, KA, KB, BLOCK_N)
        _block_out(ta, tb, xa, xb, y_ptr, block, N, BLOCK_N)


@triton.jit
def _gemv_kernel(w_ptr, x_ptr, M, y_ptr, N, KA: tl.constexpr, KB: tl.constexpr, BLOCK_N: tl.constexpr,
                 PDL: tl.constexpr):
    """One GEMV of the chain of kernels: the first tile is loaded before the wait for the kernel before."""
    pid = tl.program_id(0)
    pdl.allow_next(PDL)
    wa, wb = _tile(w_ptr, pid, N, KA, KB, BLOCK_N)
    pdl.wait_previous(PDL)
    _gemv(w_ptr, x_ptr, M, y_ptr, N, pid, tl.num_programs(0), wa, wb, KA, KB, BLOCK_N)


@triton.jit
def _persistent_kernel(in_w, out_w, head_w, h_ptr, xz_ptr, logits_ptr, counter, n_layers, N_IN, V,
                       HA: tl.constexpr, HB: tl.constexpr, DA: tl.constexpr, DB: tl.constexpr,
                       BN_IN: tl.constexpr, BN_OUT: tl.constexpr, BARRIER: tl.constexpr, THREADS: tl.constexpr):
    """The whole chain in one launch: every program takes part in every GEMV, and the counter (zero at the
    start) counts the programs past each barrier."""
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    H: tl.constexpr = HA + HB
    D: tl.constexpr = DA + DB
    wa, wb = _tile(in_w, pid, N_IN, HA, HB, BN_IN)
    target = 0
    for layer in range(n_layers):
        w_in = in_w + layer.to(tl.int64) * N_IN * H
        w_out = out_w + layer.to(tl.int64) * H * D
        _gemv(w_in, h_ptr, H, xz_ptr, N_IN, pid, nprog, wa, wb, HA, HB, BN_IN)
        oa, ob = _tile(w_out, pid, H, DA, DB, BN_OUT)
        target += nprog
        _arrive_and_wait(counter, target, BARRIER, THREADS)
        _gemv(w_out, xz_ptr, N_IN, h_ptr, H, pid, nprog, oa, ob, DA, DB, BN_OUT)
        n_next = tl.where(layer + 1 < n_layers, N_IN, 0)  # none after the last layer
        wa, wb = _tile(w_in + N_IN * H, pid, n_next, HA, HB, BN_IN)
        target += nprog
        _arrive_and_wait(counter, target, BARRIER, THREADS)
    ha, hb = _tile(head_w, pid, V, HA, HB, BN_IN)
    _gemv(head_w, h_ptr, H, logits_ptr, V, pid, nprog, ha, hb, HA, HB, BN_IN)


@triton.jit
def _arrive_kernel(counter):
    """Each program arrives once (the check that Triton issues a scalar atomic once a program)."""
    _arrive_and_wait(counter, 0)


class Chain:
    """The weights and vectors of one model's chain; each vector is kept as two partial sums (`_block_out`)."""

    def __init__(self, spec, device):
        H, Di, rows, L = spec.hidden_size, spec.intermediate_size, spec.in_proj_rows, spec.num_layers
        self.H, self.D, self.N_IN, self.L, self.V = H, Di, rows, L, spec.vocab_size
        gen = torch.Generator(device).manual_seed(0)

        def rand(*shape, scale):  # scaled so that the vectors keep their size through 128 products
            return (torch.randn(*shape, device=device, generator=gen) * scale).to(torch.float16)
        self.in_w = torch.stack([rand(rows, H, scale=H ** -0.5) for _ in range(L)])  # (L, N_IN, H)
        self.out_w = torch.stack([rand(H, Di, scale=Di ** -0.5) for _ in range(L)])  # (L, H, Di)
        self.head_w = rand(self.V, H, scale=H ** -0.5)  # (V, H)
        self.h0 = torch.randn(H, device=device, generator=gen)
        self.h = torch.zeros(2, H, device=device)
        self.xz = torch.zeros(2, rows, device=device)
        self.logits = torch.zeros(2, self.V, device=device)
        self.counter = torch.zeros(1, device=device, dtype=torch.int32)

    def reference(self) -> torch.Tensor:
        x = self.h0.clone()
        for layer in range(self.L):
            xz = self.in_w[layer].float() @ x
            x = self.out_w[layer].float() @ xz[:self.D]
        return self.head_w.float() @ x

    def kernels(self, bn_in: int, bn_out: int, warps: int, grid: int | None, pdl_on: bool) -> None:
        """One GEMV kernel a weight; grid: that many programs looping over row blocks, or None (one a block)."""
        opts = pdl.launch_options(self.h) if pdl_on else {}

        def launch(w, x, y, N, K, bn):
            _gemv_kernel[(grid or triton.cdiv(N, bn),)](w, x, x.shape[1], y, N, *pieces(K), BLOCK_N=bn,
                                                        PDL=bool(opts), num_warps=warps, **opts)
        for layer in range(self.L):
            launch(self.in_w[layer], self.h, self.xz, self.N_IN, self.H, bn_in)
            launch(self.out_w[layer], self.xz, self.h, self.H, self.D, bn_out)
        launch(self.head_w, self.h, self.logits, self.V, self.H, bn_in)

    def _persistent_args(self, bn_in: int, bn_out: int, warps: int, barrier: int) -> tuple[list, dict]:
        (HA, HB), (DA, DB) = pieces(self.H), pieces(self.D)
        return ([self.in_w, self.out_w, self.head_w, self.h, self.xz, self.logits, self.counter, self.L, self.N_IN,
                 self.V], dict(HA=HA, HB=HB, DA=DA, DB=DB, BN_IN=bn_in, BN_OUT=bn_out, BARRIER=barrier,
                               THREADS=32 * warps, num_warps=warps))

    def resident_programs(self, bn_in: int, bn_out: int, warps: int, per_sm: int, barrier: int) -> tuple[int, int]:
        """Programs of this persistent variant that fit on the GPU at once, up to per_sm an SM (all must be
        resident, or its barrier never opens), and its registers a thread."""
        args, options = self._persistent_args(bn_in, bn_out, warps, barrier)
        compiled = _persistent_kernel.warmup(*args, **options, grid=(1,))
        compiled._init_handles()
        regs_a_warp = triton.cdiv(compiled.n_regs * 32, 256) * 256  # allocated in units of 256
        props = torch.cuda.get_device_properties(self.h.device)
        fit = min(getattr(props, "regs_per_multiprocessor", 65536) // (regs_a_warp * warps), 2048 // (32 * warps),
                  props.shared_memory_per_multiprocessor // (compiled.metadata.shared + 1024))
        return props.multi_processor_count * min(per_sm, fit), compiled.n_regs

    def persistent(self, bn_in: int, bn_out: int, warps: int, programs: int, barrier: int) -> None:
        args, options = self._persistent_args(bn_in, bn_out, warps, barrier)
        self.counter.zero_()
        _persistent_kernel[(programs,)](*args, **options)

    def error(self, fn, want: torch.Tensor) -> float:
        """Relative error of fn's logits against `want`, from the chain's first input."""
        self.h.zero_()
        self.h[0].copy_(self.h0)
        self.logits.zero_()
        fn()
        torch.cuda.synchronize()
        err = float((self.logits.sum(0) - want).norm() / want.norm())
        if not err < 1e-3:
            raise AssertionError(f"rel. error {err:.2e} against torch")
        return err


# (rows a block: in_proj and lm_head, out_proj; warps) and, persistent, the programs an SM asked for
KERNEL_SHAPES = [(8, 4, 8), (4, 2, 8), (8, 4, 4), (4, 2, 4), (16, 8, 8)]
PERSISTENT_SHAPES = [(8, 4, 8, 1), (4, 2, 8, 2), (8, 4, 4, 2), (4, 2, 4, 4), (16, 8, 8, 1), (2, 1, 4, 4)]
BARRIERS = {1: "every thread polls", 2: "one thread polls", 0: "no barrier (wrong results)"}


def time_model(name: str, arch: dict, with_kernels: bool) -> dict:
    spec = dataclasses.replace(model_spec(name), **arch)
    chain = Chain(spec, "cuda")
    want = chain.reference()
    step_bytes = 2 * (chain.in_w.numel() + chain.out_w.numel() + chain.head_w.numel())
    rows = {}

    def record(label, fn, checked=True):
        err = chain.error(fn, want) if checked else float("nan")
        rows[label] = graph_replay_ms(fn)
        print(f"{name} {label}: {rows[label]:.4f} ms ({step_bytes / rows[label] / 1e9:.2f} TB/s), rel. err {err:.1e}",
              flush=True)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    if with_kernels:
        for bn_in, bn_out, warps in KERNEL_SHAPES:
            for grid_label, grid in (("a program a block", None), (f"{2 * sms} programs", 2 * sms)):
                for pdl_on in (True, False):
                    record(f"kernels {bn_in},{bn_out},{warps}, {grid_label}, PDL {pdl_on}",
                           lambda: chain.kernels(bn_in, bn_out, warps, grid, pdl_on))
    for bn_in, bn_out, warps, per_sm in PERSISTENT_SHAPES:
        for barrier, label in BARRIERS.items():
            programs, regs = chain.resident_programs(bn_in, bn_out, warps, per_sm, barrier)
            record(f"persistent {bn_in},{bn_out},{warps} x{programs} ({regs} registers), {label}",
                   lambda: chain.persistent(bn_in, bn_out, warps, programs, barrier), checked=barrier > 0)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=model_names, default="mamba2_2p7b,codestral_7b")
    parser.add_argument("--arch", default="", type=parse_arch, help="FIELD=INT,...: ModelSpec fields replaced")
    parser.add_argument("--no-kernels", action="store_true", help="time the persistent kernel only")
    parser.add_argument("--out", type=Path, default=Path("gpu_out"))
    args = parser.parse_args()
    require_cuda()
    counter = torch.zeros(1, device="cuda", dtype=torch.int32)
    _arrive_kernel[(264,)](counter, num_warps=8)  # the barrier counts one arrival a program, not a thread
    torch.cuda.synchronize()
    assert int(counter) == 264, f"264 programs arrived {int(counter)} times"
    results = {}
    for name in args.models.split(","):
        results[name] = time_model(name, args.arch, not args.no_kernels)
        torch.cuda.empty_cache()  # the model's weights, freed with time_model's frame
    for name, rows in results.items():
        best = sorted(rows.items(), key=lambda kv: kv[1])[:4]
        print(f"{name} fastest: " + "; ".join(f"{label} {ms:.4f}" for label, ms in best))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "persistent_chain.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
