from __future__ import annotations

import errno
import json
import os
import re
import sys

import pytest
from empty_datasets import EMPTY_DATASETS

from mambapipe.evaluate.data import load_articles, local_dataset_sha256, sample_path
from mambapipe.pipeline.step import StepError


def _records():
    return [json.loads(line) for line in sample_path().read_text().splitlines() if line.strip()]


def test_bundled_sample_is_news_style():
    records = _records()
    assert 18 <= len(records) <= 24
    assert len({r["id"] for r in records}) == len(records)
    for r in records:
        assert 120 <= len(r["article"].split()) <= 250, r["id"]
        assert 2 <= len(r["highlights"].split("\n")) <= 4, r["id"]
    assert sum(" n't" in r["article"] for r in records) >= 3  # CNN-style contractions for the fix


def test_sample_is_shuffled_like_datasets_with_seed_0():
    from datasets import Dataset

    expected = Dataset.from_list(_records()).shuffle(seed=0)["id"]
    articles = load_articles("sample", seed=0)
    assert articles["id"] == expected
    assert articles["id"] != [r["id"] for r in _records()]
    assert load_articles("sample", seed=1)["id"] != expected


def test_local_jsonl_json_array_and_parquet_load_in_the_same_order(tmp_path):
    import pandas as pd

    rows = [{"article": f"Article number {i}.", "highlights": f"Number {i}."} for i in range(12)]
    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    json_array = tmp_path / "mine.json"
    json_array.write_text(json.dumps(rows, indent=2))
    parquet = tmp_path / "mine.parquet"
    pd.DataFrame(rows).to_parquet(parquet)
    from_jsonl, from_parquet = load_articles(str(jsonl)), load_articles(str(parquet))
    assert from_jsonl["article"] == from_parquet["article"] == load_articles(str(json_array))["article"]
    assert sorted(from_jsonl["id"], key=int) == [str(i) for i in range(12)]  # ids made from row numbers
    assert from_jsonl[0]["highlights"] == from_jsonl[0]["article"].replace("Article number", "Number")


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_local_file_changed_after_the_plan_hashed_it_is_refused(tmp_path, suffix):
    """Its scores would be cached under the old contents' key."""
    import pandas as pd

    path = tmp_path / f"mine{suffix}"

    def write(rows: int) -> None:
        frame = pd.DataFrame([{"article": f"Article {i}.", "highlights": f"A {i}."} for i in range(rows)])
        frame.to_parquet(path) if suffix == ".parquet" else frame.to_json(path, orient="records", lines=True)

    write(3)
    planned = local_dataset_sha256(path)
    assert len(load_articles(str(path), sha256=planned)) == 3
    write(4)
    with pytest.raises(StepError, match=rf"^eval.dataset '{re.escape(str(path))}' changed after the plan hashed it; "
                                        "run again to evaluate what it holds now$"):
        load_articles(str(path), sha256=planned)


def test_bad_local_inputs_are_one_line_step_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "no article here"}) + "\n")
    with pytest.raises(StepError, match=r"lacks field\(s\) \['article', 'highlights'\]"):
        load_articles(str(bad))
    with pytest.raises(StepError, match="does not exist"):
        load_articles(str(tmp_path / "missing.jsonl"))
    with pytest.raises(StepError, match="not sample, cnn_dailymail or a .jsonl/.json/.parquet"):
        load_articles(str(tmp_path / "data.csv"))


def test_hub_dataset_offline_is_a_clear_step_error(monkeypatch):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(StepError, match="could not load dataset 'abisee/cnn_dailymail'.*local .jsonl/.parquet") as err:
        load_articles("cnn_dailymail")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("variable", [None, "HF_DATASETS_CACHE"])
