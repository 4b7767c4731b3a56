"""Download step: put the source checkpoint in `model/` and its tokenizer in `tokenizer/`.

Three sources (`model.source`):
  synthetic  seeded random weights at `model.arch`'s shape plus a byte-level BPE tokenizer (no network);
  local      a directory the user already has, validated, fingerprinted and linked file by file;
  hub        `huggingface_hub.snapshot_download` pinned to the commit resolved at plan time, linked
             from the Hugging Face cache (HF_HOME, HF_HUB_OFFLINE and HF_TOKEN work as usual).
Files of local and hub sources are symlinks, so the artifact costs no disk space.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

from mambapipe import hub, interrupts
from mambapipe.checkpoint.detect import MISTRAL, detect_source, source_format, weight_files
from mambapipe.checkpoint.errors import ConvertError, DamagedFileError, UnreadableError
from mambapipe.models import ModelSpec
from mambapipe.pipeline.disk import filling_tmpdir, temporary_directory
from mambapipe.pipeline.step import StepContext, StepError
from mambapipe.steps.convert import arch_spec

TOKENIZER_PATTERNS = ["tokenizer*", "special_tokens_map.json", "vocab.*", "merges.txt", "*.model",
                      "config.json"]
_SMALL_FILE = 1 << 20  # local files below this size are hashed by content, larger ones by size+mtime
_WITHOUT_HUB = "set model.source=local model.path=/path/to/copy"
# model.tokenizer values that read as a path: a directory, never a hub id, even when it does not exist.
_PATH_PREFIXES = ("/", "./", "../", "~")
# The model.* keys each source reads, and so the only ones in the download key: a display name
# (model.name) or a key another source reads (model.tokenizer for synthetic) re-runs nothing.
SOURCE_KEYS = {
    "synthetic": ("model.arch", "model.seed", "model.source_dtype"),
    "local": ("model.path", "model.tokenizer"),
    "hub": ("model.repo_id", "model.revision", "model.allow_patterns", "model.tokenizer"),
}
# What model.tokenizer=null means for each source that reads it.
_NULL_TOKENIZER = {"local": "null to use the tokenizer files in model.path",
                   "hub": "null to use the tokenizer files of model.repo_id"}


# ---- source layouts ----------------------------------------------------------------------------

def detect_layout(model_dir: Path) -> str:
    """Which of the four source layouts `model_dir` holds, detected as the convert step detects it (so a
    directory this plan-time check passes is one convert reads); StepError when none."""
    try:
        layout = source_format(model_dir)
        if layout != MISTRAL:
            weight_files(model_dir)
    except DamagedFileError as err:  # its own fix, "re-download it", is not one for a directory of the user's
        raise StepError(f"{err.path}: {err.problem}; fix or replace it in model.path") from None
    except UnreadableError as err:  # its own fix, to make it readable, is the one: a second would only blur it
        raise StepError(str(err)) from None
    except ConvertError as err:
        raise StepError(f"{err}; fix the file or model.path") from None
    return layout


def has_tokenizer(directory: Path) -> bool:
    return any((directory / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


def tokenizer_dir(model: dict[str, Any]) -> Optional[Path]:
    """The local directory model.tokenizer names; None when it is a hub id or null. A value that reads as a
    path and is not a directory is a StepError here, where the hub would call it a malformed repo id."""
    tokenizer = model.get("tokenizer")
    if not tokenizer:
        return None
    path = Path(tokenizer).expanduser()
    if path.is_dir():
        if not has_tokenizer(path):
            raise StepError(f"model.tokenizer={tokenizer} holds no tokenizer files (tokenizer.json, "
                            "tokenizer_config.json or tokenizer.model); point it at a tokenizer directory")
        return path
    if tokenizer.startswith(_PATH_PREFIXES):
        raise StepError(f"model.tokenizer={tokenizer}: no such directory; set it to a tokenizer directory or a hub "
                        f"id, or {_NULL_TOKENIZER[model['source']]}")
    return None


def _tokenizer_without_hub(model: dict[str, Any]) -> str:
    """How to do without the hub when model.tokenizer's repo cannot be reached. Said, never done silently: a
    fallback would make the same config pick a different tokenizer depending on the network."""
    if model["source"] == "local" and not has_tokenizer(Path(model["path"]).expanduser()):
        return ("model.tokenizer names it; set model.tokenizer=/path/to/tokenizer/dir (model.path has no "
                "tokenizer files)")
    return (f"model.tokenizer names it; set model.tokenizer={_NULL_TOKENIZER[model['source']]}, "
            "or model.tokenizer=/path/to/tokenizer/dir")


def source_files(directory: Path) -> dict[str, Path]:
    """The files of a checkpoint directory by relative path: every file but those under a dot-named name (.git,
    .cache/huggingface, editor leftovers), which no step reads and a git status or a hub client rewrites."""
    return {path.relative_to(directory).as_posix(): path for path in sorted(directory.rglob("*"))
            if not any(part.startswith(".") for part in path.relative_to(directory).parts) and path.is_file()}


def link_tree(source: Path, dest: Path, patterns: Optional[list[str]] = None) -> tuple[int, int]:
    """Symlink every source file under `source` (optionally only relative paths matching `patterns`, matched as
    `snapshot_download(allow_patterns=...)` matches them) into `dest`. Returns (files, bytes)."""
    from huggingface_hub.utils import filter_repo_objects

    files = source_files(source)
    count = size = 0
    for relative in filter_repo_objects(files, allow_patterns=patterns):
        path, target = files[relative], dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(path.absolute(), target)
        count, size = count + 1, size + path.stat().st_size
    return count, size


def fingerprint(directory: Path) -> str:
    """Hash of the source files' names and sizes, plus each small file's contents and each large file's mtime and
    ctime: a rewrite changes the ctime even where its mtime was put back (touch -r, cp -p), and a touched small
    file (a tokenizer.json) with the same bytes keys as it did."""
    return fingerprint_of(file_records(directory))


def file_records(directory: Path) -> dict[str, dict[str, Any]]:
    """What the fingerprint hashes of each source file, by relative path: its size, and its contents' sha256 (a small
    file) or its mtime and ctime (a large one). The download's manifest records them, so that a plan can name the
    files a changed fingerprint means."""
    records = {}
    for relative, path in source_files(directory).items():
        try:
            stat = path.stat()
            records[relative] = ({"size": stat.st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
                                 if stat.st_size < _SMALL_FILE else
                                 {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns})
        except OSError as err:
            raise StepError(f"cannot read {path} ({err.strerror or err}); make it readable or move it out of "
                            f"{directory}") from None
    return records


def fingerprint_of(records: dict[str, dict[str, Any]]) -> str:
    """The fingerprint that file_records' `records` hash to."""
    digest = hashlib.sha256()
    for relative, record in records.items():
        digest.update(f"{relative}\0{record['size']}\0".encode())
        if "sha256" in record:
            digest.update(bytes.fromhex(record["sha256"]))
        else:
            digest.update(f"{record['mtime_ns']}\0{record['ctime_ns']}\0".encode())
    return digest.hexdigest()


