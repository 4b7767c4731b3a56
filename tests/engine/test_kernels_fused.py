"""Every Triton kernel of mambapipe/engine/kernels against its torch twin on fresh random inputs.

On a machine without CUDA the kernels run under Triton's interpreter (TRITON_INTERPRET=1, set here before
the kernels are imported), at small sizes; on a GPU the same tests run compiled.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton", reason="the fused kernels need Triton (a test dependency)")

from mambapipe.engine import ops  # noqa: E402
from mambapipe.engine.kernels import conv, gemv, gemv_slice, norms, scan, ssd, ssm  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
HALF = torch.float16  # on the CPU the interpreter (numpy) has fp16 but no bf16
# compiled, the projections also run bf16, whose weights widen by their own conversion (fastmath.widen)
HALVES = [(HALF, 1e-2)] + ([(torch.bfloat16, 3e-2)] if DEVICE == "cuda" else [])


def _rand(*shape, dtype=torch.float32, scale=1.0):
    return (torch.randn(*shape, device=DEVICE) * scale).to(dtype)


def _close(actual, expected, tol):
    err = (actual.float() - expected.float()).norm() / expected.float().norm()
    assert torch.isfinite(actual).all() and err < tol, f"relative error {err:.2e} >= {tol}"


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (HALF, 1e-2)])
@pytest.mark.parametrize("with_delta", [True, False])
def test_add_rms_norm(dtype, tol, with_delta):
    res, delta, w = _rand(3, 80), _rand(3, 80, dtype=dtype), _rand(80, dtype=dtype)
    res_ref = res.clone()
    out = norms.add_rms_norm(res, delta if with_delta else None, w, 1e-5)
    ref = norms.add_rms_norm_ref(res_ref, delta if with_delta else None, w, 1e-5)
    _close(out, ref, tol)
    torch.testing.assert_close(res, res_ref)  # the residual stream is updated in place, in fp32


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (HALF, 1e-2)])
@pytest.mark.parametrize("batch", [1, 2])  # batch 1 reads the weight before the PDL wait: another variant
def test_gated_rms_norm_on_a_column_slice(dtype, tol, batch):
    packed = _rand(batch, 160, dtype=dtype)  # z is a slice of a wider in_proj output, as in the model
    y, z, w = _rand(batch, 96), packed[:, 32:128], _rand(96, dtype=dtype)
    out = norms.gated_rms_norm(y, z, w, 48, 1e-5)
    _close(out, ops.gated_rms_norm(y, z, w, 48, 1e-5).to(dtype), tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (HALF, 1e-2)])
def test_conv_update_shifts_state_like_torch(dtype, tol):
    packed = _rand(3, 300, dtype=dtype)
    x, w, b = packed[:, 20:290], _rand(270, 4, dtype=dtype), _rand(270, dtype=dtype)
    state = _rand(3, 270, 3, dtype=dtype)
    state_ref = state.clone()
    for _ in range(3):  # several steps: the shifted state must feed the next one
        out = conv.causal_conv1d_update(x, state, w, b)
        ref = ops.causal_conv1d_update(x, state_ref, w, b)
        _close(out, ref, tol)
        torch.testing.assert_close(state, state_ref)
        x = _rand(3, 270, dtype=dtype)


@pytest.mark.parametrize("state_dtype,tol", [(torch.float32, 1e-5), (HALF, 2e-2)])
@pytest.mark.parametrize("wide_rows", [32, 16])  # 32: two programs a 64-row head, 16: four
def test_mamba2_state_update(state_dtype, tol, wide_rows, monkeypatch):
    monkeypatch.setattr(ssm, "WIDE_BLOCK_P", wide_rows)
    batch, heads, P, N, G = 2, 4, 64, 16, 2
    packed = _rand(batch, heads * P + 2 * G * N + heads + 8)  # x | B | C | dt, read in place
    x = packed[:, : heads * P]
    Bm, Cm = packed[:, heads * P: heads * P + G * N], packed[:, heads * P + G * N: heads * P + 2 * G * N]
    dt = packed[:, heads * P + 2 * G * N: heads * P + 2 * G * N + heads]
    dt_bias, A, D = _rand(heads), -torch.rand(heads, device=DEVICE) * 4 - 0.5, _rand(heads)
    state = _rand(batch, heads, P, N).to(state_dtype)
    state_ref = state.clone()
    for _ in range(2):
        y = ssm.mamba2_state_update(state, x, dt, dt_bias, A, Bm, Cm, D)
        y_ref = ssm.mamba2_state_update_ref(state_ref, x, dt, dt_bias, A, Bm, Cm, D)
        _close(y, y_ref, tol)
        _close(state, state_ref, tol)


def test_mamba2_update_takes_wide_programs_while_every_sm_has_one(monkeypatch):
    """32 head-dim rows a program (ssm.WIDE_BLOCK_P) where the grid still covers the 132 SMs of an H200,
    else 16 (ssm.BLOCK_P); never more rows than the head has."""
    monkeypatch.setattr(ssm, "multiprocessors", lambda device: 132)
    cuda = torch.device("cuda")
    assert ssm.rows_per_program(1, 80, 64, cuda) == 32  # mamba2-2.7b: 160 programs
    assert ssm.rows_per_program(1, 128, 64, cuda) == 32  # Codestral: 256
    assert ssm.rows_per_program(1, 24, 64, cuda) == 16  # mamba2-130m: 48 would leave SMs idle
    assert ssm.rows_per_program(8, 24, 64, cuda) == 32  # ... unless the batch fills them
    assert ssm.rows_per_program(64, 4, 8, cuda) == 8  # a head of 8 rows


@pytest.mark.parametrize("fuse_dt_proj,batch,shape", [(True, 2, None), (False, 2, ("BATCHED_SHAPE", (1, 32, 4))),
                                                      (False, 6, ("BATCHED_SHAPE", (4, 16, 4))),  # 6 rows: 4 + 2
                                                      (False, 5, None),  # the GEMM's default shape, ragged
                                                      (True, 6, ("DOT_SHAPE", (16, 16, 4))),  # the dot, 6 of 16 rows
                                                      (None, 20, None)])  # the default at 20 rows: 16 + 4
@pytest.mark.parametrize("state_dtype,tol", [(torch.float32, 1e-5), (HALF, 2e-2)])
def test_mamba1_state_update(state_dtype, tol, fuse_dt_proj, batch, shape, monkeypatch):
    """dt_proj in-kernel (one row a program, or a dot over several rows a program) or as a GEMM first
    (several rows a program); the last program's rows partly past the batch."""
    if shape is not None:
        monkeypatch.setattr(ssm, *shape)
    Di, N, R = 40, 8, 6  # Di not a multiple of the block, R not a power of two
    x_dbl = _rand(batch, R + 2 * N)
    dt_low, Bm, Cm = x_dbl[:, :R], x_dbl[:, R: R + N], x_dbl[:, R + N:]
    xz = _rand(batch, 2 * Di)
    x, z = xz[:, :Di].contiguous(), xz[:, Di:]
    dt_proj, dt_bias, D = _rand(Di, R, scale=0.5), _rand(Di), _rand(Di)
    A = -torch.rand(Di, N, device=DEVICE) * 4 - 0.5
    state = _rand(batch, Di, N).to(state_dtype)
    state_ref = state.clone()
    for _ in range(2):
        y = ssm.mamba1_state_update(state, x, dt_low, dt_proj, dt_bias, A, Bm, Cm, D, z, fuse_dt_proj)
        y_ref = ssm.mamba1_state_update_ref(state_ref, x, dt_low, dt_proj, dt_bias, A, Bm, Cm, D, z)
        _close(y, y_ref, tol)
        _close(state, state_ref, tol)


