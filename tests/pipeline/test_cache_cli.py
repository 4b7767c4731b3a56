"""`mambapipe-cache ls|rm` on a cache filled by fake runs."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta, timezone

import pytest

from mambapipe.pipeline.cache import age, config_slice, main
from mambapipe.pipeline.store import ArtifactStore


def run_cli(capsys, store, *args):
    code = main(["--cache-dir", str(store.root), *args])
    return code, capsys.readouterr().out


@pytest.fixture
def filled(pipeline):
    pipeline.run()
    pipeline.run("eval.max_ite=5")  # a second evaluate artifact
    return pipeline.store


def test_ls_lists_every_artifact_with_size_age_and_config(capsys, filled):
    code, out = run_cli(capsys, filled, "ls")
    assert code == 0
    assert out.count("evaluate") == 2 and "convert" in out and "download" in out
    assert "eval.max_ite=5" in out and "eval.max_ite=4" in out
    assert "model.seed=0 model.source=synthetic" in out and "model.arch=Mamba2 H64 L2" in out
    assert " B" in out or "KB" in out


def test_ls_names_the_hub_commits_an_artifact_was_pinned_to(capsys, tmp_path):
    store = ArtifactStore(tmp_path)
    manifest = {"step": "download", "created": "2026-11-30T00:00:00+00:00", "params": {"model.revision": "main"},
                "environment": {"commit": "c" * 40, "tokenizer_commit": "d" * 40}}
    store.commit(store.new_staging("download", "k" * 64), "download", "k" * 64, manifest)
    _, out = run_cli(capsys, store, "ls")
    assert f"model.revision=main commit={'c' * 12} tokenizer_commit={'d' * 12}" in out


def test_ls_one_step(capsys, filled):
    _, out = run_cli(capsys, filled, "ls", "--step", "convert")
    assert "convert" in out and "evaluate" not in out


def test_rm_step_removes_only_that_step(capsys, filled):
    code, out = run_cli(capsys, filled, "rm", "--step", "evaluate")
    assert code == 0 and "removed 2" in out
    assert list(filled.artifacts("evaluate")) == []
    assert len(list(filled.artifacts("build"))) == 1


def test_rm_older_than_uses_the_manifest_date(capsys, filled):
    directory, manifest = next(iter(filled.artifacts("download")))
    manifest["created"] = "2020-01-01T00:00:00.000+00:00"
    (directory / "manifest.json").write_text(json.dumps(manifest))
    _, out = run_cli(capsys, filled, "rm", "--older-than", "2021-01-01")
    assert "removed 1" in out
    assert list(filled.artifacts("download")) == [] and len(list(filled.artifacts("evaluate"))) == 2


def test_rm_all_empties_the_cache_and_leftovers(capsys, filled):
    (filled.root / "convert" / ".staging" / "deadbeef.1.x").mkdir(parents=True)
    _, out = run_cli(capsys, filled, "rm", "--all")
    assert "removed 5" in out
    assert list(filled.artifacts()) == []
    assert not (filled.root / "convert" / ".staging").exists()


def test_rm_key_removes_that_one_artifact(capsys, filled):
    (first, _), (second, _) = filled.artifacts("evaluate")
    code, out = run_cli(capsys, filled, "rm", "--key", first.name[:12])
    assert code == 0 and out.startswith("removed 1 artifact(s)")
    assert not first.exists() and second.is_dir() and len(list(filled.artifacts())) == 4


def test_rm_key_refuses_a_prefix_of_several_keys_naming_them(capsys, tmp_path):
    store = ArtifactStore(tmp_path)
    for digit, step in (("1", "evaluate"), ("2", "evaluate"), ("3", "build")):
        key = f"abcd{digit}".ljust(64, "0")
        store.commit(store.new_staging(step, key), step, key, {"step": step, "created": "2026-11-30T00:00:00+00:00"})
    assert main(["--cache-dir", str(tmp_path), "rm", "--key", "ABCD"]) == 2
    assert capsys.readouterr().err == (
        "mambapipe-cache rm: error: key abcd is ambiguous: 3 artifacts start with it (build abcd30000000, "
        "evaluate abcd10000000, evaluate abcd20000000); give more of the key or --step\n")
    assert len(list(store.artifacts())) == 3
    assert main(["--cache-dir", str(tmp_path), "rm", "--step", "build", "--key", "abcd"]) == 0
    assert [directory.parent.name for directory, _ in store.artifacts()] == ["evaluate", "evaluate"]
    assert main(["--cache-dir", str(tmp_path), "rm", "--step", "build", "--key", "abcd"]) == 2
    assert "error: no artifact of step build has a key that starts with abcd; mambapipe-cache ls lists them\n" in \
        capsys.readouterr().err


def test_rm_key_keeps_an_artifact_a_running_run_is_reading(capsys, filled):
    (engine, _), = filled.artifacts("build")
    with filled.reading("build", engine.name):
        code, out = run_cli(capsys, filled, "rm", "--key", engine.name[:12])
    assert code == 1 and engine.is_dir() and f"kept build {engine.name[:12]}: a running run is reading it" in out


@pytest.mark.parametrize("args, error", [
    ([], "say what to remove: --all, --step STEP, --older-than YYYY-MM-DD or --key KEY"),
    (["--all", "--step", "build"], "--step goes alone or with --key, not with --all or --older-than"),
    (["--key", "abc"], "'abc' is not a key: give the key that ls prints (4 characters or more)"),
    (["--key", "1a2b", "--older-than", "2026-01-01"], "not allowed with argument"),
])
def test_rm_arguments_that_do_not_say_what_to_remove_are_rejected(capsys, tmp_path, args, error):
    with pytest.raises(SystemExit) as exit_info:
        main(["--cache-dir", str(tmp_path), "rm", *args])
    assert exit_info.value.code == 2 and error in capsys.readouterr().err


def test_rm_spares_the_staging_dir_of_a_run_still_writing(capsys, filled):
    """A live run holds its key's lock while its step writes into staging: removing that dir would make
    the run crash when it commits."""
    staging = filled.root / "convert" / ".staging"
    live, dead = staging / "feedface.42.a", staging / "deadbeef.1.x"
    live.mkdir(parents=True)
    dead.mkdir()
    with filled.lock("convert", "feedface"):
        run_cli(capsys, filled, "rm", "--all")
        assert live.is_dir() and not dead.exists()
    run_cli(capsys, filled, "rm", "--step", "convert")
    assert not staging.exists()

def test_rm_keeps_an_artifact_a_running_run_is_reading(capsys, filled):
    (engine, _), = filled.artifacts("build")
    with filled.reading("build", engine.name):
        code, out = run_cli(capsys, filled, "rm", "--all")
        assert code == 1 and engine.is_dir() and [d for d, _ in filled.artifacts()] == [engine]
        assert f"kept build {engine.name[:12]}: a running run is reading it" in out
    code, out = run_cli(capsys, filled, "rm", "--all")
    assert code == 0 and not engine.exists()


def test_ls_shows_what_is_in_staging_and_rm_says_what_it_freed(capsys, filled):
    staging = filled.root / "convert" / ".staging"
    for name in ("feedface.42.a", "deadbeef.1.x"):
        (staging / name).mkdir(parents=True)
        (staging / name / "rank0.safetensors").write_bytes(b"0" * 3072)
    with filled.lock("convert", "feedface"):
        _, out = run_cli(capsys, filled, "ls")
        assert re.search(r"convert .*feedface .*3\.0 KB .*being written by a running run", out)
        assert re.search(r"convert .*deadbeef .*3\.0 KB .*left by a killed run: not cached; rm --step convert", out)
        _, out = run_cli(capsys, filled, "rm", "--step", "convert")
    assert "removed 1 artifact(s) and 3.0 KB left by killed runs" in out


def test_removed_artifacts_are_remade_only_where_a_step_reads_them(capsys, filled, pipeline):
    run_cli(capsys, filled, "rm", "--step", "build")
    pipeline.ran()
    pipeline.run()
    assert pipeline.ran() == []  # the cached evaluate made from it still stands
    assert "not needed: the steps that read it are cached" in pipeline.output
    pipeline.run("eval.max_ite=6")
    assert pipeline.ran() == ["build", "evaluate"]


def test_a_damaged_manifest_is_listed_remade_and_removable(capsys, filled, pipeline):
    directory, _ = next(iter(filled.artifacts("build")))
    (directory / "manifest.json").write_text('{"step": "build", trunc')
    code, out = run_cli(capsys, filled, "ls")
    assert code == 0 and "damaged manifest.json" in out and "rm --step build" in out
    assert run_cli(capsys, filled, "rm", "--step", "build")[1].startswith("removed 1 artifact")
    assert not directory.exists()
    (next(iter(filled.artifacts("convert")))[0] / "manifest.json").write_text("[]")
    pipeline.ran()
    assert not pipeline.run("eval.max_ite=6").failed
    assert pipeline.ran() == ["convert", "build", "evaluate"]


def test_rm_older_than_dates_a_damaged_manifest_by_its_mtime(capsys, filled):
    """A damaged manifest has no `created` to read; its file's last write dates it, in ls as in rm --older-than."""
    (old, _), (new, _) = list(filled.artifacts("evaluate"))
    for directory in (old, new):
        (directory / "manifest.json").write_text('{"step": "evaluate", trunc')
    os.utime(old / "manifest.json", (datetime(2020, 1, 1, tzinfo=timezone.utc).timestamp(),) * 2)
    listing = run_cli(capsys, filled, "ls")[1]
    assert re.search(rf"{old.name[:12]} │ [^│]+ │ +\d{{4}}d │ damaged manifest.json", listing), listing
    assert run_cli(capsys, filled, "rm", "--older-than", "2021-01-01")[1].startswith("removed 1 artifact")
    assert not old.exists() and new.is_dir() and len(list(filled.artifacts())) == 3


