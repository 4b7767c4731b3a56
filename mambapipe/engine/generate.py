"""Batched generation over the slot-based state: prefill, one-token decode, per-sequence stop.

Sequences are admitted into free slots (a batched prefill of their unequal prompts), then every live
sequence advances one token per decode step; a sequence that hits end-of-sequence or its token budget
leaves and frees its slot, and a waiting one can take it (continuous batching, as TensorRT-LLM's
in-flight batching does). A decode step runs over the contiguous slot span [lo, hi) as views of the
preallocated state, so no state is gathered, copied or reallocated while decoding.
"""

from __future__ import annotations

import resource
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from mambapipe.backends.base import GenerationOutput, SamplingConfig
from mambapipe.dtypes import TORCH_DTYPES
from mambapipe.engine import kernels
from mambapipe.engine.cuda_graphs import maybe_graphed_decode, maybe_graphed_prefill, pad_prompts
from mambapipe.engine.model import MambaModel
from mambapipe.engine.sampling import is_greedy, sample
from mambapipe.engine.state import InferenceState


class LimitError(ValueError):
    """A request outside the limits the engine was built with (one-line message with the fix)."""


@dataclass(frozen=True)
class Limits:
    max_batch_size: int
    max_input_len: int
    max_seq_len: int

    def check(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, queue: bool = False) -> None:
        if not queue and len(prompts) > self.max_batch_size:
            raise LimitError(f"batch of {len(prompts)} prompts exceeds max_batch_size={self.max_batch_size}; "
                             f"send smaller batches or rebuild with a larger build.max_batch_size")
        if max_new_tokens < 1:
            raise LimitError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        for i, p in enumerate(prompts):
            if not p:
                raise LimitError(f"prompt {i} is empty; give at least one token")
            if len(p) > self.max_input_len:
                raise LimitError(f"prompt {i} has {len(p)} tokens > max_input_len={self.max_input_len}; "
                                 f"truncate it or rebuild with a larger build.max_input_len")
            if len(p) + max_new_tokens > self.max_seq_len:
                raise LimitError(f"prompt {i} ({len(p)} tokens) + max_new_tokens={max_new_tokens} exceeds "
                                 f"max_seq_len={self.max_seq_len}; ask for fewer tokens or rebuild larger")


@dataclass
class _Live:
    request: int
    tokens: list[int] = field(default_factory=list)


@dataclass
class _Timings:
    prefill_s: float = 0.0
    decode_s: float = 0.0
    decode_steps: int = 0


