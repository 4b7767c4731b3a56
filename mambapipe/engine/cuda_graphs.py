"""CUDA graphs of the native engine: the whole greedy decode step (embedding, every layer, logits, argmax) as
one graph per batch bucket, and the prefill as one graph per (batch, prompt-length bucket), `GraphedPrefill`.

The small models are launch-bound: a few hundred kernels per token cost more in CPU launch time than their
bytes take on the GPU. Replaying a captured graph issues them all at once. Each bucket's graph runs over the
state slots [0, bucket) on the generator's static token buffer: it reads each slot's last token there and
writes the next one back in its place, so steps can follow each other without the host in between; idle
slots ride along and are overwritten by the next prefill that takes them. Graphs are captured when the generator
is built, before any sequence is live, so the warm-up steps may scribble on the state freely.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import torch
from torch import Tensor

from mambapipe.engine import kernels
from mambapipe.engine.state import InferenceState


def bucket_sizes(max_batch_size: int) -> list[int]:
    """Powers of two below max_batch_size, and max_batch_size itself: 1, 2, 4, 8, ..., max."""
    sizes = [1 << i for i in range(max_batch_size.bit_length()) if 1 << i < max_batch_size]
    return sizes + [max_batch_size]


# The BLAS library whose kernels the decode graphs capture (the prefill keeps torch's default). At batch 64
# cuBLASLt's picks ran Codestral's out_proj (4096 x 8192) alone in 20.5 us against cuBLAS's 25.1 and mamba-2.8b's
# (2560 x 5120) in 11.3 against 12.8, equal at batch 8; in the step only Codestral's batch-64 decode gained
# (9.95 -> 9.69-9.71 ms), the other models' within noise (GPU_NOTES.md v16).
DECODE_BLAS = "cublaslt"


@contextmanager
def preferred_blas(library: str) -> Iterator[None]:
    """torch's preferred BLAS library inside the block (what a graph captured there keeps), restored after."""
    saved = torch.backends.cuda.preferred_blas_library()
    torch.backends.cuda.preferred_blas_library(library)
    try:
        yield
    finally:
        torch.backends.cuda.preferred_blas_library(saved)


class GraphedGreedyDecode:
    def __init__(self, model, state: InferenceState, tokens: Tensor, buckets: list[int]):
        self.model, self.state, self.tokens = model, state, tokens  # tokens: (slots,) static input and output
        self.buckets = sorted(buckets)
        self._pool = torch.cuda.graph_pool_handle()
        # Largest first, so the smaller graphs reuse the larger one's pool memory.
        self._graphs = {n: self._capture(n) for n in sorted(buckets, reverse=True)}

    def _run(self, n: int) -> None:
        logits = self.model.decode(self.tokens[:n], self.state, 0)  # (n, V) fp32
        if kernels.enabled(logits, self.model.kernel_choice):  # in place of the inputs, no extra copy kernel
            from mambapipe.engine.kernels.tokens import argmax_into
            argmax_into(logits, self.tokens[:n])
        else:
            torch.argmax(logits, dim=-1, out=self.tokens[:n])

    def _capture(self, n: int) -> torch.cuda.CUDAGraph:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with preferred_blas(DECODE_BLAS):
            with torch.cuda.stream(side):  # Triton JIT, BLAS workspaces and NCCL setup happen outside capture
                for _ in range(2):
                    self._run(n)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                self._run(n)
        return graph

    def greedy_step(self, span: int) -> Tensor:
        """Advance slots [0, bucket >= span) by one greedy token; returns their next tokens (bucket,), a view
        of the token buffer that the next step reads and overwrites."""
        bucket = next(b for b in self.buckets if b >= span)
        self._graphs[bucket].replay()
        return self.tokens[:bucket]


def maybe_graphed_decode(model, state: InferenceState, tokens: Tensor,
                         enabled: bool = True) -> Optional[GraphedGreedyDecode]:
    """Graphs on CUDA when `enabled` (the load option `cuda_graphs`); None (eager decode) otherwise."""
    if not tokens.is_cuda or not enabled:
        return None
    return GraphedGreedyDecode(model, state, tokens, bucket_sizes(state.num_slots))