def test_a_datasets_cache_whose_disk_fills_is_named_with_the_variable_that_moves_it(tmp_path, monkeypatch, variable):
    """datasets prepares even a local file in its own cache: a disk that fills there is named with the variable that
    moves that cache (HF_HOME, below which it lies, unless the user moved it alone), not a crash of datasets' own
    DatasetGenerationError; datasets removes what it had written."""
    import datasets.arrow_writer

    def disk_fills(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(datasets.arrow_writer.ArrowWriter, "write_table", disk_fills)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    if variable:
        monkeypatch.setenv(variable, str(tmp_path / "datasets"))
    articles = tmp_path / "mine.jsonl"
    articles.write_text("".join(json.dumps({"article": f"The river rose {i} feet.", "highlights": f"Up {i} ft."}) + "\n"
                                for i in range(2)))  # datasets writes a table of them (one alone, as a row)
    with pytest.raises(StepError) as err:
        load_articles(str(articles))
    assert str(err.value) == (f"no space left on device in the Hugging Face cache {tmp_path / 'datasets'}: free space "
                              f"there, or set {variable or 'HF_HOME'} to a directory on a disk with room")
    assert not [path for path in (tmp_path / "datasets").rglob("*.arrow")]


def test_loading_script_repos_get_a_pointer_to_the_parquet_copy(monkeypatch):
    import datasets

    def script_repo(*args, **kwargs):
        raise RuntimeError("Dataset scripts are no longer supported, but found cnn_dailymail.py")

    monkeypatch.setattr(datasets, "load_dataset", script_repo)
    with pytest.raises(StepError, match="is a loading script.*eval.dataset_hub_id=abisee/cnn_dailymail"):
        load_articles("cnn_dailymail", hub_id="ccdv/cnn_dailymail")


def test_an_install_that_cannot_import_datasets_is_a_one_line_step_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # what a missing or broken package looks like to import
    with pytest.raises(StepError, match=r"cannot import datasets .*pip install -e \.") as err:
        load_articles("sample")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name, write", EMPTY_DATASETS)
def test_a_file_without_records_says_so(tmp_path, name, write):
    path = tmp_path / name
    write(path)
    with pytest.raises(StepError, match=f"eval.dataset '{path}' has no records; ") as err:
        load_articles(str(path))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad_line, reason", [
    ("{not json", r"line 2 is not JSON \(Expecting property name enclosed in double quotes at column 2\)"),
    ('["a", "b"]', "line 2 is a JSON list, not an object"),
])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig"])  # with a byte-order mark, as some editors save
def test_a_malformed_json_line_is_named_with_its_line_number(tmp_path, bad_line, reason, encoding):
    path = tmp_path / "articles.jsonl"
    path.write_text(json.dumps({"article": "A story.", "highlights": "Story."}) + "\n" + bad_line + "\n",
                    encoding=encoding)
    with pytest.raises(StepError, match=f"eval.dataset '{path}' is not valid JSON Lines: {reason}; ") as err:
        load_articles(str(path))
    assert "\n" not in str(err.value)


ARTICLE = {"article": "A story.", "highlights": "Story."}


@pytest.mark.parametrize("text, reason", [
    # A trailing comma: the array's line, not its opening line 1, and no "JSON Lines" it was never meant to be
    (f"[\n  {json.dumps(ARTICLE)},\n]\n", "is not valid JSON: Expecting value at line 3 column 1"),
    (f"[{json.dumps(ARTICLE)}, 5]", "is a JSON array whose element 2 is a JSON int, not an object"),
    ('[["A story.", "Story."]]', "is a JSON array whose element 1 is a JSON list, not an object"),  # else a "text"
    ('["A story."]', "is a JSON array whose element 1 is a JSON str, not an object"),  # column said to lack fields
])
def test_a_json_array_that_is_no_array_of_records_says_what_is_expected(tmp_path, text, reason):
    path = tmp_path / "articles.json"
    path.write_text(text)
    expected = "write JSON Lines (one JSON object per line) or one JSON array of objects, each with 'article' and "
    with pytest.raises(StepError, match=re.escape(f"eval.dataset '{path}' {reason}; {expected}")) as err:
        load_articles(str(path))
    assert "\n" not in str(err.value)


def test_an_unreadable_parquet_file_is_a_one_line_step_error(tmp_path):
    path = tmp_path / "articles.parquet"
    path.write_text("not parquet at all")
    with pytest.raises(StepError, match=f"eval.dataset '{path}' is not a readable parquet file") as err:
        load_articles(str(path))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("records, field, shown", [
    ([{"article": "A story.", "highlights": "Story."}, {"article": None, "highlights": "Story."}],
     "article", "record 2 has article=None"),
    ([{"article": 5, "highlights": ["a"]}], "article", "record 1 has article=5"),
    ([{"article": "A story.", "highlights": ["a"]}], "highlights", r"record 1 has highlights=\['a'\]"),
])
def test_a_record_whose_text_is_not_a_string_is_named(tmp_path, records, field, shown):
    path = tmp_path / "articles.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(StepError, match=f"{shown}; each record's '{field}' must be a string"):
        load_articles(str(path))


def test_a_compressed_jsonl_file_datasets_opens_is_not_taken_for_text_that_is_no_utf8(tmp_path):
    import gzip

    path = tmp_path / "articles.jsonl"
    path.write_bytes(gzip.compress(sample_path().read_bytes()))
    assert len(load_articles(str(path))) == len(_records())


def test_records_without_an_id_are_labelled_by_their_position_even_beside_records_with_one(tmp_path):
    records = [{"id": "1", "article": "One.", "highlights": "1"}, {"article": "Two.", "highlights": "2"},
               {"id": "c9", "article": "Three.", "highlights": "3"}]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    by_article = dict(zip(load_articles(str(path))["article"], load_articles(str(path))["id"]))
    assert by_article == {"One.": "1", "Two.": "#1", "Three.": "c9"}  # "1" is the first record's own id
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "id"}) + "\n" for r in records))
    assert sorted(load_articles(str(path))["id"]) == ["0", "1", "2"]


@pytest.mark.parametrize("shown", [True, False])
def test_datasets_own_progress_bars_follow_the_runs_setting(tmp_path, capfd, shown):
    import datasets

    path = tmp_path / f"new-{shown}.jsonl"  # not in datasets' cache: it generates the split, with its bar
    path.write_text(json.dumps({"article": "An article.", "highlights": "A summary."}) + "\n")
    datasets.enable_progress_bars()
    load_articles(str(path), show_progress=shown)
    assert ("Generating train split" in capfd.readouterr().err) == shown
    assert not datasets.are_progress_bars_disabled()  # put back for the rest of the process
