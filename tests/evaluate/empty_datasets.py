"""Local dataset files that hold no record, in each form a user may give one: the loader and the plan's check must
refuse every one of them (tests/evaluate/test_eval_data.py, test_eval_step.py)."""

from __future__ import annotations

from pathlib import Path


def _empty_parquet(path: Path) -> None:
    import pandas as pd

    pd.DataFrame({"article": pd.Series([], dtype=str), "highlights": pd.Series([], dtype=str)}).to_parquet(path)


EMPTY_DATASETS = [
    ("empty.jsonl", lambda path: path.write_text("")),
    ("blank.jsonl", lambda path: path.write_text("\n  \n\n")),
    ("empty.json", lambda path: path.write_text(" [\n ]\n")),
    ("empty.parquet", _empty_parquet),
]