class EngineGenerator:
    """The native backend's `Generator` (see backends/base.py) over one loaded rank."""

    def __init__(self, model: MambaModel, limits: Limits, device: str, dtype: str, tp_size: int = 1,
                 ssm_state_dtype: str = "float32", cuda_graphs: bool = True):
        self.model, self.spec, self.device, self.dtype = model, model.spec, device, dtype
        self.limits = limits
        self.max_batch_size, self.max_input_len, self.max_seq_len = (
            limits.max_batch_size, limits.max_input_len, limits.max_seq_len)
        self.state = InferenceState.allocate(model.spec, tp_size, limits.max_batch_size, model.dtype, device,
                                             ssm_dtype=TORCH_DTYPES[ssm_state_dtype])
        self._tokens = torch.zeros(limits.max_batch_size, dtype=torch.long, device=device)  # decode input
        self._graphs = maybe_graphed_decode(model, self.state, self._tokens, cuda_graphs)  # None off CUDA
        self._prefill_graphs = maybe_graphed_prefill(model, self.state, limits.max_input_len, cuda_graphs)
        self.runtime_path = self._runtime_path()

    def _runtime_path(self) -> dict[str, object]:
        """Which computation this generator runs (the evaluate step records it in metrics.json)."""
        triton = kernels.enabled(self._tokens, self.model.kernel_choice)
        return {"kernels": "triton" if triton else "torch", "cuda_graphs": self._graphs is not None,
                "ssm_state_dtype": str(self.state.ssm.dtype).removeprefix("torch.")}

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                 sampling: SamplingConfig = SamplingConfig(), eos_id: Optional[int] = None,
                 stop_at_eos: bool = True) -> GenerationOutput:
        self.limits.check(prompts, max_new_tokens)
        self._check_token_ids(prompts)
        return self._run(prompts, max_new_tokens, sampling, eos_id if stop_at_eos else None)

    def serve(self, prompts: Sequence[Sequence[int]], max_new_tokens: int,
              sampling: SamplingConfig = SamplingConfig(), eos_id: Optional[int] = None) -> GenerationOutput:
        """Like `generate`, but any number of prompts: they queue for slots and join the running batch."""
        self.limits.check(prompts, max_new_tokens, queue=True)
        self._check_token_ids(prompts)
        return self._run(prompts, max_new_tokens, sampling, eos_id)

    def _check_token_ids(self, prompts: Sequence[Sequence[int]]) -> None:
        vocab = self.spec.vocab_size
        for i, p in enumerate(prompts):
            bad = next((t for t in p if not 0 <= t < vocab), None)
            if bad is not None:
                raise LimitError(f"prompt {i} has token id {bad} outside the vocabulary [0, {vocab}); "
                                 f"use the tokenizer that belongs to this model")

    def close(self) -> None:
        # drop the weights' mmap, the state pool and the captured graphs (which hold both, and their memory pools)
        self.model = self.state = self._graphs = self._prefill_graphs = None

    def _run(self, prompts, max_new_tokens, sampling, eos_id) -> GenerationOutput:
        rng = torch.Generator(device=self.device).manual_seed(sampling.seed)
        outputs: list[list[int]] = [[] for _ in prompts]
        waiting, live, times = deque(range(len(prompts))), {}, _Timings()
        # No sequence outlives a call: slots a failed call left taken would otherwise starve this one.
        self.state.release_all()

        def emit(slot: int, token: int) -> None:
            seq = live[slot]
            seq.tokens.append(token)
            if len(seq.tokens) >= max_new_tokens or token == eos_id:
                outputs[seq.request] = seq.tokens
                del live[slot]
                self.state.release([slot])

        while waiting or live:
            if waiting and self.state.free:
                self._admit(prompts, waiting, live, sampling, rng, emit, times)
            elif live:
                self._step(live, sampling, rng, emit, times)
        return GenerationOutput(output_ids=outputs, prefill_ms=1e3 * times.prefill_s,
                                decode_ms_per_step=1e3 * times.decode_s / max(times.decode_steps, 1),
                                peak_memory_mb=_peak_memory_mb(self.device))

    def _admit(self, prompts, waiting, live, sampling, rng, emit, times) -> None:
        """Prefill as many waiting prompts as there are free slots, and emit their first tokens."""
        requests = [waiting.popleft() for _ in range(min(len(waiting), len(self.state.free)))]
        slots = self.state.acquire(len(requests))
        start = time.perf_counter()
        logits = self._prefill([prompts[r] for r in requests], slots)  # (B, V) fp32
        first = sample(logits, sampling, rng).tolist()  # read before the next prefill: graph outputs are reused
        times.prefill_s += time.perf_counter() - start
        for slot, r, token in zip(slots, requests, first):
            live[slot] = _Live(request=r)
            emit(slot, token)

    def _prefill(self, rows: list[Sequence[int]], slots: list[int]) -> torch.Tensor:
        """Prefill `rows` into `slots`: a graph replay when one covers this batch (CUDA, `cuda_graphs`), else eager."""
        if self._prefill_graphs is not None:
            logits = self._prefill_graphs.run(rows, slots)  # None: over the token budget or the graph cap
            if logits is not None:
                return logits
        lengths = [len(p) for p in rows]
        tokens = pad_prompts(rows, max(lengths)).to(self.device)  # (B, L) right-padded
        return self.model.prefill(tokens, torch.tensor(lengths, device=self.device), self.state,
                                  torch.tensor(slots, device=self.device))

    def _step(self, live, sampling, rng, emit, times) -> None:
        """One decode step over the slot span holding every live sequence (idle slots ride along)."""
        graphed = self._graphs is not None and is_greedy(sampling)  # graphs always start at slot 0
        lo, hi = (0 if graphed else min(live)), max(live) + 1
        span = [0] * (hi - lo)
        for slot, seq in live.items():
            span[slot - lo] = seq.tokens[-1]
        self._tokens[lo:hi].copy_(torch.tensor(span))  # one host-to-device copy, not one per sequence
        start = time.perf_counter()
        if graphed:
            chosen = self._graphs.greedy_step(hi).tolist()
        else:
            logits = self.model.decode(self._tokens[lo:hi], self.state, lo)  # (hi-lo, V)
            chosen = sample(logits, sampling, rng).tolist()
        times.decode_s += time.perf_counter() - start
        times.decode_steps += 1
        for slot in list(live):
            emit(slot, chosen[slot - lo])


def _peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB

