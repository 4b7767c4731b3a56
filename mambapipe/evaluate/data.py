"""Evaluation data: the bundled sample, cnn_dailymail from the hub, or a local .jsonl/.json/.parquet file.

All three go through `datasets` and are shuffled with `Dataset.shuffle(seed=...)`, exactly as
TensorRT-LLM's summarize.py does, so the first `max_ite * batch_size` articles are the same ones.
The hub dataset is loaded at the commit the evaluate step pinned at plan time (`hub_commit`).
"""

from __future__ import annotations

import codecs
import hashlib
import itertools
import json
import reprlib
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Optional

from mambapipe import hub, interrupts
from mambapipe.pipeline.step import StepError, first_line

INPUT_FIELD = "article"
REFERENCE_FIELD = "highlights"
LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
FIRST_RECORD_MAX_CHARS = 1 << 24  # 16 Mi: the plan's first-record check never holds a whole large file in memory
_NO_RECORDS = object()  # what _first_json_record finds in a blank file or an empty array
_READ_CHUNK = 1 << 22  # bytes of a dataset file read at a time, so that it is never held whole
_WITHOUT_HUB = ("set eval.dataset=sample (the bundled sample) or eval.dataset=/path/to/articles.jsonl (or "
                f".parquet) with {INPUT_FIELD!r} and {REFERENCE_FIELD!r} fields")
_JSON_SHAPES = (f"write JSON Lines (one JSON object per line) or one JSON array of objects, each with {INPUT_FIELD!r} "
                f"and {REFERENCE_FIELD!r} fields")


def sample_path() -> Path:
    """The bundled sample file (about 20 short news articles with highlights, written for mambapipe)."""
    return Path(str(resources.files("mambapipe.evaluate") / "data" / "sample.jsonl"))


def dataset_file(dataset: str) -> Optional[Path]:
    """The file whose contents are eval.dataset's articles: the bundled sample's or a local path's; None for the hub's
    cnn_dailymail. The evaluate step keys a summarize run by its contents, the loader checks them against that."""
    if dataset == "cnn_dailymail":
        return None
    return sample_path() if dataset == "sample" else Path(dataset).expanduser()


def hub_commit(hub_id: str) -> str:
    """The commit of the dataset repo's main branch (from the local cache when offline), which the
    evaluate step hashes into its key and loads; a one-line StepError when it cannot be known."""
    return hub.resolve_commit(hub_id, None, "dataset", "eval.dataset_hub_id", _WITHOUT_HUB)


def load_articles(dataset: str, hub_id: str = "abisee/cnn_dailymail", hub_config: str = "3.0.0",
                  split: str = "test", seed: int = 0, revision: Optional[str] = None,
                  local_only: Optional[str] = None, sha256: Optional[str] = None, show_progress: bool = True):
    """A shuffled `datasets.Dataset` with `article`, `highlights` and `id` columns.

    `dataset` is "cnn_dailymail" (loaded from `hub_id`/`hub_config`/`split` at commit `revision`, None = the main
    branch; from the local datasets cache only when `local_only` says why), "sample" or a local path: a file
    (dataset_file), which must still hold the contents `sha256` names where the plan hashed it
    (local_dataset_sha256). `show_progress`: whether datasets shows its own bars (a download, generating a split)."""
    require_datasets()  # its one-line error where the install cannot import datasets, once for the loaders below
    import datasets.config

    path = dataset_file(dataset)
    # datasets prepares every dataset in its own cache, and fetches a hub one into huggingface_hub's first
    caches = [hub.hub_cache()] if path is None else []
    caches.append((Path(datasets.config.HF_DATASETS_CACHE), hub.moved_by("HF_DATASETS_CACHE")))
    with hub.progress_bars(show_progress, datasets), hub.filling_caches(*caches):
        if path is None:
            articles = _load_hub(hub_id, hub_config, split, revision, local_only)
        else:
            articles = _load_local(path, sha256)
    _check_fields(articles, dataset)
    return _with_ids(articles).shuffle(seed=seed)


def _with_ids(articles):
    """An `id` for every record: its own; else its position in the file, as "3" in a file without ids and as "#3"
    beside records that have one (a record's own "3" must not meet another's position; without this, datasets
    labelled those records "None" in predictions.jsonl)."""
    if "id" not in articles.column_names:
        return articles.add_column("id", [str(i) for i in range(len(articles))])
    if articles.data.column("id").null_count == 0:
        return articles
    labels = [f"#{i}" if value is None else str(value) for i, value in enumerate(articles["id"])]
    return articles.remove_columns("id").add_column("id", labels)


def require_datasets():
    """`datasets.load_dataset`, or a one-line error when the install cannot import it (the evaluate step's plan
    check calls this, so a broken install stops the run before its first step)."""
    try:
        with interrupts.deferred():  # datasets brings pandas and pyarrow: imported whole or not at all
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
        raise StepError(f"eval.dataset={str(path)!r} is not sample, cnn_dailymail or a .jsonl/.json/.parquet file; "
                        "pass one of those")
    if not path.is_file():
        raise StepError(f"eval.dataset file {str(path)!r} does not exist; check the path")
    return builder


def local_dataset_sha256(path: Path) -> str:
    """The sha256 the evaluate step keys the articles file of eval.dataset by (dataset_file). A JSON file is checked
    to be UTF-8 text in the same read, so that the plan streams a large file once: a one-line StepError naming the
    line where it is not."""
    digest = hashlib.sha256()
    chunks = _hashed(_file_chunks(path), digest)
    problem = _utf8_problem(path, chunks) if LOCAL_BUILDERS.get(path.suffix.lower()) == "json" else None
    if problem:
        raise StepError(problem)
    for _ in chunks:  # what the UTF-8 check left unread: all of a parquet or compressed file
        pass
    return digest.hexdigest()


def check_first_record(path: Path, dataset: str) -> None:
    """The loader's errors for the local file `dataset` names that are found cheaply, so the evaluate step's plan
    check stops a run before the steps ahead of it do their work: a file with no records, and the missing fields of
    its first record alone (a parquet file's footer). A JSON file that is not UTF-8 is found as the plan hashes it
    (local_dataset_sha256). A first record this cannot read is left to the loader, which names what is wrong with
    the file."""
    if local_builder(path) == "parquet":
        require_datasets()  # the footer is read with the pyarrow datasets brings: a broken install says so in one line
        fields, rows = _parquet_fields_and_rows(path)
    else:
        record = _first_json_record(path)
        fields, rows = (list(record) if isinstance(record, dict) else None), (0 if record is _NO_RECORDS else None)
    if fields is not None:
        _require_fields(fields, dataset)
    if rows == 0:
        raise StepError(_no_records(dataset))


def _parquet_fields_and_rows(path: Path) -> tuple[Optional[list[str]], Optional[int]]:
    """The columns and row count from the footer alone; (None, None) when there is no readable footer."""
    import pyarrow
    import pyarrow.parquet

    try:
        metadata = pyarrow.parquet.read_metadata(path)
    except (OSError, pyarrow.ArrowException):
        return None, None
    return metadata.schema.to_arrow_schema().names, metadata.num_rows


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(_READ_CHUNK):
            yield chunk


def _hashed(chunks: Iterator[bytes], digest: Any) -> Iterator[bytes]:
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


