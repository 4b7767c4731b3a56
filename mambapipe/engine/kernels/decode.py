"""The whole-model decode step on the fused kernels, per layer: one add+RMSNorm, the in_proj GEMM, then
Mamba1: conv update, x_proj GEMM, SSM update (dt_proj, D skip and z gate inside); Mamba2: conv update,
SSM update and gated norm (or, with build.fused_conv_ssm, conv + SSM in one kernel: kernels/mamba2_step.py);
then out_proj.
No splits or copies of the projection outputs. Same contract and weights as `MambaModel.decode`, which
dispatches here on CUDA.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from mambapipe.engine.kernels import fuses_conv_ssm
from mambapipe.engine.kernels.conv import causal_conv1d_update
from mambapipe.engine.kernels.mamba2_step import mamba2_step
from mambapipe.engine.kernels.norms import add_rms_norm, gated_rms_norm
from mambapipe.engine.kernels.ssm import mamba1_state_update, mamba2_state_update
from mambapipe.engine.state import InferenceState
from mambapipe.engine.weights import LayerWeights
from mambapipe.models import TRTLLM_NORM_EPSILON as EPS


def fused_decode(model, tokens: Tensor, state: InferenceState, lo: int) -> Tensor:
    """One token (B,) for slots [lo, lo+B) of `model` (a MambaModel); returns (B, V) fp32 logits."""
    residual = F.embedding(tokens, model.glob["embedding"]).float()  # (B, H)
    step = _mamba2_step if model.spec.is_mamba2 else _mamba1_step
    delta = None  # the previous layer's output, added to the residual inside the next norm
    for i, w in enumerate(model.layers):
        h = add_rms_norm(residual, delta, w.norm, EPS)  # (B, H)
        conv, ssm = state.span(i, lo, lo + len(tokens))
        delta = step(model, w, h, conv, ssm)  # (B, H)
    h = add_rms_norm(residual, delta, model.glob["norm_f"], EPS)
    logits = F.linear(h, model.glob["lm_head"]).float()  # (B, V/tp)
    return model.comm.gather_last_dim(logits) if model.lm_head_split else logits


def _mamba1_step(model, w: LayerWeights, h: Tensor, conv: Tensor, ssm: Tensor) -> Tensor:
    N = model.spec.state_size
    xz = F.linear(h, w.in_proj, w.in_proj_bias)  # (B, 2Di/tp)
    x, z = xz.split(model.d_inner, dim=-1)
    x = causal_conv1d_update(x, conv, w.conv_weight, w.conv_bias)  # (B, Di/tp)
    x_dbl = model.comm.all_reduce(F.linear(x, w.x_proj))  # (B, R+2N)
    dt_low, B, C = x_dbl.split([x_dbl.shape[-1] - 2 * N, N, N], dim=-1)
    y = mamba1_state_update(ssm, x, dt_low, w.dt_proj, w.dt_bias, w.A, B, C, w.D, z)  # (B, Di/tp)
    return model._out_proj(w, y)


def _mamba2_step(model, w: LayerWeights, h: Tensor, conv: Tensor, ssm: Tensor) -> Tensor:
    zxbcdt = F.linear(h, w.in_proj, w.in_proj_bias)  # (B, rows/tp)
    group = model.spec.intermediate_size // model.spec.n_groups
    if fuses_conv_ssm(model):
        gated = mamba2_step(zxbcdt, conv, w.conv_weight, w.conv_bias, ssm, w.dt_bias, w.A, w.D, w.gate_norm,
                            group, EPS)  # (B, Di/tp)
        return model._out_proj(w, gated)
    z, xBC, dt = zxbcdt.split([model.d_inner, model.d_inner + 2 * model.bc_size, model.heads], dim=-1)
    xBC = causal_conv1d_update(xBC, conv, w.conv_weight, w.conv_bias)  # (B, C/tp)
    x, B, C = xBC.split([model.d_inner, model.bc_size, model.bc_size], dim=-1)
    y = mamba2_state_update(ssm, x, dt, w.dt_bias, w.A, B, C, w.D)  # (B, Di/tp) fp32
    return model._out_proj(w, gated_rms_norm(y, z, w.gate_norm, group, EPS))
