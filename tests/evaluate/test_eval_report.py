"""The table an evaluation prints: ROUGE at the precision of the run summary's headline, whatever its size."""

from __future__ import annotations

import io

from rich.console import Console

from mambapipe.evaluate.report import summarize_table
from mambapipe.pipeline.report import headline

METRICS = {"task": "summarize", "dataset": "sample", "backend": "native", "rouge1": 76.923, "rouge2": 5.0,
           "rougeL": 0.0, "rougeLsum": 10.456, "samples": 4, "output_tokens": 64, "tokens_per_s": 2264.12,
           "ttft_ms": 2.8243, "decode_ms_per_step": 0.2761, "peak_memory_mb": 612.34,
           "hf": {"rouge1": 80.0, "rouge2": 0.5, "rougeL": 12.0, "rougeLsum": 9.999}, "hf_token_agreement": 0.5}


def cells(metrics) -> dict[str, list[str]]:
    console = Console(file=io.StringIO(), width=200)
    console.print(summarize_table(metrics))
    rows = [line.strip("│ ").split("│") for line in console.file.getvalue().splitlines() if line.startswith("│")]
    return {row[0].strip(): [cell.strip() for cell in row[1:]] for row in rows}


def test_rouge_scores_print_with_the_summary_headlines_decimals():
    table = cells(METRICS)
    assert [table[label] for label in ("ROUGE-1", "ROUGE-2", "ROUGE-L", "ROUGE-Lsum")] == [
        ["76.92", "80.00"], ["5.00", "0.50"], ["0.00", "12.00"], ["10.46", "10.00"]]
    assert headline(METRICS)[0] == "rouge1 76.92, rouge2 5.00, rougeL 0.00, rougeLsum 10.46"


def test_the_other_rows_keep_their_precision():
    table = cells(METRICS)
    assert {label: table[label][0] for label in ("samples", "tokens/s", "TTFT ms", "decode ms/step", "peak MiB")} == {
        "samples": "4", "tokens/s": "2264.1", "TTFT ms": "2.824", "decode ms/step": "0.276", "peak MiB": "612.3"}
    assert table["samples"][1] == "-"  # HF's metrics hold ROUGE only


def test_the_benchmark_headline_counts_the_scenarios_the_engine_skipped():
    rows = [{"tokens_per_s": 51.25}, {"tokens_per_s": None, "skipped": "batch 8 > max_batch_size 2"}]
    assert headline({"task": "benchmark", "rows": rows}) == ["2 scenarios (1 skipped), best 51.2 tok/s"]
    assert headline({"task": "benchmark", "rows": rows[:1]}) == ["1 scenario, best 51.2 tok/s"]


def test_the_report_goes_to_standard_output_with_its_notes_as_whole_lines(capsys):
    """`python -m mambapipe > out.txt` keeps the results, as it keeps the run summary; the notes are not wrapped
    to the table's width."""
    from mambapipe.evaluate.report import print_report

    meaning = "the process's resident set (ru_maxrss), not the engine's share: it includes the Python runtime"
    print_report(METRICS | {"peak_memory": meaning})
    out, err = capsys.readouterr()
    assert "ROUGE-1" in out and err == ""
    assert f"peak MiB: {meaning}" in out.splitlines() and "identical output tokens: 50.0%" in out.splitlines()


INTERVALS = {"rouge1_low": 70.1, "rouge1_high": 83.456, "rouge2_low": 1.0, "rouge2_high": 9.0, "rougeL_low": 0.0,
             "rougeL_high": 0.0, "rougeLsum_low": 8.0, "rougeLsum_high": 12.0}
SAMPLE_PROTOCOL = {"dataset": "sample", "sha256": "9f" * 32, "samples": 4, "batch_size": 2, "max_ite": 2,
                   "max_input_length": 64, "output_len": 8, "seed": 0, "dtype": "float32"}


def test_the_headline_gives_rouge1s_interval_and_the_articles_it_scored():
    """eval.batch_size changes how many articles eval.max_ite batches hold: the summary line says how many, and of
    which dataset, where numbers are compared."""
    metrics = METRICS | INTERVALS | {"protocol": SAMPLE_PROTOCOL}
    assert headline(metrics) == ["rouge1 76.92 [70.10-83.46], rouge2 5.00, rougeL 0.00, rougeLsum 10.46",
                                 "tok/s 2264.12; 4 articles of sample"]
    hub = {"dataset": "cnn_dailymail", "hub_id": "abisee/cnn_dailymail", "config": "3.0.0", "split": "test",
           "commit": "0123456789abcdef" * 2 + "01234567", "samples": 1}
    scored = headline(metrics | {"protocol": hub, "samples": 1})[1]
    assert scored == "tok/s 2264.12; 1 article of cnn_dailymail@0123456789ab"
    # A metrics.json from before the interval and the protocol were kept: its dataset's name, no interval.
    assert headline(METRICS) == ["rouge1 76.92, rouge2 5.00, rougeL 0.00, rougeLsum 10.46",
                                 "tok/s 2264.12; 4 articles of sample"]
    assert headline({"task": "summarize", "dataset": "sample", "samples": 4}) == ["4 articles of sample"]


