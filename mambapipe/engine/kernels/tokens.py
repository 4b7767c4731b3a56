"""The two ends of the graphed greedy decode step: the tokens' embedding rows in fp32 (the residual stream's
start) and the greedy choice, the argmax over the vocabulary. Twins: `F.embedding(tokens, table).float()` and
`torch.argmax(logits, dim=-1)`.

At batch 1 torch's argmax reduces a row of 32-50 K logits in one block: 12-17 us of a decode step on the H200, and
the embedding lookup and its widening to fp32 are two kernels (GPU_NOTES.md v32). Here the argmax is a first pass
over BLOCK-wide slices of the row, a program each, and a second over their maxima; the embedding one kernel.
The embedding kernel launches without PDL: it is the step's first kernel, which starts only after all earlier
work is done (the argument of kernels/pdl.py). Ties go to the lowest index, as torch's argmax does.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

from mambapipe.engine.kernels import pdl

ENABLED = True  # off: torch's argmax and embedding (A/B in benchmarks/gpu_step_sweep.py)
BLOCK = 2048  # logits a first-pass program reduces
EMBED_BLOCK = 1024  # columns of an embedding row a program copies


@triton.jit
def _embed_kernel(tokens_ptr, table_ptr, out_ptr, rows_ptr, H, stride_table, BLOCK_H: tl.constexpr,
                  ROWS: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    mask = cols < H
    token = tl.load(tokens_ptr + row).to(tl.int64)
    values = tl.load(table_ptr + token * stride_table + cols, mask=mask, other=0.0)
    tl.store(out_ptr + row * H + cols, values.to(tl.float32), mask=mask)
    if ROWS:
        tl.store(rows_ptr + row * H + cols, values, mask=mask)


def embed(tokens: Tensor, table: Tensor, rows: Optional[Tensor] = None) -> Tensor:
    """F.embedding(tokens, table).float() for tokens (B,) and a table (V, H) with a unit inner stride: (B, H) fp32;
    torch's ops where ENABLED is off. The rows themselves, in the table's dtype, also go to `rows` (B, H)
    (contiguous) where given."""
    if not ENABLED:
        looked_up = F.embedding(tokens, table)
        if rows is not None:
            rows.copy_(looked_up)
        return looked_up.float()
    H = table.shape[1]
    out = torch.empty(len(tokens), H, dtype=torch.float32, device=tokens.device)
    _embed_kernel[(len(tokens), triton.cdiv(H, EMBED_BLOCK))](tokens, table, out, rows if rows is not None else out,
                                                               H, table.stride(0), BLOCK_H=EMBED_BLOCK,
                                                               ROWS=rows is not None, num_warps=4)
    return out


@triton.jit
def _slice_max_kernel(logits_ptr, max_ptr, at_ptr, V, stride, BLOCK_V: tl.constexpr, PDL: tl.constexpr):
    """The largest logit of one BLOCK_V-wide slice of one row and its (first) column."""
    row, piece = tl.program_id(0), tl.program_id(1)
    cols = piece * BLOCK_V + tl.arange(0, BLOCK_V)
    pdl.allow_next_then_wait(PDL)
    x = tl.load(logits_ptr + row * stride + cols, mask=cols < V, other=-float("inf"))
    best, at = tl.max(x, axis=0, return_indices=True, return_indices_tie_break_left=True)
    slot = row * tl.num_programs(1) + piece
    tl.store(max_ptr + slot, best)
    tl.store(at_ptr + slot, piece * BLOCK_V + at)


@triton.jit
def _row_max_kernel(max_ptr, at_ptr, out_ptr, PIECES, BLOCK_P: tl.constexpr, PDL: tl.constexpr):
    """The row's column of its largest slice maximum: the first slice holding it, so the first column overall."""
    row = tl.program_id(0)
    pieces = tl.arange(0, BLOCK_P)
    mask = pieces < PIECES
    pdl.allow_next_then_wait(PDL)
    best = tl.load(max_ptr + row * PIECES + pieces, mask=mask, other=-float("inf"))
    at = tl.load(at_ptr + row * PIECES + pieces, mask=mask, other=0)
    _, winner = tl.max(best, axis=0, return_indices=True, return_indices_tie_break_left=True)
    tl.store(out_ptr + row, tl.sum(tl.where(pieces == winner, at, 0), axis=0).to(out_ptr.dtype.element_ty))


def argmax_into(logits: Tensor, out: Tensor) -> None:
    """out (B,) int64 = torch.argmax(logits, dim=-1) for fp32 logits (B, V) with a unit inner stride; torch's
    argmax where ENABLED is off."""
    if not ENABLED:
        torch.argmax(logits, dim=-1, out=out)
        return
    batch, V = logits.shape
    pieces = triton.cdiv(V, BLOCK)
    maxima = torch.empty(batch, pieces, dtype=torch.float32, device=logits.device)
    columns = torch.empty(batch, pieces, dtype=torch.int32, device=logits.device)
    launch = pdl.launch_options(logits)
    _slice_max_kernel[(batch, pieces)](logits, maxima, columns, V, logits.stride(0), BLOCK_V=BLOCK,
                                       PDL=bool(launch), num_warps=4, **launch)
    _row_max_kernel[(batch,)](maxima, columns, out, pieces, BLOCK_P=triton.next_power_of_2(pieces),
                              PDL=bool(launch), num_warps=1, **launch)