def test_selective_scan_matches_torch_scan():
    batch, L, Di, N = 2, 37, 40, 8  # several chunks of tokens, the last one partial
    x_dbl = _rand(batch, L, 2 * N)
    Bm, Cm = x_dbl[..., :N], x_dbl[..., N:]
    u, z = _rand(batch, L, Di), _rand(batch, L, Di)
    delta = torch.nn.functional.softplus(_rand(batch, L, Di))
    delta[1, 21:] = 0  # right padding: zero steps leave the state untouched
    A, D = -torch.rand(Di, N, device=DEVICE) * 4 - 0.5, _rand(Di)
    y, h = scan.selective_scan(u, delta, A, Bm, Cm, D, z)
    y_ref, h_ref = ops.selective_scan(u, delta, A, Bm, Cm, D, z)
    _close(y, y_ref, 1e-5)
    _close(h, h_ref, 1e-5)


@pytest.mark.parametrize("length", [5, 37])  # inside one chunk; several chunks with a partial last one
def test_ssd_chunk_scan_regrouped_matches_reference(length):
    batch, heads, P, G, N = 2, 6, 4, 3, 8
    x, D = _rand(batch, length, heads, P), _rand(heads)
    dt = torch.nn.functional.softplus(_rand(batch, length, heads))
    dt[1, length // 2:] = 0  # right padding
    A = -torch.rand(heads, device=DEVICE) * 4
    B, C = _rand(batch, length, G, N), _rand(batch, length, G, N)
    y, h = ssd.regrouped_ssd_chunk_scan(x, dt, A, B, C, D, 16)
    y_ref, h_ref = ops.ssd_chunk_scan(x, dt, A, B, C, D, 16)
    _close(y, y_ref, 1e-5)
    _close(h, h_ref, 1e-5)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), *HALVES])
