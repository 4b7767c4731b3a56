"""The one mutable object of a running batch: every layer's conv and SSM state, in slots.

Like TensorRT-LLM's paged state pool (one slot per sequence), the tensors are allocated once for
`max_batch_size` slots; a sequence takes a free slot when it joins and gives it back when it leaves, so
sequences can enter and leave a running batch without reallocating or moving anyone else's state.
The SSM state's dtype is the engine's `build.ssm_state_dtype` (resolved at build time and read from the
engine config: by default the model dtype on CUDA, half the state traffic as in mamba_ssm, and fp32 on the
CPU); every update computes in fp32 and rounds once when it stores a lower-precision state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from mambapipe.models import ModelSpec

# Where a prefill stores the final states of its rows: (one layer's states over all slots, the rows' slots (B,)).
Into = tuple[Tensor, Tensor]


def store_at_slots(into: Into, rows: Tensor) -> None:
    """states[slots[b]] = rows[b], rounded to the states' dtype."""
    states, slots = into
    states.index_copy_(0, slots, rows.to(states.dtype))


@dataclass
class InferenceState:
    conv: Tensor  # (layers, slots, conv_dim/tp, K-1), weight dtype, oldest input first
    ssm: Tensor  # Mamba1 (layers, slots, Di/tp, N); Mamba2 (layers, slots, Hh/tp, P, N); fp32 or weight dtype
    free: list[int] = field(default_factory=list)

    @classmethod
    def allocate(cls, spec: ModelSpec, tp_size: int, slots: int, dtype: torch.dtype,
                 device: torch.device | str, ssm_dtype: torch.dtype = torch.float32) -> "InferenceState":
        layers, K, N = spec.num_layers, spec.conv_kernel, spec.state_size
        conv = torch.zeros(layers, slots, spec.conv_dim // tp_size, K - 1, dtype=dtype, device=device)
        if spec.is_mamba2:
            ssm_shape = (layers, slots, spec.num_heads // tp_size, spec.head_dim, N)
        else:
            ssm_shape = (layers, slots, spec.intermediate_size // tp_size, N)
        ssm = torch.zeros(ssm_shape, dtype=ssm_dtype, device=device)
        return cls(conv=conv, ssm=ssm, free=list(range(slots)))

    @property
    def num_slots(self) -> int:
        return self.conv.shape[1]

    def acquire(self, n: int) -> list[int]:
        """Take the n lowest free slots (keeps the live slots packed at the front)."""
        if n > len(self.free):
            raise RuntimeError(f"{n} sequences need slots but only {len(self.free)} of {self.num_slots} are free")
        self.free.sort()
        taken, self.free = self.free[:n], self.free[n:]
        return taken

    def release(self, slots: list[int]) -> None:
        self.free.extend(slots)

    def release_all(self) -> None:
        self.free = list(range(self.num_slots))

    def write(self, layer: int, slots: Tensor, conv: Tensor, ssm: Tensor) -> None:
        """Store the states a prefill produced for `slots` (B,) of one layer."""
        store_at_slots((self.conv[layer], slots), conv)
        store_at_slots((self.ssm[layer], slots), ssm)

    def layer(self, layer: int) -> tuple[Tensor, Tensor]:
        """One layer's conv and SSM states over all slots, which the fused prefill's kernels write into at
        the prompts' slots."""
        return self.conv[layer], self.ssm[layer]

    def span(self, layer: int, lo: int, hi: int) -> tuple[Tensor, Tensor]:
        """Views of slots [lo, hi) of one layer, which a decode step updates in place."""
        return self.conv[layer, lo:hi], self.ssm[layer, lo:hi]
