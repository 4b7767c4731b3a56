"""Evaluation data: the bundled sample, cnn_dailymail from the hub, or a local .jsonl/.parquet file.

All three go through `datasets` and are shuffled with `Dataset.shuffle(seed=...)`, exactly as
TensorRT-LLM's summarize.py does, so the first `max_ite * batch_size` articles are the same ones.
The hub dataset is loaded at the commit the evaluate step pinned at plan time (`hub_commit`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Optional

from mambapipe import hub
from mambapipe.pipeline.step import StepError

INPUT_FIELD = "article"
REFERENCE_FIELD = "highlights"
LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_WITHOUT_HUB = ("set eval.dataset=sample (the bundled sample) or eval.dataset=/path/to/articles.jsonl (or "
                f".parquet) with {INPUT_FIELD!r} and {REFERENCE_FIELD!r} fields")


def sample_path() -> Path:
    """The bundled sample file (about 20 short news articles with highlights, written for mambapipe)."""
    return Path(str(resources.files("mambapipe.evaluate") / "data" / "sample.jsonl"))


def hub_commit(hub_id: str) -> str:
    """The commit of the dataset repo's main branch (from the local cache when offline), which the
    evaluate step hashes into its key and loads; a one-line StepError when it cannot be known."""
    return hub.resolve_commit(hub_id, None, "dataset", "eval.dataset_hub_id", _WITHOUT_HUB)


def load_articles(dataset: str, hub_id: str = "abisee/cnn_dailymail", hub_config: str = "3.0.0",
                  split: str = "test", seed: int = 0, revision: Optional[str] = None):
    """A shuffled `datasets.Dataset` with `article`, `highlights` and `id` columns.

    `dataset` is "sample", "cnn_dailymail" (loaded from `hub_id`/`hub_config`/`split` at commit `revision`,
    None = the main branch) or a local path."""
    if dataset == "sample":
        articles = _load_local(sample_path())
    elif dataset == "cnn_dailymail":
        articles = _load_hub(hub_id, hub_config, split, revision)
    else:
        articles = _load_local(Path(dataset).expanduser())
    _check_fields(articles, dataset)
    if "id" not in articles.column_names:
        articles = articles.add_column("id", [str(i) for i in range(len(articles))])
    return articles.shuffle(seed=seed)


def require_datasets():
    """`datasets.load_dataset`, or a one-line error when the install cannot import it (the evaluate step's plan
    check calls this, so a broken install stops the run before its first step)."""
    try:
        from datasets import load_dataset
    except ImportError as err:
        raise StepError(f"the summarize task cannot import datasets ({err}); repair the install with "
                        "pip install -e .") from err
    return load_dataset


def local_builder(path: Path) -> str:
    """The `datasets` builder of a local articles file, or a one-line error naming what is wrong with it (the
    evaluate step's plan check and the loader share it)."""
    builder = LOCAL_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise StepError(f"eval.dataset={str(path)!r} is not sample, cnn_dailymail or a .jsonl/.parquet file; "
                        "pass one of those")
    if not path.is_file():
        raise StepError(f"eval.dataset file {str(path)!r} does not exist; check the path")
    return builder


def _load_local(path: Path):
    load_dataset = require_datasets()
    return load_dataset(local_builder(path), data_files=str(path), split="train")


def _load_hub(hub_id: str, hub_config: str, split: str, revision: Optional[str]):
    load_dataset = require_datasets()
    try:
        return load_dataset(hub_id, hub_config, split=split, revision=revision)
    except RuntimeError as exc:
        if "scripts are no longer supported" not in str(exc):
            raise
        raise StepError(f"dataset {hub_id!r} is a loading script, which the installed datasets cannot run; set "
                        "eval.dataset_hub_id=abisee/cnn_dailymail (parquet) or a local .jsonl/.parquet") from exc
    except Exception as exc:  # offline, gated or renamed: datasets raises many unrelated types
        raise StepError(
            f"could not load dataset {hub_id!r} ({hub_config}, split {split}): {type(exc).__name__}; "
            "check the network or eval.dataset_hub_id, or set eval.dataset to a local .jsonl/.parquet file "
            f"with {INPUT_FIELD!r} and {REFERENCE_FIELD!r} fields") from exc


def _check_fields(articles, dataset: str) -> None:
    missing = [f for f in (INPUT_FIELD, REFERENCE_FIELD) if f not in articles.column_names]
    if missing:
        raise StepError(f"eval.dataset {dataset!r} lacks field(s) {missing} (has {articles.column_names}); "
                        f"each record needs {INPUT_FIELD!r} and {REFERENCE_FIELD!r}")
    if len(articles) == 0:
        raise StepError(f"eval.dataset {dataset!r} has no records; point it at a non-empty file")