@pytest.mark.parametrize("batch,with_bias", [(1, False), (3, True)])
@pytest.mark.parametrize("conv_early", [True, False])  # the conv inputs read before the weights or after them
def test_norm_gemv_with_conv_rows_matches_torch(dtype, tol, batch, with_bias, conv_early, monkeypatch):
    monkeypatch.setattr(gemv, "CONV_EARLY_MAX_BYTES", 2**30 if conv_early else 0)
    H, N, lo, C = 300, 100, 30, 50  # 300 columns: two K tiles, the second one ragged
    residual, norm_w = _rand(batch, H, scale=3.0), _rand(H, dtype=dtype)
    weight, bias = _rand(N, H, dtype=dtype, scale=H ** -0.5), _rand(N, dtype=dtype) if with_bias else None
    conv_w, conv_b = _rand(C, 4, dtype=dtype, scale=0.5), _rand(C, dtype=dtype)
    slots = _rand(batch + 2, C, 3, dtype=dtype)  # the decode works on a span of the slot pool
    state, state_ref = slots[1:batch + 1], slots[1:batch + 1].clone()
    for _ in range(2):  # the shifted conv state must feed the next step
        out = gemv.norm_gemv(residual, norm_w, weight, bias, 1e-5, conv=(state, conv_w, conv_b, lo))
        ref = gemv.norm_gemv_ref(residual, norm_w, weight, bias, 1e-5, conv=(state_ref, conv_w, conv_b, lo))
        _close(out, ref, tol)
        _close(state, state_ref, tol)  # the new input is F.linear's output, equal up to rounding
        residual = _rand(batch, H, scale=3.0)
    logits = gemv.norm_gemv(residual, norm_w, weight, None, 1e-5, out_dtype=torch.float32)  # the lm_head use
    assert logits.dtype == torch.float32
    _close(logits, gemv.norm_gemv_ref(residual, norm_w, weight, None, 1e-5, out_dtype=torch.float32), tol)


@pytest.mark.parametrize("batch", [1, 3])
def test_lm_head_on_tma_matches_torch(batch, monkeypatch):
    """The final norm + lm_head of a half-precision weight on the TMA kernel (here for any size), rows and
    columns both ragged against its tiles."""
    monkeypatch.setattr(gemv, "TMA_MIN_BYTES", 0)
    H, V = 296, 100  # 296 columns: the last 128-column tile ragged; 100 rows: the last 64-row tile ragged
    residual, norm_w = _rand(batch, H, scale=3.0), _rand(H, dtype=HALF)
    weight = _rand(V, H, dtype=HALF, scale=H ** -0.5)
    assert gemv._use_tma(weight, norm_w, batch)
    logits = gemv.norm_gemv(residual, norm_w, weight, None, 1e-5, out_dtype=torch.float32)
    assert logits.dtype == torch.float32
    _close(logits, gemv.norm_gemv_ref(residual, norm_w, weight, None, 1e-5, out_dtype=torch.float32), 1e-2)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), *HALVES])