# ---- prefill ------------------------------------------------------------------------------------------------

MIN_LENGTH_BUCKET = 16
# B * Lb above this runs eagerly: such a prefill is GPU-bound (its kernels outlast their eager launches, which
# the host issues ahead of the GPU), and its graph would pin activations of that size in the pool for good.
PREFILL_TOKEN_BUDGET = 16384
# Keys past this many run eagerly: each graph costs a capture (two warm-up prefills and the capture) and keeps
# its kernels' launch records; a few (batch, length) shapes cover an evaluation's batches.
MAX_PREFILL_GRAPHS = 16
# A graph computes its bucket's padding too; an eager prefill computes the batch's own length but pays the host's
# launches (~30 ms for a 64-layer model through Triton's launcher: mamba2-2.7b's 2048-token prefill took 30 ms
# eagerly against 23.5 as a graph). Past this much work, prompt tokens x layer weight elements (~half the FLOPs),
# the GPU time outlasts those launches, so a batch that its bucket would pad by more than EAGER_MIN_PADDING runs
# eagerly. Measured on the H200 (GPU_NOTES.md v15): 64 prompts of 100 tokens (padded to 128 as a graph) prefilled
# in 84-90 ms eagerly against 105 (mamba-2.8b), 84 against 94 (mamba2-2.7b), 198 against 238 (Codestral).
EAGER_MIN_WORK = 1e13
EAGER_MIN_PADDING = 0.1


def length_bucket(length: int, max_input_len: int) -> int:
    """The padded length a prefill graph runs for prompts of at most `length` tokens: the next power of two
    from 16 up, capped at `max_input_len` (itself a bucket, so the longest prompts get a graph too)."""
    if not 1 <= length <= max_input_len:
        raise ValueError(f"prompt length {length} is outside [1, max_input_len={max_input_len}]")
    return min(max(MIN_LENGTH_BUCKET, 1 << (length - 1).bit_length()), max_input_len)


def pad_prompts(prompts: Sequence[Sequence[int]], width: int) -> Tensor:
    """Token lists right-padded with 0 to (B, width) long, built on the host (one device copy later).
    The prefill masks the padding (dt = 0 there, conv state gathered at each row's length), so its value
    and the width do not change the result."""
    tokens = torch.zeros(len(prompts), width, dtype=torch.long)  # (B, width)
    for row, prompt in enumerate(prompts):
        tokens[row, : len(prompt)] = torch.as_tensor(prompt, dtype=torch.long)
    return tokens


