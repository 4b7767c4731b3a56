"""The memory-bandwidth floor of one decode step (performance-anchors §6) and the device bandwidth.

Decode is memory-bound: every step reads all weights once, reads and writes each sequence's recurrent
state, and writes the logits. Only B rows of the embedding are read, so it is not counted (unless it
is also the lm_head, which is read in full).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import torch

from mambapipe.dtypes import TORCH_DTYPES
from mambapipe.models import ModelSpec

H200_BYTES_PER_S = 4.3e12  # measured copy bandwidth on the project's H200 (anchors-h200.md)
COPY_PROBE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class DecodeTraffic:
    """Bytes one decode step must move on each rank."""
    weight_bytes: float
    state_bytes: float
    logits_bytes: float

    @property
    def total_bytes(self) -> float:
        return self.weight_bytes + self.state_bytes + self.logits_bytes

    def floor_ms(self, bytes_per_s: float) -> float:
        return self.total_bytes / bytes_per_s * 1e3


def decode_step_traffic(spec: ModelSpec, dtype: str, batch: int, tp_size: int = 1,
                        ssm_state_dtype: Optional[str] = None) -> DecodeTraffic:
    """Bytes per decode step per rank, counted as performance-anchors §6: 2·(layer params + lm_head) +
    B·2·state (read and written) + B·vocab (logits), in the model dtype, except the SSM state, which is counted
    in the dtype the engine keeps it in (`ssm_state_dtype`, default the model dtype; float32 doubles a half
    model's state bytes). The state is what the engine really carries, (K-1) conv columns per channel; §6
    rounds that up to K. With tensor parallelism each rank holds 1/tp of every large tensor and of the state
    (the replicated norms are negligible)."""
    for name in (dtype, ssm_state_dtype or dtype):
        if name not in TORCH_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(TORCH_DTYPES)}, got {name!r}")
    itemsize, state_itemsize = TORCH_DTYPES[dtype].itemsize, TORCH_DTYPES[ssm_state_dtype or dtype].itemsize
    lm_head = spec.vocab_size * spec.hidden_size
    params = spec.num_layers * spec.layer_param_count() + spec.hidden_size + lm_head  # + final norm
    conv_state, ssm_state = spec.state_elements_per_sequence()
    return DecodeTraffic(weight_bytes=params * itemsize / tp_size,
                         state_bytes=2 * batch * (conv_state * itemsize + ssm_state * state_itemsize) / tp_size,
                         logits_bytes=batch * spec.vocab_size * itemsize / tp_size)


def device_bandwidth(device: str, configured_gbps: Optional[float] = None) -> tuple[float, str]:
    """(bytes/s, where the number comes from) for the floor: the configured value, the H200 figure, or a
    quick copy measurement on `device`."""
    if configured_gbps is not None:  # the evaluate step refuses values <= 0 at plan time
        return configured_gbps * 1e9, f"configured: eval.bandwidth_gbps={configured_gbps:g}"
    if device == "cuda":
        name = torch.cuda.get_device_name()
        if "H200" in name:
            return H200_BYTES_PER_S, f"{name}: 4300 GB/s (copy bandwidth measured on the project's H200)"
    measured = measure_copy_bandwidth(device)
    return measured, f"measured: {COPY_PROBE_BYTES >> 20} MiB tensor copy on {device}, {measured / 1e9:.1f} GB/s"


def measure_copy_bandwidth(device: str, nbytes: int = COPY_PROBE_BYTES, repeats: int = 5) -> float:
    """Bytes/s moved by `dst.copy_(src)` (each copy reads and writes `nbytes`), best of `repeats`."""
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    seconds = []
    for _ in range(repeats + 1):
        _synchronize(device)
        start = time.perf_counter()
        dst.copy_(src)
        _synchronize(device)
        seconds.append(time.perf_counter() - start)
    best = min(seconds[1:])  # the first copy pays page faults and lazy allocation
    return 2 * nbytes / best


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
