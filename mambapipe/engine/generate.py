"""Batched generation over the slot-based state: prefill, one-token decode, per-sequence stop.

Sequences are admitted into free slots (a batched prefill of their unequal prompts), then every live
sequence advances one token per decode step; a sequence that hits end-of-sequence or its token budget
leaves and frees its slot, and a waiting one can take it (continuous batching, as TensorRT-LLM's
in-flight batching does). A decode step runs over the contiguous slot span [lo, hi) as views of the
preallocated state, so no state is gathered, copied or reallocated while decoding.

Greedy decoding on a GPU keeps one step queued ahead: each step writes its tokens into the device buffer
the next step reads, so step t+1 is issued before the host has read step t's tokens, and the host's work
(the token copy back, end-of-sequence checks, bookkeeping) overlaps the GPU's. The step ahead covers the
same slots; whatever it computes for a sequence that has meanwhile ended is dropped, and it is read before
any prefill admits new sequences, so the tokens are those of the one-at-a-time loop.
"""

from __future__ import annotations

import numbers
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from mambapipe.backends.base import GenerationOutput, LimitError, Limits, SamplingConfig
from mambapipe.dtypes import TORCH_DTYPES
from mambapipe.engine import kernels
from mambapipe.engine.cuda_graphs import maybe_graphed_decode, maybe_graphed_prefill, pad_prompts
from mambapipe.engine.model import MambaModel
from mambapipe.engine.sampling import is_greedy, sample
from mambapipe.engine.state import InferenceState
from mambapipe.peak_memory import peak_memory_mb

# Module switch: `benchmarks/gpu_bench.py --no-queue-ahead` reads every greedy step before issuing the next.
QUEUE_AHEAD = True


@dataclass
class _Live:
    request: int
    tokens: list[int] = field(default_factory=list)