@pytest.mark.parametrize("gated,batch,with_bias", [(True, 1, False), (True, 3, True), (False, 2, True)])
def test_gemv_residual_matches_torch(dtype, tol, gated, batch, with_bias):
    D, H, group = 96, 70, 48  # two norm groups, each ending inside a K tile
    packed = _rand(batch, 160, dtype=dtype)  # z is a column slice of the in_proj output
    y = _rand(batch, D) if gated else _rand(batch, D, dtype=dtype)
    gate = (packed[:, 32:128], _rand(D, dtype=dtype), group) if gated else None
    weight, bias = _rand(H, D, dtype=dtype, scale=D ** -0.5), _rand(H, dtype=dtype) if with_bias else None
    residual = _rand(batch, H)
    expected = residual.clone()
    rounded = torch.empty(batch, H, dtype=dtype, device=DEVICE)
    gemv.gemv_residual(residual, y, weight, bias, gate=gate, eps=1e-5, rounded=rounded)
    gemv.gemv_residual_ref(expected, y, weight, bias, gate=gate, eps=1e-5)
    _close(residual, expected, tol)
    assert torch.equal(rounded, residual.to(dtype))  # the stream's copy in the model dtype, as it now stands


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), *HALVES])
@pytest.mark.parametrize("batch", [1, 3])
def test_gemv_matches_linear(dtype, tol, batch):
    packed = _rand(batch, 400, dtype=dtype)  # x is a column slice of the in_proj output, as in the model
    x, weight = packed[:, :300], _rand(40, 300, dtype=dtype, scale=300 ** -0.5)  # a ragged last K tile
    out = gemv.gemv(x, weight)
    assert out.dtype == dtype
    _close(out, F.linear(x, weight), tol)


@pytest.mark.parametrize("shape", [(24, 2560), (600, 520)])
def test_batch1_default_tiles_of_large_weights(shape):
    """Shapes outside gemv.TILES (a tensor-parallel rank's) take the batch-1 default for their kind: a wide
    weight 4 x 2048 tiles (here the second partly past K), a tall one 16 x 512 (the last partly past K)."""
    N, K = shape
    x, weight = _rand(1, K, dtype=HALF), _rand(N, K, dtype=HALF, scale=K ** -0.5)
    assert gemv._launch_shape(weight, 1)[1][:2] == ((4, 2048) if K >= 2048 else (16, 512))
    _close(gemv.gemv(x, weight), F.linear(x, weight), 1e-2)


def test_gated_out_proj_has_its_own_tiles(monkeypatch):
    """The out_proj with the gated norm inside is another kernel body than the plain product, so a weight
    shape has a tile for each (mamba2-2.7b's gated out_proj and mamba-2.8b's plain one share theirs)."""
    w = torch.empty(2560, 5120, dtype=HALF)
    assert gemv.tiles_key(w, 1) == (2560, 5120, 1)
    assert gemv.tiles_key(w, 3, gated=True) == (2560, 5120, 4, "gated")
    monkeypatch.setitem(gemv.TILES, (2560, 5120, 1), (8, 512, 4, 1))
    monkeypatch.setitem(gemv.TILES, (2560, 5120, 1, "gated"), (4, 1024, 8, 1))
    assert gemv._launch_shape(w, 1)[1][:4] == (8, 512, 4, 1)
    assert gemv._launch_shape(w, 1, gated=True)[1][:4] == (4, 1024, 8, 1)


