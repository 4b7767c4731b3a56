from __future__ import annotations

import shutil

import pytest

from mambapipe.evaluate.prompts import FIX_LOCAL_TOKENIZER, build_prompt, encode_prompt, load_tokenizer
from mambapipe.pipeline.step import StepError
from mambapipe.steps.download import link_tree

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
    with pytest.raises(StepError, match="cannot load the tokenizer"):
        load_tokenizer(tmp_path)


def test_a_tokenizer_that_does_not_load_is_named_where_its_files_are_in_one_line(download_dir, tmp_path):
    """The download step links a local source's files into the cache: the user mends them in model.path, so the
    message names that directory, not the link's, and transformers' several-line reasons come out as one."""
    user_dir = shutil.copytree(download_dir / "tokenizer", tmp_path / "mine")
    (user_dir / "tokenizer.json").unlink()  # tokenizer_config.json alone: transformers explains over four lines
    link_tree(user_dir, tmp_path / "cache" / "tokenizer")
    with pytest.raises(StepError) as info:
        load_tokenizer(tmp_path / "cache" / "tokenizer", FIX_LOCAL_TOKENIZER)
    message = str(info.value)
    assert message.startswith(f"cannot load the tokenizer from {user_dir} (tokenizer_config.json): ")
    assert message.endswith(f"; {FIX_LOCAL_TOKENIZER}") and "\n" not in message and "cache" not in message
