"""Every Triton kernel of mambapipe/engine/kernels against its torch twin on fresh random inputs.

On a machine without CUDA the kernels run under Triton's interpreter (TRITON_INTERPRET=1, set here before
the kernels are imported), at small sizes; on a GPU the same tests run compiled.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton", reason="the fused kernels need Triton (a test dependency)")

from mambapipe.engine import ops  # noqa: E402
from mambapipe.engine.kernels import conv, mamba2_step, norms, scan, ssd, ssm  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
HALF = torch.float16  # on the CPU the interpreter (numpy) has fp16 but no bf16


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
def test_gated_rms_norm_on_a_column_slice(dtype, tol):
    packed = _rand(2, 160, dtype=dtype)  # z is a slice of a wider in_proj output, as in the model
    y, z, w = _rand(2, 96), packed[:, 32:128], _rand(96, dtype=dtype)
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
def test_mamba2_state_update(state_dtype, tol):
    batch, heads, P, N, G = 2, 4, 16, 16, 2
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


@pytest.mark.parametrize("fuse_dt_proj", [True, False])
@pytest.mark.parametrize("state_dtype,tol", [(torch.float32, 1e-5), (HALF, 2e-2)])
def test_mamba1_state_update(state_dtype, tol, fuse_dt_proj):
    batch, Di, N, R = 2, 40, 8, 6  # Di not a multiple of the block, R not a power of two
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


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (HALF, 2e-2)])
def test_mamba2_fused_step_matches_conv_ssm_gated_norm(dtype, tol):
    batch, heads, P, N, G = 2, 4, 16, 16, 2
    Di, C = heads * P, heads * P + 2 * G * N
    zxbcdt = _rand(batch, Di + C + heads, dtype=dtype)
    conv_w, conv_b, gate_w = _rand(C, 4, dtype=dtype, scale=0.5), _rand(C, dtype=dtype), _rand(Di, dtype=dtype)
    dt_bias, A, D = _rand(heads), -torch.rand(heads, device=DEVICE) * 4 - 0.5, _rand(heads)
    conv_state, ssm_state = _rand(batch, C, 3, dtype=dtype), _rand(batch, heads, P, N, dtype=dtype)
    conv_ref, ssm_ref = conv_state.clone(), ssm_state.clone()
    for _ in range(2):  # the shifted conv state (x, B and C channels) must feed the next step
        out = mamba2_step.mamba2_step(zxbcdt, conv_state, conv_w, conv_b, ssm_state, dt_bias, A, D, gate_w,
                                      Di // G, 1e-5)
        ref = mamba2_step.mamba2_step_ref(zxbcdt, conv_ref, conv_w, conv_b, ssm_ref, dt_bias, A, D, gate_w,
                                          Di // G, 1e-5)
        _close(out, ref, tol)
        torch.testing.assert_close(conv_state, conv_ref)
        _close(ssm_state, ssm_ref, tol)
        zxbcdt = _rand(batch, Di + C + heads, dtype=dtype)
