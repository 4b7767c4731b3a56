from __future__ import annotations

import pytest

from mambapipe.evaluate.prompts import build_prompt, encode_prompt, load_tokenizer

LONG_ARTICLE = " ".join(f"Paragraph {i} says the council did n't meet." for i in range(60))


def test_prompt_appends_tldr_strips_and_joins_nt():
    assert build_prompt("  The mayor did n't come.") == "The mayor didn't come. TL;DR:"
    # Only the ends of the whole prompt are stripped (as summarize.py): the article's own trailing
    # whitespace stays before the suffix.
    assert build_prompt("Short.\n") == "Short.\n TL;DR:"
    assert " n't" not in build_prompt(LONG_ARTICLE)


def test_short_prompt_is_not_truncated(tokenizer_bundle):
    tok = tokenizer_bundle.tokenizer
    ids = encode_prompt(tok, "The bridge closed.", max_input_length=923)
    assert tok.decode(ids) == "The bridge closed. TL;DR:"


def test_left_truncation_keeps_the_last_tokens_and_tldr(tokenizer_bundle):
    tok = tokenizer_bundle.tokenizer
    full = tok.encode(build_prompt(LONG_ARTICLE), add_special_tokens=True)
    assert len(full) > 40
    ids = encode_prompt(tok, LONG_ARTICLE, max_input_length=40)
    assert ids == full[-40:]
    assert tok.decode(ids).endswith("Paragraph 59 says the council didn't meet. TL;DR:")


def test_special_tokens_survive_left_truncation(download_dir, tmp_path):
    """A tokenizer that prepends BOS keeps it in front; the article loses its first tokens instead."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(download_dir / "tokenizer"))
    bos = tok.bos_token
    tok.backend_tokenizer.post_processor = TemplateProcessing(single=f"{bos} $A",
                                                              special_tokens=[(bos, tok.bos_token_id)])
    tok.save_pretrained(tmp_path)
    bundle = load_tokenizer(tmp_path)
    body = bundle.tokenizer.encode(build_prompt(LONG_ARTICLE), add_special_tokens=False)
    ids = encode_prompt(bundle.tokenizer, LONG_ARTICLE, max_input_length=30)
    assert len(ids) == 30
    assert ids[0] == bundle.tokenizer.bos_token_id
    assert ids[1:] == body[-29:]


def test_right_truncating_tokenizer_is_refused(download_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(download_dir / "tokenizer"), truncation_side="right")
    with pytest.raises(ValueError, match="truncation_side='left'"):
        encode_prompt(tok, LONG_ARTICLE, 20)


def test_tokenizer_pad_falls_back_to_eos(tokenizer_bundle):
    assert tokenizer_bundle.eos_id == 0  # the synthetic tokenizer's <|endoftext|>
    assert tokenizer_bundle.pad_id == tokenizer_bundle.eos_id
    assert tokenizer_bundle.tokenizer.padding_side == "left"


def test_missing_tokenizer_is_a_step_error(tmp_path):
    from mambapipe.pipeline.step import StepError

    with pytest.raises(StepError, match="cannot load the tokenizer"):
        load_tokenizer(tmp_path)
