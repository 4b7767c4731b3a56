"""Fixtures of the evaluate tests: a tiny seeded HF Mamba checkpoint and a BPE tokenizer trained on the
bundled sample articles (both real, written by mambapipe.synthetic), and a generator over them."""

from __future__ import annotations

from pathlib import Path

import pytest

from mambapipe.models import ModelSpec

TINY_SPEC = ModelSpec("Mamba1", hidden_size=64, num_layers=2, vocab_size=512, state_size=8)


@pytest.fixture(scope="session")
def download_dir(tmp_path_factory) -> Path:
    """A download artifact's layout: model/ (HF Mamba, fp32) and tokenizer/."""
    from mambapipe.synthetic import write_synthetic_checkpoint, write_synthetic_tokenizer

    root = tmp_path_factory.mktemp("download")
    write_synthetic_checkpoint(TINY_SPEC, root / "model", "float32", seed=0, progress=False)
    write_synthetic_tokenizer(root / "tokenizer", TINY_SPEC.vocab_size)
    return root


@pytest.fixture(scope="session")
def tokenizer_bundle(download_dir):
    from mambapipe.evaluate.prompts import load_tokenizer

    return load_tokenizer(download_dir / "tokenizer")


@pytest.fixture(scope="session")
def hf_generator(download_dir):
    from mambapipe.evaluate.hf_reference import HFGenerator

    return HFGenerator(download_dir / "model", "float32", "cpu", max_batch_size=4, max_input_len=128,
                       max_seq_len=160)