@pytest.mark.parametrize("load_ahead,first_early", [(True, False), (False, True), (False, False)])
def test_gemv_weight_tiles_loaded_ahead_or_in_place(load_ahead, first_early, monkeypatch):
    """Every weight-tile order of the decode GEMVs (read ahead: gemv.LOAD_AHEAD_MAX_BYTES; in place, with or
    without the first tile taken before the loop: gemv.FIRST_TILE_EARLY) gives the torch result, over several
    K tiles."""
    monkeypatch.setattr(gemv, "LOAD_AHEAD_MAX_BYTES", 2**30 if load_ahead else 0)
    monkeypatch.setattr(gemv, "FIRST_TILE_EARLY", frozenset({"norm_gemv", "gemv"} if first_early else ()))
    monkeypatch.setitem(gemv.TILES, (24, 200, 1), (8, 64, 4, 1))  # 4 K tiles, the last one partly past K
    monkeypatch.setitem(gemv.TILES, (24, 200, 1, "gated"), (8, 64, 4, 1))
    res, norm_w, w = _rand(1, 200), _rand(200), _rand(24, 200)
    _close(gemv.norm_gemv(res, norm_w, w, None, 1e-5), gemv.norm_gemv_ref(res, norm_w, w, None, 1e-5), 1e-5)
    y, z, gate_w, w_out = _rand(1, 200), _rand(1, 200), _rand(200), _rand(24, 200)
    for gate in (None, (z, gate_w, 40)):  # 40: groups of 5 tiles of 8 columns (BLOCK_K shrinks to 8)
        out, ref = torch.zeros(1, 24, device=DEVICE), torch.zeros(1, 24, device=DEVICE)
        gemv.gemv_residual(out, y, w_out, None, gate=gate, eps=1e-5)
        gemv.gemv_residual_ref(ref, y, w_out, None, gate=gate, eps=1e-5)
        _close(out, ref, 1e-5)


@pytest.mark.parametrize("block_k", [256, 64])  # the whole 200 columns in one tile; four tiles
def test_gemv_slices_of_one_tile_and_one_norm_group(block_k, monkeypatch):
    """A program slice of one K tile (BLOCK_K >= K: loaded whole before the wait, never read ahead, even for a
    weight under gemv.LOAD_AHEAD_MAX_BYTES) gives the torch result in every kernel, and so does the gated
    out_proj's one norm group, normed once its sums are complete, whether BLOCK_K spans it or not."""
    monkeypatch.setattr(gemv, "LOAD_AHEAD_MAX_BYTES", 2**30)
    for key in ((24, 200, 1), (24, 200, 1, "gated")):
        monkeypatch.setitem(gemv.TILES, key, (8, block_k, 4, 1))
    w = _rand(24, 200)
    assert gemv._load_ahead(w, block_k, 200) == (block_k < 200)
    res, norm_w = _rand(1, 200), _rand(200)
    conv_w, conv_b, state = _rand(10, 4), _rand(10), _rand(1, 10, 3)
    state_ref = state.clone()
    out = gemv.norm_gemv(res, norm_w, w, None, 1e-5, conv=(state, conv_w, conv_b, 5))
    _close(out, gemv.norm_gemv_ref(res, norm_w, w, None, 1e-5, conv=(state_ref, conv_w, conv_b, 5)), 1e-5)
    _close(state, state_ref, 1e-5)
    y, z, gate_w = _rand(1, 200), _rand(1, 200), _rand(200)
    _close(gemv.gemv(y, w), F.linear(y, w), 1e-5)
    for gate in (None, (z, gate_w, 200)):
        got = _rand(1, 24)
        expected = got.clone()
        gemv.gemv_residual(got, y, w, None, gate=gate, eps=1e-5)
        gemv.gemv_residual_ref(expected, y, w, None, gate=gate, eps=1e-5)
        _close(got, expected, 1e-5)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (HALF, 1e-2)])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("split", [2, 4])
