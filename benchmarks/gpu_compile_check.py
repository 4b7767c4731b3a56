"""Compile the fused decode and prefill kernels for sm_90 (H100/H200) on a machine without a GPU: Triton's
bundled ptxas catches type and lowering errors before a device call spends minutes on them.

    python benchmarks/gpu_compile_check.py            # prints one line per kernel, exits 1 on a failure
    python benchmarks/gpu_compile_check.py --report   # and each kernel's registers, stack and in-loop
                                                      # layout conversions, as a big model launches it

`--report` compiles as a launch at real shapes is specialised: every pointer 16-byte aligned, every integer
but the batch rows (M, Bt) a multiple of 16, except those the kernel keeps off alignment specialisation.
Registers decide how many programs share an SM; a `convert_layout` inside a loop moves a tile through shared
memory every iteration (GPU_NOTES.md twelfth session: the in_proj's weight tile in 16-byte loads does so).
Both are the installed Triton's: the H200 machine's Triton 3.6 compiles some kernels otherwise than 3.9 does
here (GPU_NOTES.md v18: the narrow Mamba1 scan 121 registers there against 144 here; an in_proj variant
without in-loop conversions here ran 25 % slower there), so run `--report` on the machine too before a count
decides a change.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from mambapipe.engine.kernels import conv, gemv, gemv_slice, norms, prefill, scan, ssd_triton, ssm

H, F, I, C, L64 = "*fp16", "*fp32", "i32", "constexpr", "*i64"
KERNELS = [
    (conv._conv_update_kernel,
     dict(x_ptr=H, state_ptr=H, w_ptr=H, b_ptr=H, out_ptr=H, C=I, stride_x=I, stride_sb=I, stride_sc=I,
          stride_out=I, HAS_BIAS=C, BLOCK_C=C, PDL=C), dict(HAS_BIAS=True, BLOCK_C=256, PDL=True)),
    *[(gemv._norm_gemv_kernel,
       dict(res_ptr=F, norm_w_ptr=H, w_ptr=H, bias_ptr=H, out_ptr=H, cs_ptr=H, cw_ptr=H, cb_ptr=H, M=I, N=I, K=I,
            conv_lo=I, conv_hi=I, stride_res=I, stride_out=I, stride_csb=I, stride_csc=I, eps="fp32",
            HAS_BIAS=C, CONV=C, CONV_BIAS=C, BLOCK_M=C, BLOCK_N=C, BLOCK_K=C, PDL=C, PREFETCH_LINES=C, LOAD_AHEAD=C,
            FIRST_EARLY=C, CONV_EARLY=C),
       dict(HAS_BIAS=False, CONV=True, CONV_BIAS=True, BLOCK_M=1, BLOCK_N=16, BLOCK_K=512, PDL=True,
            PREFETCH_LINES=4 if ahead else 0, LOAD_AHEAD=ahead, FIRST_EARLY=not ahead, CONV_EARLY=ahead))
      # the (16, 512) tile: a small weight (read ahead, conv inputs early); a large one
      for ahead in (True, False)],
    (gemv._lm_head_tma_kernel,
     dict(res_ptr=F, norm_w_ptr=H, w_desc="tensordesc<fp16[%d, %d]>" % gemv.TMA_DEFAULT_TILES[:2], out_ptr=F, M=I, N=I,
          K=I, stride_res=I, stride_out=I, eps="fp32", BLOCK_N=C, BLOCK_K=C, PDL=C),
     dict(BLOCK_N=gemv.TMA_DEFAULT_TILES[0], BLOCK_K=gemv.TMA_DEFAULT_TILES[1], PDL=True,
          num_warps=gemv.TMA_DEFAULT_TILES[3])),
    *[(gemv._gemv_kernel,
       dict(y_ptr=F, z_ptr=H, g_ptr=H, w_ptr=H, bias_ptr=H, out_ptr=F, rounded_ptr=H, part_ptr=F, sq_ptr=F,
            count_ptr="*i32", M=I, N=I, K=I, G=I, K_SPLIT=I, stride_y=I, stride_z=I, stride_out=I, stride_rounded=I,
            eps="fp32", GATED=C, NORM_AT_REDUCE=C, HAS_BIAS=C, ACCUMULATE=C, ROUNDED=C, SPLIT=C, BLOCK_M=C,
            BLOCK_N=C, BLOCK_K=C, PDL=C, PREFETCH_LINES=C, LOAD_AHEAD=C, FIRST_EARLY=C),
       dict(GATED=True, NORM_AT_REDUCE=norm_at_reduce, HAS_BIAS=True, ACCUMULATE=True, ROUNDED=True, SPLIT=split,
            BLOCK_M=1, BLOCK_N=8, BLOCK_K=1024, PDL=True, PREFETCH_LINES=4, LOAD_AHEAD=split == 1,
            FIRST_EARLY=split > 1))
      for split, norm_at_reduce in ((1, False), (4, False), (2, True))],  # unsplit; split K, and normed at the reduce
    *[(gemv_slice._slice_kernel,
       dict(res_ptr=F, norm_w_ptr=H, w_ptr=H, bias_ptr=H, out_ptr=H, cs_ptr=H, cw_ptr=H, cb_ptr=H, N=I, conv_lo=I,
            conv_hi=I, stride_csc=I, eps="fp32", K=C, K_MAIN=C, K_REST=C, HAS_BIAS=C, CONV=C, CONV_BIAS=C,
            BLOCK_N=C, PDL=C),
       dict(K=K, K_MAIN=gemv_slice.pieces(K)[0], K_REST=gemv_slice.pieces(K)[1], HAS_BIAS=False, CONV=True,
            CONV_BIAS=True, BLOCK_N=tiles[0], PDL=True, num_warps=tiles[1]))
      for (_, K), tiles in gemv_slice.TILES.items()],  # mamba2-2.7b's in_proj (K in two pieces), Codestral's
    *[(norms._gated_rms_norm_kernel,
       dict(y_ptr=F, z_ptr=H, w_ptr=H, out_ptr=H, D=I, G=I, stride_y=I, stride_z=I, stride_out=I, eps="fp32",
            BLOCK=C, WEIGHT_EARLY=C, PDL=C), dict(BLOCK=1024, WEIGHT_EARLY=early, PDL=True))
      for early in (True, False)],  # batch 1; batched
    (norms._add_rms_norm_kernel,
     dict(res_ptr=F, delta_ptr=H, w_ptr=H, out_ptr=H, H=I, stride_res=I, stride_delta=I, stride_out=I, eps="fp32",
          HAS_DELTA=C, BLOCK_H=C, PDL=C), dict(HAS_DELTA=True, BLOCK_H=4096, PDL=True)),
    (ssm._mamba2_update_kernel,
     dict(state_ptr=H, x_ptr=H, dt_ptr=H, dt_bias_ptr=F, A_ptr=F, B_ptr=H, C_ptr=H, D_ptr=F, y_ptr=F,
          **{n: I for n in "stride_sb stride_sh stride_sp stride_xb stride_dtb stride_bb stride_cb stride_yb".split()},
          P=I, heads_per_group=I, N=C, BLOCK_P=C, PDL=C), dict(N=128, BLOCK_P=ssm.BLOCK_P, PDL=True)),
    *[(ssm._mamba1_update_kernel,
       dict(state_ptr=H, x_ptr=H, dtr_ptr=H, dtw_ptr=H, dt_bias_ptr=F, A_ptr=F, B_ptr=H, C_ptr=H, D_ptr=F, z_ptr=H,
            y_ptr=H, Bt=I, Di=I, R=I, **{n: I for n in "stride_sb stride_sd stride_xb stride_dtb stride_bb stride_cb "
                                                     "stride_zb stride_yb".split()},
            N=C, BLOCK_D=C, BLOCK_R=C, ROWS=C, FUSED_DT=C, DOT_DT=C, PDL=C),
       dict(N=16, BLOCK_D=block_d, BLOCK_R=256 if rows == 1 else 64, ROWS=rows, FUSED_DT=fused, DOT_DT=dot, PDL=True,
            num_warps=warps))
      for fused, dot, (rows, block_d, warps) in ((True, False, ssm.FUSED_SHAPE), (False, False, ssm.BATCHED_SHAPE),
                                                 (True, True, ssm.DOT_SHAPE))],  # batch 1; batched; batched, R 64
    (prefill._conv_prefill_kernel,
     dict(x_ptr=H, w_ptr=H, b_ptr=H, len_ptr=L64, out_ptr=H, state_ptr=H, slot_ptr=L64, L=I, C=I, s_xb=I, s_xl=I,
          s_ob=I, s_ol=I, s_sb=I, s_sc=I, K=C, HAS_BIAS=C, BLOCK_L=C, BLOCK_C=C, STATE_COLS=C, SLOTS=C, PDL=C),
     dict(K=4, HAS_BIAS=True, BLOCK_L=prefill.CONV_BLOCK_L, BLOCK_C=prefill.CONV_BLOCK_C, STATE_COLS=4, SLOTS=True,
          PDL=True)),
    (prefill._dt_proj_softplus_kernel,
     dict(a_ptr=H, w_ptr=H, bias_ptr=F, len_ptr=L64, out_ptr=H, bc_ptr=H, bc_out_ptr=F, L=I, D=I, R=I, s_ab=I,
          s_al=I, s_bcb=I, s_bcl=I, BC=C, BLOCK_L=C, BLOCK_D=C, BLOCK_R=C, BLOCK_BC=C, PRECISION=C, PDL=C),
     dict(BC=32, BLOCK_L=prefill.DT_PROJ_TILE[0], BLOCK_D=prefill.DT_PROJ_TILE[1], BLOCK_R=prefill.DT_PROJ_TILE[2],
          BLOCK_BC=32, PRECISION="tf32", PDL=True, num_warps=prefill.DT_PROJ_TILE[3],
          num_stages=prefill.DT_PROJ_TILE[4])),
    *[(scan._scan_kernel,
       dict(u_ptr=H, delta_ptr=dt, A_ptr=F, B_ptr=bc, C_ptr=bc, D_ptr=F, z_ptr=H, y_ptr=H, state_ptr=H, slot_ptr=L64,
            end_ptr=F, dt_sum_ptr=F, L=I, Di=I, seg_len=I,
            **{n: I for n in ("stride_ub stride_ul stride_db stride_dl stride_bb stride_bl stride_cb stride_cl "
                              "stride_zb stride_zl stride_yb stride_yl stride_state").split()},
            N=C, T=C, BLOCK_D=C, SLOTS=C, PDL=C),
       dict(N=16, T=shape[0], BLOCK_D=shape[1], SLOTS=True, PDL=True, num_warps=shape[2]))
      # the narrow launch reads fp32 B and C (scan.wants_fp32_bc); the standard one fp32 or fp16 step sizes
      # (scan.wants_half_step_sizes)
      for shape, bc, dt in ((scan.SHAPES["narrow"], F, F), (scan.SHAPES["standard"], H, F),
                            (scan.SHAPES["standard"], H, H))],
    *[(scan._segment_end_kernel,  # only the standard launch cuts the prompt
       dict(u_ptr=H, delta_ptr=dt, A_ptr=F, B_ptr=H, end_ptr=F, dt_sum_ptr=F, L=I, Di=I, seg_len=I,
            **{n: I for n in "stride_ub stride_ul stride_db stride_dl stride_bb stride_bl".split()},
            N=C, T=C, BLOCK_D=C, PDL=C),
       dict(N=16, T=scan.SHAPES["segment_end"][0], BLOCK_D=scan.SHAPES["segment_end"][1], PDL=True,
            num_warps=scan.SHAPES["segment_end"][2]))
      for dt in (F, H)],
    # the Triton SSD at mamba2-2.7b / Codestral's head dim 64, d_state 128, chunk 256 (fp16 inputs)
    (ssd_triton._chunk_cumsum,
     dict(dt_ptr=H, A_ptr=F, cum_ptr=F, bias_ptr=F, len_ptr=L64, dt_out_ptr=F, L=I, H=I, T=I, s_dt_b=I, s_dt_l=I,
          s_dt_h=I, BLOCK_T=C, BLOCK_H=C, SOFTPLUS=C, PDL=C),
     dict(BLOCK_T=256, BLOCK_H=ssd_triton.BLOCK_HEADS, SOFTPLUS=True, PDL=True)),
    (ssd_triton._bmm_chunk,
     dict(C_ptr=H, B_ptr=H, cb_ptr=H, L=I, G=I, N=I, T=I,
          **{n: I for n in "s_cb s_cl s_cg s_cn s_bb s_bl s_bg s_bn".split()},
          BLOCK_L=C, BLOCK_N=C, PRECISION=C, PDL=C),
     dict(BLOCK_L=ssd_triton.BLOCK_L, BLOCK_N=ssd_triton.BLOCK_N, PRECISION="tf32", PDL=True)),
    (ssd_triton._chunk_state,
     dict(x_ptr=H, dt_ptr=F, B_ptr=H, cum_ptr=F, states_ptr=F, L=I, H=I, P=I, N=I, T=I, n_chunks=I,
          heads_per_group=I, **{n: I for n in "s_xb s_xl s_xh s_xp s_dt_b s_dt_l s_dt_h s_bb s_bl s_bg s_bn".split()},
          BLOCK_P=C, BLOCK_N=C, BLOCK_L=C, PRECISION=C, EVEN=C, PDL=C),
     dict(BLOCK_P=ssd_triton.BLOCK_P, BLOCK_N=ssd_triton.CHUNK_STATE_BLOCK_N, BLOCK_L=ssd_triton.CHUNK_STATE_BLOCK_L,
          PRECISION="tf32", EVEN=True, PDL=True, num_warps=ssd_triton.CHUNK_STATE_WARPS,
          num_stages=ssd_triton.CHUNK_STATE_STAGES)),
    (ssd_triton._state_passing,
     dict(states_ptr=F, carried_ptr=H, cum_ptr=F, final_ptr=H, slot_ptr=L64, H=I, T=I, n_chunks=I, PN=I, s_final=I,
          BLOCK=C, SLOTS=C, PDL=C), dict(BLOCK=ssd_triton.STATE_BLOCK, SLOTS=True, PDL=True)),
    (ssd_triton._chunk_scan,
     dict(x_ptr=H, dt_ptr=F, C_ptr=H, D_ptr=F, cum_ptr=F, cb_ptr=H, states_ptr=H, y_ptr=H, L=I, H=I, G=I, P=I, N=I,
          T=I, n_chunks=I, heads_per_group=I,
          **{n: I for n in "s_xb s_xl s_xh s_xp s_dt_b s_dt_l s_dt_h s_cb s_cl s_cg s_cn".split()},
          BLOCK_L=C, BLOCK_P=C, BLOCK_N=C, PRECISION=C, EVEN=C, PDL=C),
     dict(BLOCK_L=ssd_triton.BLOCK_L, BLOCK_P=ssd_triton.BLOCK_P, BLOCK_N=ssd_triton.CHUNK_SCAN_BLOCK_N,
          PRECISION="tf32", EVEN=True, PDL=True, num_warps=ssd_triton.CHUNK_SCAN_WARPS,
          num_stages=ssd_triton.CHUNK_SCAN_STAGES)),
]


BATCH_ROWS = {"M", "Bt"}  # 1 at batch-1 decode: never a multiple of 16
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def launch_alignment(kernel, signature: dict[str, str]) -> dict[tuple[int], list]:
    """Triton's divisibility attributes of a launch at real shapes (see the module docstring)."""
    unaligned = BATCH_ROWS | set(kernel.do_not_specialize_on_alignment or ())
    return {(index,): [["tt.divisibility", 16]] for index, (name, kind) in enumerate(signature.items())
            if kind.startswith("*") or (kind == "i32" and name not in unaligned)}


