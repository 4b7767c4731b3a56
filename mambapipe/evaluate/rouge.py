"""ROUGE exactly as the `evaluate` library's "rouge" metric computes it with its defaults.

summarize.py scores with `evaluate.load("rouge").compute()`, which fetches the metric's code from the
hub at run time. Its defaults are reproduced here with `rouge-score` directly: rouge1/2/L/Lsum, the
default tokenizer, no stemmer, a `BootstrapAggregator` and its mid F-measure, with numpy's global RNG
seeded to 0 just before aggregating (summarize.py calls `np.random.seed(0)` there). Texts are passed
unchanged: rougeLsum's summary-level LCS splits on "\\n" inside rouge-score, so the newline-separated
highlights count as sentences and the single-line predictions as one. The same aggregation gives the
bootstrap's 95% interval (its low and high), kept beside the mid value it leaves unchanged.
"""

from __future__ import annotations

import logging
from typing import Sequence

from mambapipe import interrupts
from mambapipe.pipeline.step import StepError

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
BOOTSTRAP_SEED = 0
# rouge-score's BootstrapAggregator defaults, which evaluate's metric takes; named so that ROUGE_VARIANT states them
BOOTSTRAP_CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 1000
BOUNDS = ("low", "high")
# metrics.json's `rouge_variant`: which ROUGE its numbers are, as scores of other tools may be another
ROUGE_VARIANT = (f"F-measure x 100, bootstrap mid of {BOOTSTRAP_RESAMPLES} resamples (numpy seed {BOOTSTRAP_SEED}; "
                 f"<type>_low/_high: its {BOOTSTRAP_CONFIDENCE:.0%} interval), rouge-score's default tokenizer, no "
                 "stemmer, rougeLsum over newline-split sentences: the evaluate library's rouge defaults, as "
                 "TensorRT-LLM's summarize.py scores")


def require_scorer():
    """rouge-score's `rouge_scorer` and `scoring` modules. The evaluate step's plan check calls this, so an
    install that cannot score (rouge-score imports nltk, which imports packages of its own) stops the run with
    one line before its first step, not with a traceback after the whole generation."""
    try:
        with interrupts.deferred():  # rouge-score brings nltk, scipy and numpy: imported whole or not at all
            from rouge_score import rouge_scorer, scoring
    except ImportError as err:
        raise StepError(f"the summarize task cannot import rouge-score ({err}); repair the install with "
                        "pip install -e . (rouge-score and nltk with their dependencies)") from err
    return rouge_scorer, scoring


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """{rouge type: bootstrap mid F-measure x 100} over the (prediction, reference) pairs, then the bounds of its
    interval: {`rouge1_low`: ..., `rouge1_high`: ..., ...}."""
    rouge_scorer, scoring = require_scorer()
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("ROUGE needs at least one prediction")
    absl_log = logging.getLogger("absl")  # the scorer logs "Using default tokenizer." at INFO into the run's output
    level = absl_log.level
    absl_log.setLevel(logging.WARNING)
    try:
        scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False)
    finally:
        absl_log.setLevel(level)
    aggregator = scoring.BootstrapAggregator(confidence_interval=BOOTSTRAP_CONFIDENCE, n_samples=BOOTSTRAP_RESAMPLES)
    for prediction, reference in zip(predictions, references):
        aggregator.add_scores(scorer.score(reference, prediction))  # score(target, prediction)
    # The bootstrap samples with numpy's global RNG; seed it as summarize.py does, then put the caller's
    # RNG state back so scoring has no side effects. Imported here, where rouge-score has imported it: the evaluate
    # step's plan imports this module for require_scorer, and a plan that runs no scoring need not wait for numpy.
    import numpy as np

    saved = np.random.get_state()
    np.random.seed(BOOTSTRAP_SEED)
    try:
        aggregate = aggregator.aggregate()
    finally:
        np.random.set_state(saved)
    scores = {name: float(aggregate[name].mid.fmeasure * 100) for name in ROUGE_TYPES}
    for name in ROUGE_TYPES:
        scores.update({f"{name}_{bound}": float(getattr(aggregate[name], bound).fmeasure * 100) for bound in BOUNDS})
    return scores
