"""What produced a summarize task's scores, as metrics.json's `protocol` records it and the reports name it: the
articles (the dataset, pinned by its hub commit or by its file's contents), how many, how they were cut and how
generated; and how the reports print a score's interval. Two scores compare only where the protocols agree:
eval.max_ite counts batches, so eval.batch_size alone changes how many articles (and which) are scored. Kept free of
torch, numpy and rich: the run's and the sweep's summaries read it."""

from __future__ import annotations

from typing import Any, Optional

from mambapipe.evaluate import SUMMARIZE_TASK
from mambapipe.pipeline.keys import short

# ×100 scores, printed as the run summary's headline prints them (pipeline/report.py), so the two tables agree
ROUGE_DECIMALS = 2
# The protocol's entries for the hub dataset, from the keys the evaluate step declares for eval.dataset=cnn_dailymail
HUB_ENTRIES = {"hub_id": "eval.dataset_hub_id", "config": "eval.dataset_config", "split": "eval.dataset_split"}
SETTING_ENTRIES = {"batch_size": "eval.batch_size", "max_ite": "eval.max_ite",
                   "max_input_length": "eval.max_input_length", "output_len": "eval.output_len",
                   "seed": "eval.random_seed"}


def summarize_protocol(params: dict[str, Any], samples: int, dtype: str, dataset_commit: Optional[str],
                       dataset_sha256: Optional[str]) -> dict[str, Any]:
    """The settings behind a summarize task's numbers: of `params`, the keys the evaluate step declares; the pin of
    the dataset that the plan hashed into the step's key (the hub commit, or the sha256 of the bundled sample's or a
    local file's contents); the count of articles scored (fewer than batch_size x max_ite where the dataset holds
    fewer); the dtype the engine ran in."""
    dataset = params["eval.dataset"]
    hub = {entry: params[key] for entry, key in HUB_ENTRIES.items()} if dataset == "cnn_dailymail" else {}
    pin = {"commit": dataset_commit} if dataset_commit else {"sha256": dataset_sha256} if dataset_sha256 else {}
    return {"dataset": dataset, **hub, **pin, "samples": samples,
            **{entry: params[key] for entry, key in SETTING_ENTRIES.items()}, "dtype": dtype}


def dataset_label(metrics: dict[str, Any]) -> Optional[str]:
    """Which articles a summarize run scored, in a few characters: `sample`, `cnn_dailymail@1a2b3c4d5e6f` (the hub
    commit) or `/data/articles.jsonl@9f8e7d6c5b4a` (the file's contents); the dataset's name alone in a metrics.json
    from before the protocol was recorded; None for a benchmark or where metrics.json names no dataset. The bundled
    sample goes by its name: it comes with the code."""
    if metrics.get("task") != SUMMARIZE_TASK:
        return None
    protocol = metrics.get("protocol") if isinstance(metrics.get("protocol"), dict) else {}
    name = protocol.get("dataset", metrics.get("dataset"))
    if name is None:
        return None
    pin = protocol.get("commit") or (protocol.get("sha256") if name != "sample" else None)
    return f"{name}@{short(str(pin))}" if pin else str(name)


def articles(count: int) -> str:
    """`1 article`, `20 articles`: how many a summarize run scored."""
    return f"{count} article{'s' * (count != 1)}"


def rouge_interval(scores: dict[str, Any], key: str) -> str:
    """` [16.84-21.93]`: the bootstrap's 95% interval of the ROUGE score `key` of `scores` (metrics.json's, or its
    `hf` block), at the scores' precision; '' where it has none (a metrics.json from before it was kept)."""
    low, high = scores.get(f"{key}_low"), scores.get(f"{key}_high")
    if not isinstance(low, (int, float)) or not isinstance(high, (int, float)):
        return ""
    return f" [{low:.{ROUGE_DECIMALS}f}-{high:.{ROUGE_DECIMALS}f}]"
