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
    assert headline(METRICS).startswith("rouge1 76.92, rouge2 5.00, rougeL 0.00, rougeLsum 10.46")


def test_the_other_rows_keep_their_precision():
    table = cells(METRICS)
    assert {label: table[label][0] for label in ("samples", "tokens/s", "TTFT ms", "decode ms/step", "peak MiB")} == {
        "samples": "4", "tokens/s": "2264.1", "TTFT ms": "2.824", "decode ms/step": "0.276", "peak MiB": "612.3"}
    assert table["samples"][1] == "-"  # HF's metrics hold ROUGE only


def test_the_benchmark_headline_counts_the_scenarios_the_engine_skipped():
    rows = [{"tokens_per_s": 51.25}, {"tokens_per_s": None, "skipped": "batch 8 > max_batch_size 2"}]
    assert headline({"task": "benchmark", "rows": rows}) == "2 scenarios (1 skipped), best 51.2 tok/s"
    assert headline({"task": "benchmark", "rows": rows[:1]}) == "1 scenario, best 51.2 tok/s"


def test_the_report_goes_to_standard_output_with_its_notes_as_whole_lines(capsys):
    """`python -m mambapipe > out.txt` keeps the results, as it keeps the run summary; the notes are not wrapped
    to the table's width."""
    from mambapipe.evaluate.report import print_report

    meaning = "the process's resident set (ru_maxrss), not the engine's share: it includes the Python runtime"
    print_report(METRICS | {"peak_memory": meaning})
    out, err = capsys.readouterr()
    assert "ROUGE-1" in out and err == ""
    assert f"peak MiB: {meaning}" in out.splitlines() and "identical output tokens: 50.0%" in out.splitlines()