def _utf8_problem(path: Path, chunks: Iterator[bytes]) -> Optional[str]:
    """Where `path`, read as `chunks`, stops being UTF-8, as one line naming the file and line (datasets raises a
    bare UnicodeDecodeError, or reads past a record it never samples); None when all of it decodes, every chunk read.
    A compressed file (datasets opens gzip, zstd, ... by their magic numbers) is left to the loader: its text is
    known only once decompressed."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    for chunk in itertools.chain(chunks, [b""]):  # the empty chunk last: a character the file cuts short
        data = decoder.getstate()[0] + chunk  # what the decoder sees: a character cut by the last chunk, then this
        try:
            decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as err:
            if _compressed(path):
                return None
            bad_line = line + data.count(b"\n", 0, err.start)
            return (f"eval.dataset {str(path)!r} is not UTF-8 text: line {bad_line} holds byte "
                    f"0x{data[err.start]:02X} ({err.reason}); save the file as UTF-8")
        line += chunk.count(b"\n")
    return None


def _compressed(path: Path) -> bool:
    """Asked only of bytes that are no UTF-8, so that hashing a text file at plan time never imports datasets."""
    require_datasets()  # its one-line error where the install cannot import datasets
    from datasets.utils.extract import Extractor

    return bool(Extractor.infer_extractor_format(path))


def _first_json_record(path: Path) -> Any:
    """The first value of a JSON Lines file, or the first element of a JSON array, reading only as far as it ends
    (twice as much text each try) and at most FIRST_RECORD_MAX_CHARS; _NO_RECORDS for a file that is blank or an
    empty array; None when no record ends by then (text that is no JSON, e.g. a compressed file datasets can still
    open: the loader judges it)."""
    decoder = json.JSONDecoder()
    with path.open(encoding="utf-8-sig", errors="replace") as file:
        text, size = "", 1 << 16
        while len(text) < FIRST_RECORD_MAX_CHARS and (chunk := file.read(size)):
            text, size = text + chunk, size * 2
            start = text.lstrip()
            try:
                return decoder.raw_decode(start[1:].lstrip() if start.startswith("[") else start)[0]
            except json.JSONDecodeError:  # cut short, or not JSON: the loader says which
                continue
    body = text.strip()
    return _NO_RECORDS if body == "" or (body[:1] == "[" and body[1:].strip() == "]") else None


def _load_local(path: Path, sha256: Optional[str] = None):
    from datasets import load_dataset  # load_articles has checked that it imports
    builder = local_builder(path)
    _check_contents(path, builder, sha256)
    json_array = builder == "json" and _opens_an_array(path)
    # Before loading: datasets loads an array of strings or lists as a made-up "text" column, which would then be
    # reported missing its fields.
    problem = _json_array_problem(path) if json_array else None
    if problem:
        raise StepError(problem)
    try:
        return load_dataset(builder, data_files=str(path), split="train")
    except Exception as exc:  # datasets reports an empty or malformed file as StopIteration, ValueError, ...
        if json_array:  # its shape is checked above: a crash worth its traceback, not bad input
            raise
        problem = _json_lines_problem(path) if builder == "json" else _parquet_problem(path)
        if problem is None:  # the file looks fine to us: a crash worth its traceback, not bad input
            raise
        raise StepError(problem) from exc


def _check_contents(path: Path, builder: str, sha256: Optional[str]) -> None:
    """Before loading, not after a failure: pyarrow takes bytes that are no UTF-8 into its string columns (a record
    then fails when it is read, if it is sampled at all). Where the plan hashed the file into the evaluate key, the
    same read checks that it still holds those contents: scores of an edited file must not be cached as the old
    one's (the steps between the plan and this load may take hours)."""
    if sha256 is None:
        problem = _utf8_problem(path, _file_chunks(path)) if builder == "json" else None
        if problem:
            raise StepError(problem)
    elif local_dataset_sha256(path) != sha256:
        raise StepError(f"eval.dataset {str(path)!r} changed after the plan hashed it; run again to evaluate what it "
                        "holds now")


def _no_records(dataset: str) -> str:
    return f"eval.dataset {dataset!r} has no records; point it at a file with at least one article"


def _opens_an_array(path: Path) -> bool:
    """Whether the file's first non-blank character is `[`: datasets reads such a file as one JSON array of records,
    any other as JSON Lines."""
    with path.open(encoding="utf-8-sig", errors="replace") as text:
        for line in text:
            if line.strip():
                return line.lstrip().startswith("[")
    return False


def _json_array_problem(path: Path) -> Optional[str]:
    """Why `path`, a JSON array, holds no records: not JSON (with the line and column, which the JSON Lines check
    would miss, blaming the array's first line), an element that is no object, or none at all."""
    try:
        records = json.loads(path.read_text(encoding="utf-8-sig", errors="replace"))
    except json.JSONDecodeError as err:
        return (f"eval.dataset {str(path)!r} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}; "
                f"{_JSON_SHAPES}")
    not_objects = [(index, record) for index, record in enumerate(records) if not isinstance(record, dict)]
    if not_objects:
        index, element = not_objects[0]
        return (f"eval.dataset {str(path)!r} is a JSON array whose element {index + 1} is a JSON "
                f"{type(element).__name__}, not an object; {_JSON_SHAPES}")
    return None if records else _no_records(str(path))