@pytest.mark.parametrize("text", ["last week", "2026-1-5", "2026-13-01"])
def test_bad_date_is_rejected(capsys, filled, text):
    with pytest.raises(SystemExit) as exit_info:
        main(["--cache-dir", str(filled.root), "rm", "--older-than", text])
    assert exit_info.value.code == 2 and f"{text!r} is not a date like 2026-01-31" in capsys.readouterr().err


def test_a_cache_dir_that_does_not_exist_is_named(capsys, tmp_path):
    code = main(["--cache-dir", str(tmp_path / "typo"), "ls"])
    assert code == 0 and f"{tmp_path / 'typo'} does not exist" in capsys.readouterr().out.replace("\n", "")


@pytest.mark.parametrize("command", [["ls"], ["rm", "--all"]])
def test_a_file_given_as_cache_dir_is_a_user_error(capsys, tmp_path, command):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    code = main(["--cache-dir", str(a_file), *command])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and a_file.is_file()
    assert captured.err == (f"mambapipe-cache: error: --cache-dir {a_file} is a file, not a directory; "
                            "pass the cache directory\n")


def test_a_file_named_by_the_cache_variable_is_a_user_error(capsys, tmp_path, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    monkeypatch.setenv("MAMBAPIPE_CACHE", str(a_file))
    assert main(["ls"]) == 2
    assert f"error: $MAMBAPIPE_CACHE {a_file} is a file, not a directory" in capsys.readouterr().err


def test_age_is_human():
    now = datetime(2026, 1, 2, tzinfo=timezone.utc)
    assert age((now - timedelta(hours=5)).isoformat(), now) == "5h"
    assert age((now - timedelta(days=3)).isoformat(), now) == "3d"
    assert age("2026-01-01T12:00:00", now) == "12h"  # no zone: UTC


def test_an_artifact_keyed_on_part_of_the_architecture_shows_that_part():
    """trtllm's build keys model.arch.mamba_version alone: 'H None L None V None' said nothing true."""
    partial = {"params": {"model.arch.mamba_version": "Mamba2", "backend": "trtllm"}}
    whole = {"params": {"model.arch.mamba_version": "Mamba1", "model.arch.hidden_size": 768,
                        "model.arch.num_layers": 24, "model.arch.vocab_size": 50280}}
    assert config_slice(partial) == "backend=trtllm model.arch=Mamba2"
    assert config_slice(whole) == "model.arch=Mamba1 H768 L24 V50280"