class _PrefillGraph:
    """One (batch, length bucket) prefill: static inputs (tokens, lengths, slots) and the (B, V) fp32 logits."""

    def __init__(self, model, state: InferenceState, batch: int, length: int):
        self.model, self.state = model, state
        device = state.conv.device
        self.tokens = torch.zeros(batch, length, dtype=torch.long, device=device)  # (B, Lb) right-padded
        self.lengths = torch.ones(batch, dtype=torch.long, device=device)  # (B,)
        self.slots = torch.zeros(batch, dtype=torch.long, device=device)  # (B,)
        self.logits: Optional[Tensor] = None  # (B, V) fp32, filled by capture
        self.graph: Optional[torch.cuda.CUDAGraph] = None

    def load(self, prompts: Sequence[Sequence[int]], slots: Sequence[int]) -> None:
        self.tokens.copy_(pad_prompts(prompts, self.tokens.shape[1]))
        self.lengths.copy_(torch.tensor([len(p) for p in prompts]))
        self.slots.copy_(torch.tensor(slots))

    def _run(self) -> Tensor:
        return self.model.prefill(self.tokens, self.lengths, self.state, self.slots)  # (B, V) fp32

    def capture(self, pool) -> None:
        """Warm up and capture with the inputs already loaded. The warm-up prefills write the states of the
        loaded slots only, which are the free slots being admitted (the replay overwrites them), so sequences
        live in other slots are untouched: capture may happen mid-run."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # Triton JIT and cuBLAS workspaces happen outside capture
            for _ in range(2):
                self._run()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.logits = self._run()


class GraphedPrefill:
    """The prefill as one CUDA graph per (batch B, length bucket Lb), captured on first use of a key.

    A 100-token prefill is a few ms of GPU work but ~700-970 kernel launches through Triton's Python launcher;
    a replay issues them at once. Prompts are right-padded to Lb (`length_bucket`), so a few graphs cover any
    prompt lengths. Keys with B * Lb over `token_budget`, keys past `max_graphs`, and GPU-bound batches that
    their bucket would pad much (`eager_is_faster`) are not graphed: `run` returns None and the caller
    prefills eagerly.

    All graphs share one memory pool, which then holds about the largest graph's working set, not the sum.
    Sharing is safe because replays run one at a time on one stream (no two graphs' intermediates are ever
    live together) and the one output that outlives a replay, the logits, is read before the next prefill:
    each graph keeps its logits referenced, so no later capture takes that memory, and the generator samples
    from them (a host sync) before any other graph, possibly captured earlier over that memory, replays.
    """

    def __init__(self, model, state: InferenceState, max_input_len: int):
        self.model, self.state, self.max_input_len = model, state, max_input_len
        # read when built, not at import, so `gpu_bench.py --no-prefill-graphs` can set the budget to 0
        self.token_budget, self.max_graphs = PREFILL_TOKEN_BUDGET, MAX_PREFILL_GRAPHS
        self.weights_per_token = sum(t.numel() for layer in model.layers for t in layer.values())
        self.graphs: dict[tuple[int, int], _PrefillGraph] = {}
        self._pool = torch.cuda.graph_pool_handle()

    def eager_is_faster(self, key: tuple[int, int], longest: int) -> bool:
        """A GPU-bound batch (EAGER_MIN_WORK) that the bucket would pad by more than EAGER_MIN_PADDING."""
        batch, bucket = key
        work = batch * longest * self.weights_per_token
        return work >= EAGER_MIN_WORK and bucket > longest * (1 + EAGER_MIN_PADDING)

    def run(self, prompts: Sequence[Sequence[int]], slots: Sequence[int]) -> Optional[Tensor]:
        """Prefill `prompts` into `slots` by a graph replay; returns the graph's (B, V) fp32 logits, valid until
        the next prefill replay, or None when this key is not graphed (the caller then prefills eagerly)."""
        longest = max(len(p) for p in prompts)
        key = (len(prompts), length_bucket(longest, self.max_input_len))  # (batch, length bucket)
        if self.eager_is_faster(key, longest):
            return None
        graph = self.graphs.get(key)
        if graph is None:
            if key[0] * key[1] > self.token_budget or len(self.graphs) >= self.max_graphs:
                return None
            graph = self.graphs[key] = _PrefillGraph(self.model, self.state, *key)
        graph.load(prompts, slots)
        if graph.graph is None:  # first use of this key: capture with these inputs loaded
            graph.capture(self._pool)
        graph.graph.replay()
        return graph.logits


def maybe_graphed_prefill(model, state: InferenceState, max_input_len: int,
                          enabled: bool = True) -> Optional[GraphedPrefill]:
    """Prefill graphs when `enabled` (the load option `cuda_graphs`), on CUDA and on the fused kernels (the torch
    path is a debugging baseline and not capture-safe); None (eager prefill) otherwise. Tensor-parallel ranks
    capture their collectives as the decode graphs do: every rank admits the same prompts, so all of them
    capture and replay the same keys in the same order."""
    device_ok = state.conv.is_cuda and kernels.enabled(state.conv, model.kernel_choice)
    if not enabled or not device_ok:
        return None
    return GraphedPrefill(model, state, max_input_len)