def _json_lines_problem(path: Path) -> Optional[str]:
    """The first line of `path` that is no JSON object, or that it holds no record, in one line (datasets' own
    error names neither the file nor the line); None when every line is a JSON object."""
    records = 0
    with path.open(encoding="utf-8-sig", errors="replace") as lines:  # as datasets, a byte-order mark is no text
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            problem = _json_object_problem(line)
            if problem:
                return f"eval.dataset {str(path)!r} is not valid JSON Lines: line {number} {problem}; {_JSON_SHAPES}"
            records += 1
    return None if records else _no_records(str(path))


def _json_object_problem(line: str) -> Optional[str]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return f"is not JSON ({err.msg} at column {err.colno})"
    return None if isinstance(record, dict) else f"is a JSON {type(record).__name__}, not an object"


def _parquet_problem(path: Path) -> Optional[str]:
    """Why `path` is no parquet table of articles, in one line, or None when its footer looks sound."""
    import pyarrow
    import pyarrow.parquet

    try:
        rows = pyarrow.parquet.read_metadata(path).num_rows
    except (OSError, pyarrow.ArrowException) as err:
        reason = first_line(err) or type(err).__name__
        return f"eval.dataset {str(path)!r} is not a readable parquet file ({reason}); check the file"
    return None if rows else _no_records(str(path))


def _load_hub(hub_id: str, hub_config: str, split: str, revision: Optional[str], local_only: Optional[str]):
    from datasets import load_dataset  # load_articles has checked that it imports
    try:
        with _datasets_offline(local_only is not None):
            articles = load_dataset(hub_id, hub_config, split=split, revision=revision)
        if revision is not None:  # the commit hub_commit pinned main to
            hub.remember_ref(hub_id, None, "dataset", revision)
        return articles
    except RuntimeError as exc:
        if "scripts are no longer supported" not in str(exc):
            raise
        raise StepError(f"dataset {hub_id!r} is a loading script, which the installed datasets cannot run; set "
                        "eval.dataset_hub_id=abisee/cnn_dailymail (parquet) or a local .jsonl/.parquet") from exc
    except Exception as exc:  # offline, gated or renamed: datasets raises many unrelated types
        where = (f"the local datasets cache does not hold it ({local_only}); run once with the network" if local_only
                 else "check the network or eval.dataset_hub_id")
        raise StepError(f"could not load dataset {hub_id!r} ({hub_config}, split {split}): {type(exc).__name__}; "
                        f"{where}, or set eval.dataset to a local .jsonl/.parquet file with {INPUT_FIELD!r} and "
                        f"{REFERENCE_FIELD!r} fields") from exc


@contextmanager
def _datasets_offline(offline: bool) -> Iterator[None]:
    """datasets in offline mode for one load: it reads its own cache at once instead of retrying the hub."""
    if not offline:
        yield
        return
    import datasets.config

    saved = datasets.config.HF_HUB_OFFLINE  # datasets >= 2.21 (pyproject) reads its offline mode from here
    datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = saved


def _check_fields(articles, dataset: str) -> None:
    _require_fields(articles.column_names, dataset)
    if len(articles) == 0:
        raise StepError(_no_records(dataset))
    for field in (INPUT_FIELD, REFERENCE_FIELD):
        _check_text_column(articles, field, dataset)


def _require_fields(fields: list[str], dataset: str) -> None:
    missing = [f for f in (INPUT_FIELD, REFERENCE_FIELD) if f not in fields]
    if missing:
        raise StepError(f"eval.dataset {dataset!r} lacks field(s) {missing} (has {fields}); "
                        f"each record needs {INPUT_FIELD!r} and {REFERENCE_FIELD!r}")


def _check_text_column(articles, field: str, dataset: str) -> None:
    """Every record's `field` must be a string: the prompt is `article + ' TL;DR: '`, ROUGE reads highlights."""
    column = articles.data.column(field)  # pyarrow: the type and null count cost nothing to read
    if str(column.type) in ("string", "large_string") and column.null_count == 0:
        return
    index, value = next((i, v) for i, v in enumerate(articles[field]) if not isinstance(v, str))
    raise StepError(f"eval.dataset {dataset!r} record {index + 1} has {field}={reprlib.repr(value)}; each record's "
                    f"{field!r} must be a string")