@pytest.mark.parametrize("load_ahead", [True, False])  # in place: each program's first tile before its loop
def test_split_k_gemv_matches_torch_and_repeats_exactly(dtype, tol, batch, split, load_ahead, monkeypatch):
    """K split over several programs a row block (the fifth TILES entry), for the plain product (ragged last
    K tile), the gated out_proj with whole norm groups per program, and with its one group spread over the
    programs (1/rms at the reduce). The partial sums are added in split order, so a second launch repeats
    the first bit for bit, and every arrival counter is left at zero for the next launch."""
    monkeypatch.setattr(gemv, "LOAD_AHEAD_MAX_BYTES", 2**30 if load_ahead else 0)
    monkeypatch.setitem(gemv.TILES, (40, 300, triton.next_power_of_2(batch)), (8, 64, 4, 1, split))
    monkeypatch.setitem(gemv.TILES, (24, 192, triton.next_power_of_2(batch), "gated"), (8, 32, 4, 1, split))
    x, w = _rand(batch, 300, dtype=dtype), _rand(40, 300, dtype=dtype, scale=300 ** -0.5)
    first = gemv.gemv(x, w)
    _close(first, F.linear(x, w), tol)
    assert torch.equal(gemv.gemv(x, w), first)
    y, z, gate_w = _rand(batch, 192), _rand(batch, 192, dtype=dtype), _rand(192, dtype=dtype)
    w_out, bias, residual = _rand(24, 192, dtype=dtype, scale=192 ** -0.5), _rand(24, dtype=dtype), _rand(batch, 24)
    for group in (96, 192):  # two groups: a program holds whole ones; one group: the reduce norms it
        out, again, expected = residual.clone(), residual.clone(), residual.clone()
        rounded = torch.empty(batch, 24, dtype=dtype, device=DEVICE)
        gemv.gemv_residual(out, y, w_out, bias, gate=(z, gate_w, group), eps=1e-5, rounded=rounded)
        gemv.gemv_residual(again, y, w_out, bias, gate=(z, gate_w, group), eps=1e-5)
        gemv.gemv_residual_ref(expected, y, w_out, bias, gate=(z, gate_w, group), eps=1e-5)
        _close(out, expected, tol)
        assert torch.equal(out, again) and torch.equal(rounded, out.to(dtype))  # the reduce stores the copy
    assert all(int(c.abs().sum()) == 0 for c in gemv._COUNTERS.values())


def test_gated_out_proj_refuses_norm_groups_its_lane_sums_cannot_tile():
    """Tiles of a multi-group gated out_proj lie inside one norm group and hold whole runs of gemv.LANE_SUM
    columns, so a group of 12 columns gets a clear error naming the way around it."""
    y, z, gate_w, w = _rand(1, 24), _rand(1, 24), _rand(24), _rand(8, 24)
    with pytest.raises(ValueError, match="multiple of 8 columns, got 12.*FUSED_GATE_MAX_GROUPS"):
        gemv.gemv_residual(_rand(1, 8), y, w, None, gate=(z, gate_w, 12), eps=1e-5)


def test_split_k_columns_hold_whole_norm_groups():
    assert gemv.k_split(8192, 1024, 4, None) == 2048
    assert gemv.k_split(300, 64, 2, None) == 192  # whole tiles: 192 + 108 columns
    assert gemv.k_split(8192, 1024, 3, 1024) == 3072  # 8 groups of 1024 over 3 programs: 3 + 3 + 2
    assert gemv.k_split(5120, 1024, 2, 5120) == 3072  # one group: tiles, normed at the reduce


def test_a_set_tile_narrower_than_the_lane_sums_is_refused(monkeypatch):
    """A tile set by hand (gpu_bench --gemv-tiles, a sweep) under gemv.LANE_SUM columns gets our error, not
    Triton's reshape failure."""
    monkeypatch.setitem(gemv.TILES, (24, 200, 1), (8, 4, 4, 1))
    with pytest.raises(ValueError, match=r"gemv.TILES\(24, 200, 1\) has BLOCK_K 4: .* at least 8 columns"):
        gemv.gemv(_rand(1, 200), _rand(24, 200))


