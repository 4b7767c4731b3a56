from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
from rouge_score import rouge_scorer, scoring

from mambapipe.evaluate.rouge import ROUGE_TYPES, rouge_scores
from mambapipe.pipeline.step import StepError

PREDICTIONS = [
    "the council closed the old bridge after engineers found cracks",
    "orcas hunt herring off norway with new calls",
    "bread prices rose by a fifth in a year as harvests failed",
    "a cat came home after three years away",
    "shares fell sharply after a profit warning",
]
REFERENCES = [
    "Council closes old stone bridge to cars.\nEngineers found cracks in two arches.",
    "Orcas hunt herring cooperatively off northern Norway.\nThey use new calls.",
    "Bread prices rose more than 20 percent in a year.\nPoor harvests pushed up costs.",
    "Cat Biscuit is reunited with her family.\nA microchip identified her.",
    "Bellamy Foods shares fell 14 percent.\nCocoa and sugar costs hit profits.",
]


def _direct(predictions, references, seed=0, bound="mid"):
    """What evaluate's rouge metric does with its defaults, written out with rouge-score (its result's mid; or the
    low or high of the same aggregation)."""
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False)
    aggregator = scoring.BootstrapAggregator()
    for p, r in zip(predictions, references):
        aggregator.add_scores(scorer.score(r, p))
    np.random.seed(seed)
    result = aggregator.aggregate()
    return {k: getattr(result[k], bound).fmeasure * 100 for k in ROUGE_TYPES}


def test_matches_rouge_score_bootstrap_mid_with_seed_0():
    ours = rouge_scores(PREDICTIONS, REFERENCES)
    assert {k: ours[k] for k in ROUGE_TYPES} == pytest.approx(_direct(PREDICTIONS, REFERENCES, seed=0), abs=1e-12)
    assert set(ours) == {*ROUGE_TYPES, *(f"{k}_{bound}" for k in ROUGE_TYPES for bound in ("low", "high"))}


def test_the_interval_is_the_same_bootstraps_low_and_high_around_its_mid():
    """The 95% interval comes from the one aggregation that gives the mid, so keeping it leaves the mid as it was."""
    ours = rouge_scores(PREDICTIONS, REFERENCES)
    for bound in ("low", "high"):
        direct = _direct(PREDICTIONS, REFERENCES, seed=0, bound=bound)
        assert {k: ours[f"{k}_{bound}"] for k in ROUGE_TYPES} == pytest.approx(direct, abs=1e-12)
    assert all(ours[f"{k}_low"] <= ours[k] <= ours[f"{k}_high"] for k in ROUGE_TYPES)
    assert ours["rouge1_low"] < ours["rouge1_high"]  # five different pairs: a bootstrap of some width


def test_bootstrap_mid_is_not_the_plain_mean():
    """The seed matters: the mid of bootstrap resamples differs from the plain mean of F-measures."""
    scorer = rouge_scorer.RougeScorer(["rouge2"], use_stemmer=False)
    mean = np.mean([scorer.score(r, p)["rouge2"].fmeasure for p, r in zip(PREDICTIONS, REFERENCES)]) * 100
    assert rouge_scores(PREDICTIONS, REFERENCES)["rouge2"] != pytest.approx(mean, abs=1e-9)


def test_hand_computed_single_pair():
    scores = rouge_scores(["the cat sat on the mat"], ["the cat lay on the mat"])
    # 5 of 6 unigrams and 3 of 5 bigrams match; the LCS is 5 tokens long.
    assert scores["rouge1"] == pytest.approx(500 / 6)
    assert scores["rouge2"] == pytest.approx(60.0)
    assert scores["rougeL"] == pytest.approx(500 / 6)


def test_rougelsum_splits_references_on_newlines():
    """Highlights are passed unchanged, so rougeLsum sees their lines as sentences (rougeL does not)."""
    prediction = ["engineers found cracks the council closed the bridge"]
    lines = rouge_scores(prediction, ["the council closed the bridge\nengineers found cracks"])
    one_line = rouge_scores(prediction, ["the council closed the bridge engineers found cracks"])
    assert lines["rougeL"] == pytest.approx(one_line["rougeL"])
    assert lines["rougeLsum"] > one_line["rougeLsum"]
    assert lines["rougeLsum"] == pytest.approx(100.0)


def test_global_numpy_rng_is_left_untouched():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    rouge_scores(PREDICTIONS, REFERENCES)
    assert np.random.rand() == expected


def test_rejects_mismatched_or_empty_inputs():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one"):
        rouge_scores([], [])


def test_an_install_that_cannot_import_rouge_score_is_a_one_line_step_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "rouge_score", None)  # e.g. nltk missing one of its own dependencies
    with pytest.raises(StepError, match=r"cannot import rouge-score .*pip install -e \.") as err:
        rouge_scores(PREDICTIONS, REFERENCES)
    assert "\n" not in str(err.value)


def test_scoring_keeps_rouge_scores_info_line_out_of_the_run_output(caplog):
    level = logging.getLogger("absl").level
    with caplog.at_level(logging.INFO):
        rouge_scores(PREDICTIONS, REFERENCES)
    assert [r.getMessage() for r in caplog.records if r.name == "absl"] == []
    assert logging.getLogger("absl").level == level
