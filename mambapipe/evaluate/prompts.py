"""summarize.py's prompt: the article, ' TL;DR: ', stripped, CNN-style " n't" joined, left-truncated."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from mambapipe.pipeline.step import StepError

PROMPT_SUFFIX = " TL;DR: "
REDOWNLOAD = "re-run the download step (force=[download])"
# The files of model.source=local are the user's own: downloading again links the same ones.
FIX_LOCAL_TOKENIZER = "fix those files, or set model.tokenizer to a tokenizer directory or hub id"


@dataclass(frozen=True)
class TokenizerBundle:
    tokenizer: Any  # a transformers PreTrainedTokenizer(Fast)
    eos_id: Optional[int]
    pad_id: Optional[int]


def build_prompt(article: str) -> str:
    # strip() leaves the prompt ending in " TL;DR:"; CNN text writes "did n't", which we join back.
    return (article + PROMPT_SUFFIX).strip().replace(" n't", "n't")


def load_tokenizer(tokenizer_dir: Path, fix: str = REDOWNLOAD) -> TokenizerBundle:
    """The tokenizer as summarize.py loads it: left padding and left truncation, pad falls back to eos. `fix` says
    how to mend files that do not load, which depends on where the download step took them from."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), padding_side="left",
                                                  truncation_side="left", trust_remote_code=False)
    except Exception as exc:  # JSON, OSError, ValueError, a config.json torch cannot read ...: all the files' fault
        reason = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__  # transformers' run over several lines
        raise StepError(f"cannot load the tokenizer from {tokenizer_files(tokenizer_dir)}: {reason}; {fix}") from exc
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    return TokenizerBundle(tokenizer, eos_id, pad_id)


def tokenizer_files(tokenizer_dir: Path) -> str:
    """The tokenizer's files where they really are, by directory: the download step links them from model.path,
    model.tokenizer or the hub cache, and a user mends the file there, not its link in the cache."""
    files = sorted(path.resolve() for path in Path(tokenizer_dir).glob("*"))
    by_directory: dict[Path, list[str]] = {}
    for path in files:
        by_directory.setdefault(path.parent, []).append(path.name)
    return " and ".join(f"{d} ({', '.join(names)})" for d, names in by_directory.items()) or str(tokenizer_dir)


def encode_prompt(tokenizer: Any, article: str, max_input_length: int) -> list[int]:
    """Token ids of the prompt with special tokens; when too long, the *first* tokens are dropped so the
    article's end and the trailing "TL;DR:" survive."""
    if tokenizer.truncation_side != "left":
        raise ValueError("load the tokenizer with truncation_side='left' (see load_tokenizer)")
    return list(tokenizer.encode(build_prompt(article), add_special_tokens=True, truncation=True,
                                 max_length=max_input_length))
