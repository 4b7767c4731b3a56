"""The whole greedy decode step (embedding, every layer, logits, argmax) as one CUDA graph per batch bucket.

The small models are launch-bound: a few hundred kernels per token cost more in CPU launch time than their
bytes take on the GPU. Replaying a captured graph issues them all at once. Each bucket's graph runs over the
state slots [0, bucket) with static buffers (the generator's token buffer in, `next_tokens` out); idle slots
ride along and are overwritten by the next prefill that takes them. Graphs are captured when the generator
is built, before any sequence is live, so the warm-up steps may scribble on the state freely.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from mambapipe.engine.state import InferenceState


def bucket_sizes(max_batch_size: int) -> list[int]:
    """Powers of two below max_batch_size, and max_batch_size itself: 1, 2, 4, 8, ..., max."""
    sizes = [1 << i for i in range(max_batch_size.bit_length()) if 1 << i < max_batch_size]
    return sizes + [max_batch_size]


class GraphedGreedyDecode:
    def __init__(self, model, state: InferenceState, tokens: Tensor, buckets: list[int]):
        self.model, self.state, self.tokens = model, state, tokens  # tokens: (slots,) static input
        self.next_tokens = torch.zeros_like(tokens)  # (slots,) static output
        self.buckets = sorted(buckets)
        self._pool = torch.cuda.graph_pool_handle()
        # Largest first, so the smaller graphs reuse the larger one's pool memory.
        self._graphs = {n: self._capture(n) for n in sorted(buckets, reverse=True)}

    def _run(self, n: int) -> None:
        logits = self.model.decode(self.tokens[:n], self.state, 0)  # (n, V) fp32
        self.next_tokens[:n].copy_(logits.argmax(-1))

    def _capture(self, n: int) -> torch.cuda.CUDAGraph:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # Triton JIT, cuBLAS workspaces and NCCL setup happen outside capture
            for _ in range(2):
                self._run(n)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            self._run(n)
        return graph

    def greedy_step(self, span: int) -> Tensor:
        """Advance slots [0, bucket >= span) by one greedy token; returns their next tokens (bucket,)."""
        bucket = next(b for b in self.buckets if b >= span)
        self._graphs[bucket].replay()
        return self.next_tokens[:bucket]


def maybe_graphed_decode(model, state: InferenceState, tokens: Tensor,
                         enabled: bool = True) -> Optional[GraphedGreedyDecode]:
    """Graphs on CUDA when `enabled` (the load option `cuda_graphs`); None (eager decode) otherwise."""
    if not tokens.is_cuda or not enabled:
        return None
    return GraphedGreedyDecode(model, state, tokens, bucket_sizes(state.num_slots))