def test_the_run_summary_shows_a_real_runs_headline_without_folding_at_120_columns():
    """Users paste the summary: a cnn_dailymail run's headline (two-digit scores, the dataset's commit) is whole
    lines of it at 120 columns, not a table cell folded onto a second line; at 80 nothing of it is cut."""
    from types import SimpleNamespace

    from mambapipe.pipeline.report import print_summary

    hub = {"dataset": "cnn_dailymail", "commit": "0123456789ab" * 3}
    metrics = {**METRICS, **INTERVALS, "rouge1": 19.3, "rouge2": 16.12, "rougeL": 15.2, "rougeLsum": 17.8,
               "tokens_per_s": 318.19, "samples": 20, "protocol": hub}
    outcomes = [SimpleNamespace(name=name, key="ab" * 32, status="cached", seconds=1234.5, gate_missed=False)
                for name in ("download", "convert", "build", "evaluate")]
    for width in (120, 80):
        console = Console(file=io.StringIO(), width=width)
        print_summary(console, outcomes, metrics, None, {"finished": "2026-12-01T05:00:00+00:00"})
        lines = console.file.getvalue().splitlines()
        assert "result   rouge1 19.30 [70.10-83.46], rouge2 16.12, rougeL 15.20, rougeLsum 17.80" in lines
        assert "         tok/s 318.19; 20 articles of cnn_dailymail@0123456789ab" in lines
        assert max(len(line.rstrip()) for line in lines) <= width


def test_the_dataset_is_named_by_what_pins_its_articles():
    from mambapipe.evaluate.protocol import dataset_label

    summarize = {"task": "summarize"}
    assert dataset_label(summarize | {"protocol": SAMPLE_PROTOCOL}) == "sample"  # the sample comes with the code
    local = SAMPLE_PROTOCOL | {"dataset": "/data/articles.jsonl", "sha256": "9f8e7d6c5b4a" + "0" * 52}
    assert dataset_label(summarize | {"protocol": local}) == "/data/articles.jsonl@9f8e7d6c5b4a"
    assert dataset_label(summarize | {"dataset": "cnn_dailymail"}) == "cnn_dailymail"  # no protocol recorded
    assert dataset_label(summarize) is None and dataset_label({"task": "benchmark", "rows": []}) is None


def test_the_protocol_holds_the_hub_datasets_settings_only_for_the_hub_dataset():
    from mambapipe.evaluate.protocol import summarize_protocol

    params = {"eval.dataset": "cnn_dailymail", "eval.dataset_hub_id": "abisee/cnn_dailymail",
              "eval.dataset_config": "3.0.0", "eval.dataset_split": "test", "eval.batch_size": 8, "eval.max_ite": 20,
              "eval.max_input_length": 923, "eval.output_len": 100, "eval.random_seed": 0}
    assert summarize_protocol(params, 160, "float16", "c" * 40, None) == {
        "dataset": "cnn_dailymail", "hub_id": "abisee/cnn_dailymail", "config": "3.0.0", "split": "test",
        "commit": "c" * 40, "samples": 160, "batch_size": 8, "max_ite": 20, "max_input_length": 923,
        "output_len": 100, "seed": 0, "dtype": "float16"}
    sample = summarize_protocol(params | {"eval.dataset": "sample"}, 20, "float16", None, "d" * 64)
    assert sample["sha256"] == "d" * 64 and not {"hub_id", "config", "split", "commit"} & set(sample)


def test_the_table_shows_each_scores_interval_and_names_the_rouge_and_the_articles():
    from mambapipe.evaluate.report import report_notes
    from mambapipe.evaluate.rouge import ROUGE_VARIANT

    metrics = METRICS | INTERVALS | {"protocol": SAMPLE_PROTOCOL, "rouge_variant": ROUGE_VARIANT,
                                     "hf": METRICS["hf"] | {"rouge1_low": 75.0, "rouge1_high": 85.0}}
    table = cells(metrics)
    assert table["ROUGE-1"] == ["76.92 [70.10-83.46]", "80.00 [75.00-85.00]"]
    assert table["ROUGE-2"] == ["5.00 [1.00-9.00]", "0.50"]
    assert summarize_table(metrics).title == "summarize: sample, 4 articles"
    assert summarize_table(metrics | {"samples": 1}).title == "summarize: sample, 1 article"  # as the summary says
    assert f"ROUGE: {ROUGE_VARIANT}" in report_notes(metrics | {"peak_memory": "x"})


def test_the_rouge_variant_states_the_scorers_settings():
    """What metrics.json's rouge_variant says must be what rouge.py computes: evaluate's defaults."""
    import inspect

    from rouge_score import scoring

    from mambapipe.evaluate import rouge

    defaults = inspect.signature(scoring.BootstrapAggregator).parameters
    assert (defaults["confidence_interval"].default, defaults["n_samples"].default) == (
        rouge.BOOTSTRAP_CONFIDENCE, rouge.BOOTSTRAP_RESAMPLES)
    for fact in ("F-measure x 100", "bootstrap mid of 1000 resamples", "numpy seed 0", "95% interval", "no stemmer",
                 "rougeLsum over newline-split sentences", "evaluate library's rouge defaults"):
        assert fact in rouge.ROUGE_VARIANT, fact
