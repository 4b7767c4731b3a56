"""Keeping Hugging Face tokens and other credentials out of what mambapipe prints, logs and records.

mambapipe never writes a token itself, but it shows text it did not write: exception messages and library log lines.
Those carry URLs, and an HF_ENDPOINT mirror's `user:password@` is in every one huggingface_hub's HTTP errors quote and
httpx logs at INFO; a proxy or a library may echo a header or the token. `redact` masks them where such text becomes a
message (first_line, StepError), where a line is printed on standard error (print_diagnostic), in the commands a run or
a sweep prints and records, in every log record (RedactingFormatter) and in each line the ranks of a tensor-parallel
evaluation print.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Optional

MASK = "***"
TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")  # what huggingface_hub sends, before its stored token
_SHORTEST_TOKEN = 8  # a shorter value ("1", "test") would mask ordinary words in every line; no real token is one
# Credentials by their shape, whatever their value, each with a piece of text it cannot match without (a line without
# it skips the pattern, as most do: 0.1 us, not 2-5): a URL's user:password@ (or token@), an Authorization header's
# value (Bearer, Basic or other), a bearer token elsewhere, and a token of the Hugging Face shape (hf_ and 34 letters
# and digits, 30 or more taken for one; mambapipe's own hf_ names, hf_mamba2 or hf_token_agreement, are short or hold
# underscores).
_SHAPES = (
    ("@", re.compile(r"://[^\s/?#@]+@"), f"://{MASK}@"),
    ("uthorization", re.compile(r"(\b[Aa]uthorization['\"]?\s*[:=]\s*['\"]?)(?:(?:[Bb]earer|[Bb]asic|[Tt]oken)\s+)?"
                                r"[^\s'\",;]+"), rf"\g<1>{MASK}"),
    ("earer", re.compile(r"(\b[Bb]earer\s+)[^\s'\",;]+"), rf"\g<1>{MASK}"),
    ("hf_", re.compile(r"\bhf_[A-Za-z0-9]{30,}"), MASK),
)


def redact(text: str) -> str:
    """`text` with the Hugging Face token values this process knows (HF_TOKEN, HUGGING_FACE_HUB_TOKEN, the stored
    one) and anything shaped as a credential replaced by ***; masking twice changes nothing more."""
    for token in _token_values():
        text = text.replace(token, MASK)
    for needed, pattern, replacement in _SHAPES:
        if needed in text:
            text = pattern.sub(replacement, text)
    return text


def _token_values() -> set[str]:
    values = {os.environ.get(name, "").strip() for name in TOKEN_VARIABLES} | {_stored_token() or ""}
    return {value for value in values if len(value) >= _SHORTEST_TOKEN}


def _stored_token() -> Optional[str]:
    """The token `hf auth login` stored (huggingface_hub's HF_TOKEN_PATH), where huggingface_hub is imported: only what
    imported it can have sent it, and importing it (~90 ms) would slow every one-line error of a run that never asks
    the hub. Read from the file, not huggingface_hub.get_token(), which may exchange an OIDC token or refresh an OAuth
    one over the network."""
    constants = sys.modules.get("huggingface_hub.constants")
    try:
        return Path(constants.HF_TOKEN_PATH).read_text().strip() if constants else None
    except (AttributeError, OSError, UnicodeDecodeError):  # none stored (or unreadable): nothing to mask
        return None


class RedactingFormatter(logging.Formatter):
    """logging.Formatter, with each record as formatted (its traceback too) redacted: library records (httpx's request
    lines) and crash tracebacks hold text mambapipe did not write. configs/hydra/*_logging/mambapipe.yaml select it, and
    mambapipe.sweep.child for a sweep job's process."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
