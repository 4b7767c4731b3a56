"""The Mamba1/Mamba2 language model of the native engine, tensor-parallel aware.

Block semantics follow TensorRT-LLM (reference §5), which equal HF transformers': the residual stream is
fp32; each layer adds fp32(mixer(RMSNorm(cast(residual)))); ln_f, lm_head, fp32 logits. Each rank holds
its own split of d_inner (and of the vocabulary for lm_head); `Comm` adds the few collectives TP needs.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor

from mambapipe.engine import kernels, ops
from mambapipe.engine.state import InferenceState
from mambapipe.engine.weights import LayerWeights
from mambapipe.models import TRTLLM_NORM_EPSILON, ModelSpec

EPS = TRTLLM_NORM_EPSILON
log = logging.getLogger(__name__)


class Comm:
    """Collectives of a tensor-parallel group; identity on a single rank."""

    def __init__(self, world_size: int = 1):
        self.world_size = world_size

    def all_reduce(self, t: Tensor) -> Tensor:
        if self.world_size > 1:
            torch.distributed.all_reduce(t)
        return t

    def gather_last_dim(self, t: Tensor) -> Tensor:
        if self.world_size == 1:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, t.contiguous())
        return torch.cat(parts, dim=-1)


def _kernels_for(spec: ModelSpec, choice: str, on_cuda: bool) -> str:
    """The load option (engine/api.py: Triton or torch ops, kernels.KERNEL_CHOICES), with "auto" meaning the torch
    ops for a shape the fused kernels cannot compute, said where it costs speed."""
    problem = kernels.spec_problem(spec) if choice == "auto" else None
    if problem is None:
        return choice
    if on_cuda:
        log.warning("the fused kernels cannot run this model's %s: the engine runs the torch ops (slower)", problem)
    return "torch"


def _linear(x: Tensor, w: LayerWeights, name: str) -> Tensor:
    return ops.linear(x, w[name], w.get(name + "_bias"))


class MambaModel:
    def __init__(self, spec: ModelSpec, glob: dict[str, Tensor], layers: list[LayerWeights], comm: Comm,
                 kernel_choice: str = "auto"):
        self.spec, self.glob, self.layers, self.comm = spec, glob, layers, comm
        self.kernel_choice = _kernels_for(spec, kernel_choice, on_cuda=glob["embedding"].is_cuda)
        tp = comm.world_size
        self.d_inner, self.heads = spec.intermediate_size // tp, spec.num_heads // tp
        self.bc_size = spec.n_groups * spec.state_size // tp  # Mamba2: local B (and C) width
        self.lm_head_split = glob["lm_head"].shape[0] != spec.vocab_size
        self.dtype = glob["embedding"].dtype

    # ---- whole model ----------------------------------------------------------------------------

    @torch.inference_mode()
    def prefill(self, tokens: Tensor, lengths: Tensor, state: InferenceState, slots: Tensor,
                all_logits: bool = False) -> Tensor:
        """Run right-padded prompts (B, L) from a zero state; store their final states in `slots`.
        Returns fp32 logits at each prompt's last token (B, V), or at every position (B, L, V)."""
        if kernels.enabled(tokens, self.kernel_choice):  # same computation on the fused Triton kernels
            from mambapipe.engine.kernels.prefill import fused_prefill

            return fused_prefill(self, tokens, lengths, state, slots, all_logits)
        valid = torch.arange(tokens.shape[1], device=tokens.device) < lengths[:, None]  # (B, L)
        residual = F.embedding(tokens, self.glob["embedding"]).float()  # (B, L, H)
        mixer = self._mamba2_prefill if self.spec.is_mamba2 else self._mamba1_prefill
        for i, w in enumerate(self.layers):
            h = ops.rms_norm(residual.to(self.dtype), w.norm, EPS)  # (B, L, H)
            out, conv, ssm = mixer(w, h, lengths, valid)
            state.write(i, slots, conv, ssm)
            residual += out.float()
        if not all_logits:
            residual = residual[torch.arange(len(lengths)), lengths - 1]  # (B, H)
        return self._logits(residual)

    @torch.inference_mode()
    def decode(self, tokens: Tensor, state: InferenceState, lo: int) -> Tensor:
        """One token (B,) for the slots [lo, lo+B); updates their states in place. Returns (B, V) fp32."""
        if kernels.enabled(tokens, self.kernel_choice):  # same computation on the fused Triton kernels
            from mambapipe.engine.kernels.decode import fused_decode

            return fused_decode(self, tokens, state, lo)
        residual = F.embedding(tokens, self.glob["embedding"]).float()  # (B, H)
        mixer = self._mamba2_step if self.spec.is_mamba2 else self._mamba1_step
        for i, w in enumerate(self.layers):
            h = ops.rms_norm(residual.to(self.dtype), w.norm, EPS)  # (B, H)
            conv, ssm = state.span(i, lo, lo + len(tokens))
            residual += mixer(w, h, conv, ssm).float()
        return self._logits(residual)

    def _logits(self, residual: Tensor) -> Tensor:
        h = ops.rms_norm(residual.to(self.dtype), self.glob["norm_f"], EPS)  # (..., H)
        logits = ops.linear(h, self.glob["lm_head"]).float()  # (..., V/tp)
        return self.comm.gather_last_dim(logits) if self.lm_head_split else logits

    def _out_proj(self, w: LayerWeights, y: Tensor) -> Tensor:
        out = self.comm.all_reduce(ops.linear(y, w.out_proj))  # row-parallel: partial sums
        return out + w.out_proj_bias if w.out_proj_bias is not None else out

    # ---- Mamba1 ---------------------------------------------------------------------------------

    def _mamba1_ssm_inputs(self, w: LayerWeights, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (..., Di/tp) -> softplus'd delta (..., Di/tp), B and C (..., N)."""
        N = self.spec.state_size
        x_dbl = self.comm.all_reduce(ops.linear(x, w.x_proj))  # (..., R+2N): d_inner-split partial sums
        dt, B, C = x_dbl.split([x_dbl.shape[-1] - 2 * N, N, N], dim=-1)
        delta = F.softplus(ops.linear(dt, w.dt_proj).float() + w.dt_bias)  # (..., Di/tp)
        return delta, B, C

    def _mamba1_prefill(self, w: LayerWeights, h: Tensor, lengths: Tensor, valid: Tensor):
        x, z = _linear(h, w, "in_proj").chunk(2, dim=-1)  # (B, L, Di/tp) each
        x, conv = ops.causal_conv1d(x.transpose(1, 2), w.conv_weight, w.conv_bias, lengths)  # (B, Di/tp, L)
        x = x.transpose(1, 2)  # (B, L, Di/tp)
        delta, B, C = self._mamba1_ssm_inputs(w, x)
        delta = delta * valid[..., None]  # padding steps leave the state untouched
        y, ssm = ops.selective_scan(x, delta, w.A, B, C, w.D, z)  # (B, L, Di/tp)
        return self._out_proj(w, y), conv, ssm

    def _mamba1_step(self, w: LayerWeights, h: Tensor, conv: Tensor, ssm: Tensor) -> Tensor:
        x, z = _linear(h, w, "in_proj").chunk(2, dim=-1)  # (B, Di/tp) each
        x = ops.causal_conv1d_update(x, conv, w.conv_weight, w.conv_bias)  # (B, Di/tp)
        delta, B, C = self._mamba1_ssm_inputs(w, x)
        y = ops.selective_state_update(ssm, x, delta, w.A, B, C, w.D, z)  # (B, Di/tp)
        return self._out_proj(w, y)

    # ---- Mamba2 ---------------------------------------------------------------------------------

    def _mamba2_split(self, w: LayerWeights, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """in_proj, then this rank's pieces z (..., Di/tp), xBC (..., C/tp) and dt (..., Hh/tp)."""
        return _linear(h, w, "in_proj").split([self.d_inner, self.d_inner + 2 * self.bc_size, self.heads], -1)

    def _mamba2_gate_out(self, w: LayerWeights, y: Tensor, z: Tensor) -> Tensor:
        group = self.spec.intermediate_size // self.spec.n_groups  # groups never straddle ranks
        return self._out_proj(w, ops.gated_rms_norm(y, z, w.gate_norm, group, EPS).to(self.dtype))

    def _mamba2_prefill(self, w: LayerWeights, h: Tensor, lengths: Tensor, valid: Tensor):
        batch, length, _ = h.shape
        P, N = self.spec.head_dim, self.spec.state_size
        z, xBC, dt = self._mamba2_split(w, h)
        xBC, conv = ops.causal_conv1d(xBC.transpose(1, 2), w.conv_weight, w.conv_bias, lengths)  # (B, C/tp, L)
        x, B, C = xBC.transpose(1, 2).split([self.d_inner, self.bc_size, self.bc_size], -1)
        dt = F.softplus(dt.float() + w.dt_bias) * valid[..., None]  # (B, L, Hh/tp); 0 at padding
        y, ssm = ops.ssd_chunk_scan(x.reshape(batch, length, self.heads, P), dt, w.A,
                                    B.reshape(batch, length, -1, N), C.reshape(batch, length, -1, N),
                                    w.D, min(self.spec.chunk_size, ops.TORCH_SSD_CHUNK))  # (B, L, Hh/tp, P)
        return self._mamba2_gate_out(w, y.flatten(2), z), conv, ssm

    def _mamba2_step(self, w: LayerWeights, h: Tensor, conv: Tensor, ssm: Tensor) -> Tensor:
        batch, P, N = h.shape[0], self.spec.head_dim, self.spec.state_size
        z, xBC, dt = self._mamba2_split(w, h)
        xBC = ops.causal_conv1d_update(xBC, conv, w.conv_weight, w.conv_bias)  # (B, C/tp)
        x, B, C = xBC.split([self.d_inner, self.bc_size, self.bc_size], -1)
        dt = F.softplus(dt.float() + w.dt_bias)  # (B, Hh/tp)
        y = ops.ssd_state_update(ssm, x.reshape(batch, self.heads, P), dt, w.A,
                                 B.reshape(batch, -1, N), C.reshape(batch, -1, N), w.D)  # (B, Hh/tp, P)
        return self._mamba2_gate_out(w, y.flatten(1), z)
