"""Tensor-parallel shard rules: how one full TensorRT-LLM tensor becomes `tp_size` rank tensors.

A tensor is either replicated or split along one dim. A fused tensor (Mamba2 `in_proj` = z|x|B|C|dt,
`conv1d` = x|B|C) is split piece by piece: each piece is cut into tp chunks and rank r takes chunk r of
every piece, so each rank holds a complete, smaller z|x|B|C|dt (reference §1.7).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Split:
    dim: int
    pieces: tuple[int, ...] = ()  # sizes of the fused pieces along `dim`; empty = one piece

    def piece_sizes(self, full: int) -> tuple[int, ...]:
        return self.pieces or (full,)


def shard_shape(shape: tuple[int, ...], split: Split | None, tp_size: int) -> tuple[int, ...]:
    if split is None or tp_size == 1:
        return shape
    sizes = split.piece_sizes(shape[split.dim])
    bad = [n for n in sizes if n % tp_size]
    if bad:
        raise ValueError(f"cannot split pieces {list(sizes)} of dim {split.dim} {tp_size} ways")
    return shape[:split.dim] + (shape[split.dim] // tp_size,) + shape[split.dim + 1:]


def shard(tensor: torch.Tensor, split: Split | None, tp_size: int, rank: int) -> torch.Tensor:
    """Rank `rank`'s part of `tensor` (a view when no copy is needed)."""
    if split is None or tp_size == 1:
        return tensor
    shard_shape(tuple(tensor.shape), split, tp_size)  # divisibility check
    pieces = torch.split(tensor, split.piece_sizes(tensor.shape[split.dim]), dim=split.dim)
    parts = [piece.chunk(tp_size, dim=split.dim)[rank] for piece in pieces]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=split.dim)