def test_norm_gemv_refuses_a_split_tile(monkeypatch):
    monkeypatch.setitem(gemv.TILES, (24, 200, 1), (8, 64, 4, 1, 2))
    with pytest.raises(ValueError, match="does not split K"):
        gemv.norm_gemv(_rand(1, 200), _rand(200), _rand(24, 200), None, 1e-5)


@pytest.mark.parametrize("dtype", [dtype for dtype, _ in HALVES])
@pytest.mark.parametrize("kernel", ["tiled", "slice", "tma"])
def test_norm_gemv_reads_the_rounded_stream_as_the_fp32_one(kernel, dtype, monkeypatch):
    """Given the residual already rounded to the model dtype (decode.ROUNDED_INPUT), each norm + product kernel
    gives what it gives for the fp32 residual, which it rounds as it reads it: bit for bit."""
    monkeypatch.setattr(gemv, "TMA_MIN_BYTES", 0 if kernel == "tma" else 2**40)
    if kernel == "slice":
        monkeypatch.setitem(gemv_slice.TILES, (30, 296), (4, 2))
    residual, norm_w, weight = _rand(1, 296, scale=3.0), _rand(296, dtype=dtype), _rand(30, 296, dtype=dtype)
    assert gemv_slice.applies(weight, 1) == (kernel == "slice")
    assert gemv._use_tma(weight, norm_w, 1) == (kernel == "tma")
    from_fp32 = gemv.norm_gemv(residual, norm_w, weight, None, 1e-5, out_dtype=torch.float32)
    assert torch.equal(gemv.norm_gemv(residual.to(dtype), norm_w, weight, None, 1e-5, out_dtype=torch.float32),
                       from_fp32)


@pytest.mark.parametrize("dtype,tol", HALVES)
@pytest.mark.parametrize("K", [320, 300, 256])  # two pieces (256 + 64, the second ragged at 300); one
@pytest.mark.parametrize("block_n,with_bias", [(4, False), (8, True)])  # 30 rows: the last program ragged
def test_slice_in_proj_matches_torch(K, block_n, with_bias, dtype, tol, monkeypatch):
    """A batch-1 in_proj listed in gemv_slice.TILES (each program's whole rows loaded before the wait) against
    the torch twin, with conv rows whose shifted state feeds the next step; batch 2 and fp32 weights keep
    the tiled kernel."""
    monkeypatch.setitem(gemv_slice.TILES, (30, K), (block_n, 2))
    launches = []
    monkeypatch.setattr(gemv_slice, "_slice_kernel", _Launches(gemv_slice._slice_kernel, launches))
    w, bias = _rand(30, K, dtype=dtype, scale=K ** -0.5), _rand(30, dtype=dtype) if with_bias else None
    norm_w = _rand(K, dtype=dtype)
    conv_w, conv_b = _rand(12, 4, dtype=dtype, scale=0.5), _rand(12, dtype=dtype)
    state = _rand(1, 12, 3, dtype=dtype)
    state_ref = state.clone()
    for _ in range(2):  # the shifted conv state feeds the next step
        residual = _rand(1, K, scale=3.0)
        out = gemv.norm_gemv(residual, norm_w, w, bias, 1e-5, conv=(state, conv_w, conv_b, 10))
        _close(out, gemv.norm_gemv_ref(residual, norm_w, w, bias, 1e-5, conv=(state_ref, conv_w, conv_b, 10)), tol)
        _close(state, state_ref, tol)
    assert len(launches) == 2
    assert not gemv_slice.applies(w, 2) and not gemv_slice.applies(w.float(), 1)


class _Launches:
    """A Triton kernel whose launches are appended to `launches`."""

    def __init__(self, kernel, launches):
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches.append(grid)
            return self.kernel[grid](*args, **kwargs)
        return launch


def test_slice_pieces_are_powers_of_two():
    assert gemv_slice.pieces(2560) == (2048, 512)
    assert gemv_slice.pieces(5120) == (4096, 1024)
    assert gemv_slice.pieces(4096) == (4096, 0)
    assert gemv_slice.pieces(320) == (256, 64)
    assert gemv_slice.pieces(300) == (256, 64)  # 44 columns, padded and masked
