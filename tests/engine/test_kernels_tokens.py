"""The decode step's token kernels (kernels/tokens.py) against their torch twins on fresh random inputs: the
argmax with ties inside a slice and across slices, -inf entries, rows of one slice and of many, a ragged last
slice; the embedding rows in fp32. Under TRITON_INTERPRET=1 on a machine without CUDA; the interpreter takes the
first of equal maxima whatever Triton's tie-break flag says, so only the compiled run (on a GPU) checks that flag."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton", reason="the token kernels need Triton (a test dependency)")
from mambapipe.engine.kernels import tokens  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("batch,V,block", [(1, 50280, 2048), (3, 1000, 128), (2, 100, 128), (4, 777, 64)])
def test_argmax_matches_torch_and_takes_the_first_of_equal_maxima(batch, V, block, monkeypatch):
    monkeypatch.setattr(tokens, "BLOCK", block)
    gen = torch.Generator().manual_seed(V + batch)
    logits = torch.randn(batch, V, generator=gen)
    logits[0, V // 3] = logits[0, V - 1] = 9.0  # a tie across slices: the first one wins
    if batch > 1:
        logits[1, 5] = logits[1, 6] = 9.0  # a tie inside one slice
        logits[1, :5] = -torch.inf
    logits = logits.to(DEVICE)
    out = torch.full((batch,), -1, dtype=torch.int64, device=DEVICE)
    tokens.argmax_into(logits, out)
    assert torch.equal(out, torch.argmax(logits, dim=-1))
    assert out[0] == V // 3


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("H", [768, 2560, 100])
def test_embedding_rows_in_fp32(dtype, H):
    gen = torch.Generator().manual_seed(H)
    table = torch.randn(500, H, generator=gen).to(dtype).to(DEVICE)
    ids = torch.tensor([3, 499, 0, 3], device=DEVICE)
    rows = torch.empty(4, H, dtype=dtype, device=DEVICE)
    out = tokens.embed(ids, table, rows=rows)
    assert out.dtype == torch.float32 and torch.equal(out, F.embedding(ids, table).float())
    assert torch.equal(rows, F.embedding(ids, table))  # the rows as the table has them, too


def test_embedding_of_a_strided_table_and_the_torch_ops_when_off(monkeypatch):
    wide = torch.randn(50, 200).to(DEVICE)
    table, ids = wide[:, 8:136], torch.tensor([7, 0, 49], device=DEVICE)  # rows 200 apart
    assert torch.equal(tokens.embed(ids, table), F.embedding(ids, table).float())
    monkeypatch.setattr(tokens, "ENABLED", False)
    logits, out = torch.randn(2, 300).to(DEVICE), torch.empty(2, dtype=torch.int64, device=DEVICE)
    tokens.argmax_into(logits, out)
    rows = torch.empty(3, 128, device=DEVICE)
    assert torch.equal(out, logits.argmax(-1)) and torch.equal(tokens.embed(ids, table, rows), F.embedding(ids, table))
    assert torch.equal(rows, F.embedding(ids, table))