def changed_files(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The files whose records differ, a new one marked '+' and one gone '-': three, then how many more."""
    changed = sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))
    marked = [("+" if name not in old else "-" if name not in new else "") + name for name in changed]
    return ", ".join(marked[:3]) + (f" and {len(marked) - 3} more" if len(marked) > 3 else "")


def fingerprinted_dirs(model: dict[str, Any]) -> dict[str, Path]:
    """The local directories the environment fingerprints, by the names it holds their fingerprints under."""
    directories = {}
    if model["source"] == "local":
        directories["fingerprint"] = Path(model["path"]).expanduser()
    if model["source"] != "synthetic" and model.get("tokenizer"):
        local_tokenizer = tokenizer_dir(model)
        if local_tokenizer is not None:
            directories["tokenizer_fingerprint"] = local_tokenizer
    return directories


# ---- hub -------------------------------------------------------------------------------------

def resolve_commit(repo_id: str, revision: Optional[str], settings: str = "model.repo_id / model.revision",
                   without_hub: str = _WITHOUT_HUB) -> str:
    """The commit a model repo's `revision` (default main) points to, pinned as mambapipe.hub does; `settings`
    and `without_hub` name the keys that chose the repo and how to do without it, for the one-line errors."""
    return hub.resolve_commit(repo_id, revision, "model", settings, without_hub)


def fetch_snapshot(repo_id: str, revision: Optional[str], commit: str, patterns: Optional[list[str]],
                   without_hub: str = _WITHOUT_HUB, settings: str = "model.repo_id / model.revision") -> Path:
    """The snapshot folder of `repo_id` at `commit`, which `revision` (None: main) named at plan time, holding the
    files `patterns` select, fetched where missing, and the cache's ref of `revision` then pointed at it
    (hub.remember_ref); a one-line StepError for whatever stops it (the plan saw the repo, but its files may be
    refused or broken off, or the repo gone, or the Hugging Face cache's disk full), naming the keys that chose it
    (`settings`) and how to do without the hub (`without_hub`)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    with hub.filling_caches(hub.hub_cache()):
        try:
            snapshot = Path(snapshot_download(repo_id, revision=commit, allow_patterns=patterns,
                                              local_files_only=hub.use_local_files_only()))
        except LocalEntryNotFoundError as missing:
            raise hub.not_fetched(repo_id, commit, without_hub, missing) from None
        except GatedRepoError:
            raise hub.gated(repo_id) from None
        except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
            raise hub.gone(repo_id, commit, settings, exc) from None
        except Exception as exc:
            if not hub.is_transfer_failure(exc):
                raise
            raise hub.fetch_failed(repo_id, commit, without_hub, exc) from exc
    hub.remember_ref(repo_id, revision, "model", commit)
    return snapshot


def _linked_layout(model: dict[str, Any], model_dir: Path, commit: str) -> str:
    """The layout of the linked files; for the hub, a miss is the patterns' fault, or, read from the local cache
    alone, an incomplete download's."""
    try:
        return detect_layout(model_dir)
    except StepError:
        if model["source"] != "hub":
            raise
    repo, patterns = model["repo_id"], model.get("allow_patterns")
    if hub.use_local_files_only():
        raise StepError(f"the local cache's snapshot of {repo} at {commit} holds no Mamba checkpoint (an "
                        f"interrupted download, or one limited by allow_patterns; {hub.offline_why()}): run once "
                        "with the hub reachable to complete it")
    raise StepError(f"the files of {repo} that model.allow_patterns={json.dumps(patterns)} selects are not a Mamba "
                    "checkpoint; widen model.allow_patterns (null fetches everything)")


# ---- the step ----------------------------------------------------------------------------------

class DownloadStep:
    name = "download"
    version = 1
    uses = ("model.source",)
    needs = ()

    def extra_uses(self, params: dict[str, Any]) -> tuple[str, ...]:
        """The model.* keys the chosen source reads."""
        return SOURCE_KEYS[params["model.source"]]

    def check(self, params: dict[str, Any]) -> None:
        model = model_settings(params)
        CHECKS[model["source"]](model)
        if model["source"] == "local":  # checked where the step runs, not on every plan that finds it cached
            _check_local_contents(model)

    def environment(self, params: dict[str, Any]) -> dict[str, Any]:
        """What outside the config decides the files: the hub commits, or the local directory's state."""
        model = model_settings(params)
        CHECKS[model["source"]](model)  # a missing repo_id or path is a config error, not a lookup failure
        env: dict[str, Any] = {}
        if model["source"] == "hub":
            env["commit"] = resolve_commit(model["repo_id"], model.get("revision"))
        env.update({name: fingerprint(directory) for name, directory in fingerprinted_dirs(model).items()})
        if model["source"] != "synthetic" and model.get("tokenizer") and "tokenizer_fingerprint" not in env:
            env["tokenizer_commit"] = resolve_commit(model["tokenizer"], None, "model.tokenizer",
                                                     _tokenizer_without_hub(model))
        return env

    def environment_change(self, name: str, params: dict[str, Any], previous: dict[str, Any]) -> str:
        """The files of a local directory that differ from those the download `previous` (its manifest) recorded,
        where `name` is that directory's fingerprint; '' where there is no such record (an older download's)."""
        records = previous.get("facts", {}).get("fingerprinted_files")
        recorded = records.get(name) if isinstance(records, dict) else None
        try:
            directory = fingerprinted_dirs(model_settings(params)).get(name)
            return changed_files(recorded, file_records(directory)) if isinstance(recorded, dict) and directory else ""
        except StepError:  # the plan names it as a problem of the step's environment
            return ""

    def key_params(self, params: dict[str, Any], environment: dict[str, Any]) -> dict[str, Any]:
        """A hub model.revision keyed as if unset (as the recipes leave it, so their keys stay) once its commit is
        pinned: the commit decides the files, whichever name the user gave it."""
        if "commit" in environment:
            return params | {"model.revision": None}
        return params

    def describe(self, params: dict[str, Any], inputs: dict[str, Path], out_dir: Path) -> list[str]:
        model = model_settings(params)
        if model["source"] == "synthetic":
            arch = model["arch"]
            return [f"seeded ({model['seed']}) random {arch['mamba_version']} H{arch['hidden_size']} "
                    f"L{arch['num_layers']} V{arch['vocab_size']} in {model['source_dtype']} -> {out_dir}/model"]
        if model["source"] == "local":
            return [f"link {model['path']} -> {out_dir}/model"]
        return [f"huggingface_hub.snapshot_download({model['repo_id']!r}, revision=<{model.get('revision') or 'main'} "
                f"pinned>, allow_patterns={model.get('allow_patterns')}) -> {out_dir}/model"]

    def run(self, params: dict[str, Any], inputs: dict[str, Path], out_dir: Path,
            ctx: StepContext) -> dict[str, Any]:
        import huggingface_hub.utils

        model = model_settings(params)
        if model["source"] == "synthetic":
            return self._synthetic(model, out_dir, ctx)
        env = ctx.environment  # the commits pinned at plan time
        if model["source"] == "local":
            source_dir = Path(model["path"]).expanduser().resolve()
        else:
            with hub.progress_bars(ctx.show_progress, huggingface_hub.utils):
                source_dir = fetch_snapshot(model["repo_id"], model.get("revision"), env["commit"],
                                            model.get("allow_patterns"))
        # A hub snapshot folder is shared by every download of that commit, so it may also hold files
        # another run's allow_patterns fetched: link only the ones this config asked for.
        patterns = model.get("allow_patterns") if model["source"] == "hub" else None
        files, size = link_tree(source_dir, out_dir / "model", patterns)
        layout = _linked_layout(model, out_dir / "model", env.get("commit", ""))
        with hub.progress_bars(ctx.show_progress, huggingface_hub.utils):
            self._tokenizer(model, source_dir, env, out_dir / "tokenizer")
        return {"source": model["source"], "layout": layout, "files": files, "bytes": size,
                "from": str(source_dir), **env, "fingerprinted_files": fingerprinted_files(model, env)}

    def _synthetic(self, model: dict[str, Any], out_dir: Path, ctx: StepContext) -> dict[str, Any]:
        with interrupts.deferred():  # the synthetic model brings torch: imported whole or not at all
            from mambapipe.synthetic import write_synthetic_checkpoint, write_synthetic_tokenizer

        spec = ModelSpec(**model["arch"])
        facts = write_synthetic_checkpoint(spec, out_dir / "model", model["source_dtype"], model["seed"],
                                           progress=ctx.show_progress)
        tokenizer = write_synthetic_tokenizer(out_dir / "tokenizer", spec.vocab_size)
        return {"source": "synthetic", "layout": facts["format"], "num_parameters": facts["num_parameters"],
                "tokenizer_vocab_size": tokenizer["vocab_size"], "eos_id": tokenizer["eos_id"]}

    def _tokenizer(self, model: dict[str, Any], source_dir: Path, env: dict[str, Any], dest: Path) -> None:
        local_tokenizer = tokenizer_dir(model)
        if local_tokenizer is not None:
            tok_dir = local_tokenizer.resolve()
        elif model.get("tokenizer"):
            tok_dir = fetch_snapshot(model["tokenizer"], None, env["tokenizer_commit"], TOKENIZER_PATTERNS,
                                     _tokenizer_without_hub(model), "model.tokenizer")
        else:
            tok_dir = source_dir
        if not has_tokenizer(tok_dir):
            raise StepError(f"no tokenizer files in {tok_dir}: set model.tokenizer to a hub id or a directory")
        link_tree(tok_dir, dest, TOKENIZER_PATTERNS)


def fingerprinted_files(model: dict[str, Any], environment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The file records of each fingerprinted directory, where they hash to the fingerprint in the key: not where a
    file changed since the plan, as they would not be the files the artifact is keyed by."""
    records = {name: file_records(directory) for name, directory in fingerprinted_dirs(model).items()}
    return {name: files for name, files in records.items() if fingerprint_of(files) == environment.get(name)}


def _check_synthetic(model: dict[str, Any]) -> None:
    spec = arch_spec(model["arch"])
    if spec.vocab_size < 257:
        raise StepError(f"model.arch.vocab_size={spec.vocab_size} is below 257, the smallest byte-level vocab")


def _check_local(model: dict[str, Any]) -> None:
    if not model.get("path"):
        raise StepError("model.source=local needs model.path=/path/to/checkpoint")
    model_dir = Path(model["path"]).expanduser()
    if not model_dir.exists():  # e.g. moved or removed since an earlier run cached its steps
        raise StepError(f"model.path={model['path']} does not exist; set model.path to the checkpoint's directory")
    if not model_dir.is_dir():  # e.g. its config.json or weights file: named here, as the user wrote it
        raise StepError(f"model.path={model['path']} is a file, not a directory; set model.path to the checkpoint's "
                        "directory")
    detect_layout(model_dir)
    tokenizer_dir(model)
    if not model.get("tokenizer") and not has_tokenizer(model_dir):
        raise StepError(f"model.path={model['path']} has no tokenizer files and model.tokenizer is null; set "
                        "model.tokenizer to a tokenizer directory or a hub id")


def _check_local_contents(model: dict[str, Any]) -> None:
    """What the later steps will read from a local source, read now: its architecture and its tokenizer."""
    check_architecture(Path(model["path"]).expanduser())
    _check_local_tokenizer(model)


def check_architecture(model_dir: Path) -> None:
    """Read the architecture from `model_dir` as the convert step will (for the HF layouts also through transformers'
    own config class, as the evaluate step will), so that a bad field is a plan problem naming it, not a failure
    after the steps ahead of it ran."""
    try:
        detect_source(model_dir)
    except ConvertError as err:
        raise StepError(str(err)) from None


def _check_local_tokenizer(model: dict[str, Any]) -> None:
    """Load the local tokenizer from the files the step will link, as the evaluate step will: a broken one is a plan
    problem naming the user's files. Once transformers is imported (for check_architecture), it takes milliseconds."""
    from mambapipe.evaluate.prompts import FIX_LOCAL_TOKENIZER, load_tokenizer

    source = tokenizer_dir(model) or (None if model.get("tokenizer") else Path(model["path"]).expanduser())
    if source is None:  # a hub id: fetched when the step runs
        return
    with temporary_directory("mambapipe-tokenizer-") as linked:
        with filling_tmpdir():  # its links: not the cache, which the runner would name
            link_tree(source, linked, TOKENIZER_PATTERNS)
        load_tokenizer(linked, FIX_LOCAL_TOKENIZER)


def _check_hub(model: dict[str, Any]) -> None:
    if not model.get("repo_id"):
        raise StepError("model.source=hub needs model.repo_id (e.g. state-spaces/mamba-130m-hf)")
    tokenizer_dir(model)


CHECKS = {"synthetic": _check_synthetic, "local": _check_local, "hub": _check_hub}


def model_settings(params: dict[str, Any]) -> dict[str, Any]:
    """The step's model.* params by their names under model (`source`, `path`, ...); keys the source does not
    read are absent, so `.get` gives None for them."""
    return {key.removeprefix("model."): value for key, value in params.items()}


STEP = DownloadStep()