@dataclass
class _Issued:
    """A greedy decode step queued on the device and not yet read: its slot span, the live slots it
    advances, and the host copy of its tokens (on CUDA pinned, complete once `done` has fired)."""

    lo: int
    hi: int
    slots: tuple[int, ...]
    host: torch.Tensor  # (hi - lo,)
    done: Optional[torch.cuda.Event]

    def read(self) -> list[int]:
        if self.done is not None:
            self.done.synchronize()
        return self.host.tolist()


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
        self.state = InferenceState.allocate(model.spec, tp_size, limits.max_batch_size, model.dtype, device,
                                             ssm_dtype=TORCH_DTYPES[ssm_state_dtype])
        # each slot's last token: the decode step's input, which a greedy step overwrites with its output
        self._tokens = torch.zeros(limits.max_batch_size, dtype=torch.long, device=device)
        self._graphs = maybe_graphed_decode(model, self.state, self._tokens, cuda_graphs)  # None off CUDA
        # Greedy steps queued one ahead (module docstring) on CUDA, where the host does not wait for a launch;
        # their tokens come back through two pinned buffers, one per step in flight.
        on_gpu = device.startswith("cuda")
        self.queue_ahead = on_gpu and QUEUE_AHEAD
        self._host_tokens = [torch.empty(limits.max_batch_size, dtype=torch.long, pin_memory=on_gpu) for _ in "ab"]
        self._issued: Optional[_Issued] = None
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

    def score(self, prompts: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """The fp32 logits at every position of each prompt, (len, V) on the host, from one eager prefill:
        what comparing two engines (TP sizes, dtypes, kernels) needs beyond their greedy tokens, which flip
        wherever the top two logits are closer than the engines' rounding differences."""
        self.limits.check_prompts(prompts)
        self._check_token_ids(prompts)
        # no call is live between calls, so any slots do
        logits = self._eager_prefill(prompts, list(range(len(prompts))), all_logits=True)  # (B, L, V)
        return [row[:len(p)].cpu() for row, p in zip(logits, prompts)]

    def _check_token_ids(self, prompts: Sequence[Sequence[int]]) -> None:
        vocab = self.spec.vocab_size
        for i, p in enumerate(prompts):
            # The tensor the prompts become would truncate 1.7 to 1 and read True as 1, a wrong prompt run silently.
            not_int = next((t for t in p if isinstance(t, bool) or not isinstance(t, numbers.Integral)), None)
            if not_int is not None:
                raise LimitError(f"prompt {i} has token id {not_int!r}, which is no integer; pass token ids as ints")
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

        self._issued = None  # a step a failed call left queued wrote only its own slots' states and tokens
        while waiting or live:
            if waiting and self.state.free:
                self._admit(prompts, waiting, live, sampling, rng, emit, times)
            elif live:
                self._step(live, max_new_tokens, sampling, rng, emit, times)
        if self._issued is not None:  # a step queued for sequences that all ended at end-of-sequence
            self._issued.read()
            self._issued = None
        return GenerationOutput(output_ids=outputs, prefill_ms=1e3 * times.prefill_s,
                                decode_ms_per_step=1e3 * times.decode_s / max(times.decode_steps, 1),
                                peak_memory_mb=peak_memory_mb(self.device))

    def _admit(self, prompts, waiting, live, sampling, rng, emit, times) -> None:
        """Prefill as many waiting prompts as there are free slots, and emit their first tokens."""
        if self._issued is not None:  # read the queued step first: the new slots' tokens are uploaded after it
            self._emit_issued(live, emit, times)
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
        return self._eager_prefill(rows, slots)

    def _eager_prefill(self, rows: Sequence[Sequence[int]], slots: list[int], all_logits: bool = False) -> torch.Tensor:
        """`rows` right-padded into one batch through the model's prefill; fp32 logits (B, V), or (B, L, V)."""
        lengths = [len(p) for p in rows]
        tokens = pad_prompts(rows, max(lengths)).to(self.device)  # (B, L) right-padded
        return self.model.prefill(tokens, torch.tensor(lengths, device=self.device), self.state,
                                  torch.tensor(slots, device=self.device), all_logits=all_logits)

    def _step(self, live, max_new_tokens, sampling, rng, emit, times) -> None:
        """One decode step over the slot span holding every live sequence (idle slots ride along)."""
        start = time.perf_counter()
        if not is_greedy(sampling):
            lo, hi = self._upload_last_tokens(live, graphed=False)
            logits = self.model.decode(self._tokens[lo:hi], self.state, lo)  # (hi-lo, V)
            chosen = sample(logits, sampling, rng).tolist()
            self._count_step(start, times)
            for slot in list(live):
                emit(slot, chosen[slot - lo])
            return
        current = self._issued
        if current is None:
            lo, hi = self._upload_last_tokens(live, graphed=self._graphs is not None)
            current = self._issue_greedy(lo, hi, tuple(live))
        # queue the next step before reading this one, unless every sequence ends with this one's token
        needed = any(len(live[slot].tokens) + 1 < max_new_tokens for slot in current.slots if slot in live)
        if self.queue_ahead and needed:
            self._issued = self._issue_greedy(current.lo, current.hi, current.slots)
        else:
            self._issued = None
        self._emit(current, live, emit, times, start)

    def _upload_last_tokens(self, live, graphed: bool) -> tuple[int, int]:
        """Copy each live sequence's last token into the token buffer; returns the slot span [lo, hi)."""
        lo, hi = (0 if graphed else min(live)), max(live) + 1  # graphs always start at slot 0
        span = [0] * (hi - lo)
        for slot, seq in live.items():
            span[slot - lo] = seq.tokens[-1]
        self._tokens[lo:hi].copy_(torch.tensor(span))  # one host-to-device copy, not one per sequence
        return lo, hi

    def _issue_greedy(self, lo: int, hi: int, slots: tuple[int, ...]) -> _Issued:
        """Queue one greedy step over [lo, hi): its tokens replace its inputs in the token buffer, then are
        copied to the host buffer that the previous issue did not take."""
        if self._graphs is not None:
            chosen = self._graphs.greedy_step(hi)[lo:hi]
        else:
            chosen = self.model.decode(self._tokens[lo:hi], self.state, lo).argmax(-1)  # (hi-lo,)
            self._tokens[lo:hi].copy_(chosen)
        self._host_tokens.reverse()
        host = self._host_tokens[0][: hi - lo]
        host.copy_(chosen, non_blocking=self.queue_ahead)
        done = torch.cuda.Event() if host.is_pinned() else None
        if done is not None:
            done.record()
        return _Issued(lo, hi, slots, host, done)

    def _emit_issued(self, live, emit, times) -> None:
        """Read the queued step and emit its tokens (before a prefill: admitted slots upload their tokens)."""
        issued, self._issued = self._issued, None
        self._emit(issued, live, emit, times, time.perf_counter())

    def _emit(self, issued: _Issued, live, emit, times, start: float) -> None:
        """Wait for `issued`, count the step, and emit its tokens to the sequences still live."""
        chosen = issued.read()
        self._count_step(start, times)
        for slot in issued.slots:
            if slot in live:
                emit(slot, chosen[slot - issued.lo])

    @staticmethod
    def _count_step(start: float, times: _Timings) -> None:
        times.decode_s += time.perf_counter() - start
        times.decode_steps += 1

