"""Cache keys are stable hashes of exactly what a step depends on; the store's commit is atomic."""

from __future__ import annotations

import json
import threading
import time

import pytest

from mambapipe.pipeline.keys import short, step_key
from mambapipe.pipeline.plan import step_params
from mambapipe.pipeline.store import ArtifactStore

BASE = dict(name="build", version=1, params={"dtype": "float16", "build.max_batch_size": 8},
            inputs={"convert": "c" * 64}, environment={})


def key(**changes) -> str:
    return step_key(**{**BASE, **changes})


def test_key_ignores_dict_order_and_sees_every_ingredient():
    assert key() == key(params={"build.max_batch_size": 8, "dtype": "float16"})
    variants = [key(version=2), key(name="convert"), key(inputs={"convert": "d" * 64}),
                key(environment={"tensorrt_llm": "0.20"}), key(params={**BASE["params"], "dtype": "bfloat16"})]
    assert len({key(), *variants}) == 6
    assert len(key()) == 64 and short(key()) == key()[:12]


class ChainedStep:
    """Reads `mode`; mode=deep brings `depth`, and depth > 1 brings `detail`."""
    uses = ("mode",)

    def extra_uses(self, params):
        if params["mode"] != "deep":
            return ()
        return ("depth", "detail") if params.get("depth", 0) > 1 else ("depth",)


def test_extra_uses_is_asked_again_until_it_adds_nothing():
    config = {"mode": "deep", "depth": 2, "detail": "x", "unread": 1}
    assert step_params(ChainedStep(), config) == {"mode": "deep", "depth": 2, "detail": "x"}
    assert step_params(ChainedStep(), {**config, "depth": 1}) == {"mode": "deep", "depth": 1}
    assert step_params(ChainedStep(), {**config, "mode": "shallow"}) == {"mode": "shallow"}


def test_commit_writes_manifest_last_and_replaces_a_forced_artifact(tmp_path):
    store = ArtifactStore(tmp_path)
    for attempt, created in (("first", "2026-11-01T00:00:00"), ("second", "2026-11-02T00:00:00")):
        staging = store.new_staging("build", "k")
        (staging / "engine.bin").write_text(attempt)
        assert store.is_complete("build", "k") == (attempt == "second")  # staging never counts
        with store.lock("build", "k"):
            final = store.commit(staging, "build", "k", {"step": "build", "created": created})
    assert (final / "engine.bin").read_text() == "second" and store.manifest("build", "k")["created"] == created
    assert [d.name for d, _ in store.artifacts()] == ["k"]
    assert not any(p.name.startswith("k.") for p in (tmp_path / "build" / ".staging").iterdir())


def test_a_forced_artifact_is_replaced_only_once_no_run_reads_it(tmp_path):
    store = ArtifactStore(tmp_path)
    for attempt in ("old", "new"):
        staging = store.new_staging("build", "k")
        (staging / "engine.bin").write_text(attempt)
        if attempt == "new":
            break
        store.commit(staging, "build", "k", {"step": "build", "created": "2026-11-01T00:00:00"})
    waited = threading.Event()
    reader = store.reading("build", "k")
    reader.__enter__()
    committer = threading.Thread(target=store.commit, args=(staging, "build", "k", {"created": "2026-11-02T00:00:00"}),
                                 kwargs={"on_wait": waited.set})
    committer.start()
    assert waited.wait(timeout=10)
    time.sleep(0.2)
    assert (store.path("build", "k") / "engine.bin").read_text() == "old"  # still there for its reader
    reader.__exit__(None, None, None)
    committer.join(timeout=10)
    assert (store.path("build", "k") / "engine.bin").read_text() == "new"


def test_a_waiting_forced_artifact_goes_ahead_of_readers_that_come_after_it(tmp_path):
    """Without a writer preference, overlapping readers could keep a forced re-run waiting for ever."""
    store = ArtifactStore(tmp_path)
    old = store.new_staging("build", "k")
    (old / "engine.bin").write_text("old")
    store.commit(old, "build", "k", {"created": "2026-11-01T00:00:00"})
    first_reader = store.reading("build", "k")
    first_reader.__enter__()
    new, waited, seen = store.new_staging("build", "k"), threading.Event(), []
    (new / "engine.bin").write_text("new")
    committer = threading.Thread(target=store.commit, args=(new, "build", "k", {"created": "2026-11-02T00:00:00"}),
                                 kwargs={"on_wait": waited.set})
    committer.start()
    assert waited.wait(timeout=10)

    queued = threading.Event()

    def read_later():
        with store.reading("build", "k", on_wait=queued.set):
            seen.append((store.path("build", "k") / "engine.bin").read_text())
    later_reader = threading.Thread(target=read_later)
    later_reader.start()
    assert queued.wait(timeout=10)  # told it waits, not silent
    time.sleep(0.3)
    assert seen == []  # queued behind the waiting commit, not reading beside the first reader
    first_reader.__exit__(None, None, None)
    committer.join(timeout=10)
    later_reader.join(timeout=10)
    assert seen == ["new"]


def test_readers_share_a_claim_that_excludes_removal(tmp_path):
    store = ArtifactStore(tmp_path)
    with store.reading("build", "k"), store.reading("build", "k"):
        with store.unread("build", "k") as unread:
            assert not unread
    with store.unread("build", "k") as unread:
        assert unread


def test_a_directory_without_manifest_is_never_an_artifact(tmp_path):
    store = ArtifactStore(tmp_path)
    (tmp_path / "convert" / "half").mkdir(parents=True)
    (tmp_path / "convert" / "half" / "rank0.safetensors").write_text("partial")
    assert not store.is_complete("convert", "half") and list(store.artifacts()) == []
    (tmp_path / "convert" / "done").mkdir()
    (tmp_path / "convert" / "done" / "manifest.json").write_text(json.dumps({"created": "2026-11-01T00:00:00"}))
    assert [d.name for d, _ in store.artifacts("convert")] == ["done"]


@pytest.mark.parametrize("text", ['{"created": "2026-11-01T00:0', "[]", '{"step": "convert"}', '{"created": "x"}',
                                  '{"created": "2026-11-01", "inputs": 3}', '{"created": "2026-11-01", "params": []}',
                                  '{"created": "2026-11-01", "inputs": {"x": 5}}'])
def test_a_damaged_manifest_is_not_an_artifact(tmp_path, text):
    store = ArtifactStore(tmp_path)
    (tmp_path / "convert" / "k").mkdir(parents=True)
    (tmp_path / "convert" / "k" / "manifest.json").write_text(text)
    assert not store.is_complete("convert", "k") and list(store.artifacts()) == []
    assert [(d.name, manifest) for d, manifest in store.entries("convert")] == [("k", None)]