def report(compiled) -> str:
    """Registers and stack a thread (cuobjdump of the cubin) and the convert_layouts inside loops (TTGIR)."""
    usage = "registers n/a"
    if CUOBJDUMP.exists():
        with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
            cubin.write(compiled.asm["cubin"])
            cubin.flush()
            dump = subprocess.run([str(CUOBJDUMP), "--dump-resource-usage", cubin.name], capture_output=True,
                                  text=True).stdout
        found = re.search(r"REG:(\d+) STACK:(\d+)", dump)
        usage = f"{found[1]} registers, {found[2]} B stack" if found else usage
    converted, depth = [], 0
    for line in compiled.asm["ttgir"].splitlines():
        depth += "scf.for" in line
        depth -= depth > 0 and "scf.yield" in line
        if depth and "ttg.convert_layout" in line:
            converted.append(re.search(r"tensor<([^,>]+)", line)[1])
    return f"{usage}; in loops: " + (", ".join(f"convert_layout of {shape}" for shape in converted) or "no conversion")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", action="store_true", help="registers, stack and in-loop layout conversions")
    args = parser.parse_args()
    failed = 0
    for kernel, signature, constants in KERNELS:
        constants = dict(constants)
        # launch_pdl as the decode and prefill kernels are launched on an H200 (kernels/pdl.py); num_warps and
        # num_stages as launched (Triton's defaults where a launch does not set them)
        options = {"launch_pdl": constants.get("PDL", False), "num_warps": constants.pop("num_warps", 4),
                   "num_stages": constants.pop("num_stages", 3)}
        attrs = launch_alignment(kernel, signature) if args.report else None
        try:
            compiled = triton.compile(ASTSource(kernel, signature, constants, attrs), target=GPUTarget("cuda", 90, 32),
                                      options=options)
            print(f"{kernel.__name__}: compiled for sm_90" + (f"; {report(compiled)}" if args.report else ""))
        except Exception as err:  # noqa: BLE001 - report every kernel, then fail
            failed += 1
            print(f"{kernel.__name__}: FAILED {err}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
