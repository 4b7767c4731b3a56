"""Choosing the next token from fp32 logits: greedy, or temperature / top-k / top-p sampling."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from mambapipe.backends.base import SamplingConfig


def is_greedy(cfg: SamplingConfig) -> bool:
    # summarize.py's defaults (top_k=1, top_p=0) are greedy decoding expressed as sampling.
    return cfg.greedy or cfg.temperature <= 0 or cfg.top_k == 1 or cfg.top_p <= 0


def filter_logits(logits: Tensor, cfg: SamplingConfig) -> Tensor:
    """Temperature, then top-k, then nucleus (top-p) filtering; removed entries become -inf. (B, V)."""
    # The best logit moves to 0 before the division, so a tiny temperature sends the others to -inf (the greedy
    # limit) instead of every logit to +-inf, which softmax would turn into NaN.
    logits = (logits - logits.amax(-1, keepdim=True)) / cfg.temperature
    if cfg.top_k > 0:
        kth = torch.topk(logits, min(cfg.top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, -torch.inf)
    if cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = probs.cumsum(-1) - probs  # probability of strictly better tokens
        drop_sorted = mass_before >= cfg.top_p
        drop_sorted[:, 0] = False  # always keep the best token
        logits = logits.masked_fill(drop_sorted.scatter(1, order, drop_sorted), -torch.inf)
    return logits


def sample(logits: Tensor, cfg: SamplingConfig, generator: Optional[torch.Generator]) -> Tensor:
    """(B, V) fp32 logits -> (B,) token ids. Every TP rank draws the same token from the same seed."""
    if is_greedy(cfg):
        return logits.argmax(-1)
    probs = torch.softmax(filter_logits(logits, cfg), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
