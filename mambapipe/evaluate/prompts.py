"""summarize.py's prompt: the article, ' TL;DR: ', stripped, CNN-style " n't" joined, left-truncated."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from mambapipe.pipeline.step import StepError

PROMPT_SUFFIX = " TL;DR: "


@dataclass(frozen=True)
class TokenizerBundle:
    tokenizer: Any  # a transformers PreTrainedTokenizer(Fast)
    eos_id: Optional[int]
    pad_id: Optional[int]


def build_prompt(article: str) -> str:
    # strip() leaves the prompt ending in " TL;DR:"; CNN text writes "did n't", which we join back.
    return (article + PROMPT_SUFFIX).strip().replace(" n't", "n't")


def load_tokenizer(tokenizer_dir: Path) -> TokenizerBundle:
    """The tokenizer as summarize.py loads it: left padding and left truncation, pad falls back to eos."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), padding_side="left",
                                                  truncation_side="left", trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise StepError(f"cannot load the tokenizer in {tokenizer_dir}: {exc}; re-run the download step "
                        "(force=[download])") from exc
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    return TokenizerBundle(tokenizer, eos_id, pad_id)


def encode_prompt(tokenizer: Any, article: str, max_input_length: int) -> list[int]:
    """Token ids of the prompt with special tokens; when too long, the *first* tokens are dropped so the
    article's end and the trailing "TL;DR:" survive."""
    if tokenizer.truncation_side != "left":
        raise ValueError("load the tokenizer with truncation_side='left' (see load_tokenizer)")
    return list(tokenizer.encode(build_prompt(article), add_special_tokens=True, truncation=True,
                                 max_length=max_input_length))
