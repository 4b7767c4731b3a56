"""`mambapipe-cache ls|rm` on a cache filled by fake runs."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from importlib import metadata

import pytest

from mambapipe.pipeline import cache
from mambapipe.pipeline.cache import config_items, created_column, main, remove, select_for_removal, setting_apart
from mambapipe.pipeline.lineage import lineage
from mambapipe.pipeline.store import ArtifactStore, dir_size


def run_cli(capsys, store, *args):
    code, out, _ = run_cli_streams(capsys, store, *args)
    return code, out


def run_cli_streams(capsys, store, *args):
    """The exit code, standard output (the listing, what rm removed) and standard error (what it kept, and why)."""
    code = main(["--cache-dir", str(store.root), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def filled(pipeline):
    pipeline.run()
    pipeline.run("eval.max_ite=5")  # a second evaluate artifact
    return pipeline.store


def test_ls_lists_every_artifact_with_its_date_size_and_what_it_is(capsys, filled):
    code, out = run_cli(capsys, filled, "ls")
    assert code == 0
    assert out.count("evaluate") == 2 and "convert" in out and "download" in out
    assert re.search(r"│ evaluate │ \w{12} │ \d{4}-\d\d-\d\d \d\d:\d\d │ +[\d.]+ K?B │ "
                     r"synthetic Mamba2 float32 summarize eval.max_ite=5 +│", out), out
    assert "synthetic Mamba2 float32 summarize eval.max_ite=4 " in out  # the dtype is the build's, found upstream
    assert re.search(r"│ download │ \w{12} │ .* │ synthetic Mamba2 +│", out)


def test_ls_tells_what_an_artifact_is_once_those_it_was_made_from_are_removed(capsys, filled):
    """ls found the dtype and model along the cached artifacts an artifact was made from: once the engine was removed,
    a float16 and a bfloat16 evaluation looked alike (found by QA). Each manifest now records them."""
    run_cli(capsys, filled, "rm", "--step", "build")
    run_cli(capsys, filled, "rm", "--step", "download")
    rows = [line for line in run_cli(capsys, filled, "ls")[1].splitlines() if line.startswith("│")]
    assert [row.split("│")[5].split()[:4] for row in rows] == [["synthetic", "Mamba2", "float32"]] + \
        [["synthetic", "Mamba2", "float32", "summarize"]] * 2


def test_ls_rows_are_one_line_each(capsys, filled):
    """All of an artifact's params made each evaluate row about five lines high: only what tells it apart is
    shown, which fits on one line at 120 columns."""
    rows = [line for line in run_cli(capsys, filled, "ls")[1].splitlines() if line.startswith("│")]
    assert len(rows) == 5 and all(len(row) <= 120 for row in rows)
    assert "eval.batch_size" not in "".join(rows)  # the same in both evaluate rows


@pytest.mark.parametrize("step, lineages", [(None, 5), ("evaluate", 5)])
def test_ls_reads_each_artifacts_lineage_once(capsys, filled, monkeypatch, step, lineages):
    """ls read each listed artifact's lineage three times, twice among those whose model names may collide (as
    listed and as upstream) and once for its summary: 15 for these 5 artifacts, 9 with --step evaluate's 2."""
    read = []
    monkeypatch.setattr(cache, "lineage", lambda manifest, lookup: read.append(manifest) or lineage(manifest, lookup))
    run_cli(capsys, filled, "ls", *(["--step", step] if step else []))
    assert len(read) == lineages  # each cached artifact's: a listed one's and those it may have been made from


@pytest.fixture
def evaluations(pipeline):
    """Evaluations of one engine that differ in eval.max_ite, a benchmark of it, and one of a float16 engine."""
    for overrides in ((), ("eval.max_ite=2",), ("eval.max_ite=3",), ("eval.task=benchmark",), ("dtype=float16",)):
        pipeline.run(*overrides)
    return pipeline.store


def what_column(out):
    return sorted(line.split("│")[-2].strip() for line in out.splitlines() if line.startswith("│ evaluate"))


def test_ls_shows_what_sets_each_evaluation_apart_at_120_columns(capsys, evaluations, monkeypatch):
    """Each row listed every setting that varied anywhere in its step (eval.batch_size=1 eval.check_accuracy=False
    ...: a benchmark lacks them), what told it apart cut off at 120 columns (found by a docs audit)."""
    monkeypatch.delenv("COLUMNS", raising=False)  # capsys's stdout is no terminal: 120 columns
    assert what_column(run_cli(capsys, evaluations, "ls")[1]) == [
        "synthetic Mamba2 float16 summarize", "synthetic Mamba2 float32 benchmark",
        "synthetic Mamba2 float32 summarize eval.max_ite=2", "synthetic Mamba2 float32 summarize eval.max_ite=3",
        "synthetic Mamba2 float32 summarize eval.max_ite=4"]


def items(*shown):
    """Config items as config_items gives them, by what each sets."""
    return {item.split("=")[0].split(" ")[0]: item for item in shown}


def test_an_artifact_shows_its_settings_that_most_of_its_siblings_do_not_share_the_rarest_first():
    common = items("eval.max_ite=4", "build.max_batch_size=2", "<-build aaa")
    fewer = items("eval.max_ite=2", "build.max_batch_size=2", "<-build aaa")
    rarer = items("eval.max_ite=2", "build.max_batch_size=8", "<-build bbb")
    seeded = [dict(common, seed=f"seed={seed}") for seed in (1, 2)]
    siblings = [common, *seeded, fewer, rarer]
    assert setting_apart(common, siblings) == []
    assert setting_apart(fewer, siblings) == ["eval.max_ite=2"]
    assert setting_apart(rarer, siblings) == ["build.max_batch_size=8", "eval.max_ite=2"]  # not also <-build bbb
    assert setting_apart(seeded[0], siblings) == ["seed=1"]  # where most have none
    assert setting_apart(fewer, [fewer, rarer]) == ["build.max_batch_size=2"]  # no value more common: each its own
    assert setting_apart(fewer, [fewer]) == []


def what_it_is(out):
    """Each row's step, key and 'what', the lines it wraps onto joined (a word folded at its end is joined with
    a space too)."""
    rows = []
    for line in out.splitlines():
        if line.startswith("│"):
            step, key, *_, what = (cell.strip() for cell in line.split("│")[1:-1])
            if step:
                rows.append([step, key, what])
            else:
                rows[-1][2] += f" {what}"
    return rows


@pytest.fixture
def engines(pipeline):
    """Evaluations of two engines that only their longest setting tells apart, and one of each other dtype."""
    for overrides in ((), ("build.max_batch_size=4",), ("dtype=float16",), ("dtype=bfloat16",)):
        pipeline.run(*overrides)
    return pipeline.store


@pytest.mark.parametrize("columns", [40, 60, 80, 100, 120, 200])
def test_ls_wraps_what_an_artifact_is_rather_than_cut_it_at_any_width(capsys, engines, monkeypatch, columns):
    """At 80 columns what told the artifacts apart was cut off with an ellipsis, the dtype included: 'synthetic
    Mamba2 fl…' (found by QA). It wraps now, and the creation time, then the size, make way for it."""
    monkeypatch.setenv("COLUMNS", "250")
    whole = what_it_is(run_cli(capsys, engines, "ls")[1])
    assert "synthetic Mamba2 float32 summarize build.max_batch_size=4" in [what for _, _, what in whole]
    monkeypatch.setenv("COLUMNS", str(columns))
    out = run_cli(capsys, engines, "ls")[1]
    assert all(len(line) <= columns for line in out.splitlines())
    header = next(line for line in out.splitlines() if line.startswith("┃"))  # the title above wraps as the path
    assert ("created (UTC)" in header, "size" in header) == (columns >= 100, columns >= 80)
    wrapped = what_it_is(out)
    if columns >= 60:  # wide enough for every word: each row reads as at 250 columns
        assert wrapped == whole
    else:  # build.max_batch_size=4 folded inside, but all of it there
        assert [[step, key, what.replace(" ", "")] for step, key, what in wrapped] == \
            [[step, key, what.replace(" ", "")] for step, key, what in whole]


def test_ls_leaves_out_the_creation_time_where_it_would_break_a_setting(capsys, engines, monkeypatch):
    """At 100 columns the creation time leaves 'what' about 40, room for build.max_batch_size=4; a longer word (the
    path of a local model whose directory's name another's shares) keeps the creation time out until it fits beside
    it."""
    monkeypatch.setenv("COLUMNS", "100")
    assert "created (UTC)" in run_cli(capsys, engines, "ls")[1]
    for key, team in (("c" * 64, "first"), ("d" * 64, "second")):
        path = f"/data/checkpoints-of-the-{team}-team/mamba-130m"
        put_download(engines, key, {"model.source": "local", "model.path": path}, {"fingerprint": key})
    out = run_cli(capsys, engines, "ls")[1]
    assert "created (UTC)" not in out and "│ /data/checkpoints-of-the-second-team/mamba-130m " in out
    monkeypatch.setenv("COLUMNS", "120")
    assert "created (UTC)" in run_cli(capsys, engines, "ls")[1]


def test_ls_ends_with_the_total(capsys, filled):
    staging = filled.root / "convert" / ".staging" / "deadbeef.1.x"
    staging.mkdir(parents=True)
    (staging / "rank0.safetensors").write_bytes(b"0" * 3072)
    total = sum(dir_size(directory) for directory, _ in filled.artifacts())
    last_line = run_cli(capsys, filled, "ls")[1].rstrip().splitlines()[-1].rstrip()
    assert last_line == f"total: 5 artifact(s), {total:,} bytes ({total / 1024:.1f} KB); and in staging 3,072 bytes " \
                        "(3.0 KB)"


def test_ls_names_the_hub_commits_where_two_downloads_differ_in_them(capsys, tmp_path):
    """A branch's name alone does not say which files a download holds."""
    store = ArtifactStore(tmp_path)
    for key, commit in (("a" * 64, "c" * 40), ("b" * 64, "d" * 40)):
        manifest = {"step": "download", "created": "2026-11-30T00:00:00+00:00", "environment": {"commit": commit},
                    "params": {"model.source": "hub", "model.repo_id": "state-spaces/mamba-130m-hf",
                               "model.revision": "main"}}
        store.commit(store.new_staging("download", key), "download", key, manifest)
    _, out = run_cli(capsys, store, "ls")
    assert f"│ mamba-130m-hf commit={'c' * 12} " in out and f"│ mamba-130m-hf commit={'d' * 12} " in out


def put_download(store, key, params, environment, inputs=None):
    step = "convert" if inputs else "download"
    manifest = {"step": step, "created": "2026-11-30T00:00:00+00:00", "params": params, "environment": environment,
                "inputs": inputs or {}}
    store.commit(store.new_staging(step, key), step, key, manifest)


def test_ls_tells_apart_models_of_one_name(capsys, tmp_path):
    """Two local paths of one name, one path before and after an edit, two hub repos of one name, a hub repo and a
    local path spelt alike: each row, and each row made from them, says which it is."""
    store = ArtifactStore(tmp_path)
    fingerprint_1, fingerprint_2 = "9f8e7d6" + "0" * 57, "1b2c3d4" + "0" * 57
    for digit, params, environment in (
            ("1", {"model.source": "local", "model.path": "/data/a/ckpt"}, {"fingerprint": fingerprint_1}),
            ("2", {"model.source": "local", "model.path": "/data/a/ckpt"}, {"fingerprint": fingerprint_2}),
            ("3", {"model.source": "local", "model.path": "/data/b/ckpt"}, {"fingerprint": fingerprint_1}),
            ("4", {"model.source": "hub", "model.repo_id": "org1/mamba"}, {"commit": "c" * 40}),
            ("5", {"model.source": "hub", "model.repo_id": "org2/mamba"}, {"commit": "c" * 40}),
            ("6", {"model.source": "hub", "model.repo_id": "org/m"}, {"commit": "c" * 40}),
            ("7", {"model.source": "local", "model.path": "org/m"}, {"fingerprint": fingerprint_1})):
        put_download(store, digit * 64, params, environment)
    put_download(store, "8" * 64, {"dtype": "float16"}, {}, {"download": "3" * 64})
    rows = {line.split("│")[2].strip(): line.split("│")[5].strip()
            for line in run_cli(capsys, store, "ls")[1].splitlines() if line.startswith("│")}
    assert rows == {"1" * 12: "/data/a/ckpt fingerprint=9f8e7d600000",
                    "2" * 12: "/data/a/ckpt fingerprint=1b2c3d400000",
                    "3" * 12: "/data/b/ckpt",
                    "4" * 12: "org1/mamba",
                    "5" * 12: "org2/mamba",
                    "6" * 12: "org/m model.repo_id=org/m",
                    "7" * 12: "org/m model.path=org/m",
                    "8" * 12: "/data/b/ckpt float16"}


def test_ls_tells_apart_evaluations_of_one_dataset_file_before_and_after_an_edit(capsys, tmp_path):
    store = ArtifactStore(tmp_path)
    for digit, sha256 in (("1", "a" * 64), ("2", "b" * 64)):
        manifest = {"step": "evaluate", "created": "2026-11-30T00:00:00+00:00", "inputs": {},
                    "params": {"eval.task": "summarize", "eval.dataset": "sample"},
                    "environment": {"dataset_sha256": sha256}}
        store.commit(store.new_staging("evaluate", digit * 64), "evaluate", digit * 64, manifest)
    rows = {line.split("│")[2].strip(): line.split("│")[5].strip()
            for line in run_cli(capsys, store, "ls")[1].splitlines() if line.startswith("│")}
    assert rows["1" * 12].endswith("dataset_sha256=aaaaaaaaaaaa")
    assert rows["2" * 12].endswith("dataset_sha256=bbbbbbbbbbbb")


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


def test_rm_keeps_the_lock_files_of_what_it_removes(capsys, filled):
    """Deleting a lock file lets a process that waits on it and one that comes after hold it at once (the reasons are
    ArtifactStore._lock_file's): three empty files a key stay."""
    locks = sorted(filled.root.glob("*/.locks/*"))
    assert len(locks) == 3 * 5 and all(lock.stat().st_size == 0 for lock in locks)
    run_cli(capsys, filled, "rm", "--all")
    assert sorted(filled.root.glob("*/.locks/*")) == locks


def test_rm_key_removes_that_one_artifact(capsys, filled):
    (first, _), (second, _) = filled.artifacts("evaluate")
    code, out = run_cli(capsys, filled, "rm", "--key", first.name[:12])
    assert code == 0 and out.startswith(f"removed 1 artifact(s) (evaluate {first.name[:12]}) from ")
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
        code, out, err = run_cli_streams(capsys, filled, "rm", "--key", engine.name[:12])
    assert code == 1 and engine.is_dir() and out.startswith("removed 0 artifact(s) from ")
    assert err == f"kept build {engine.name[:12]}: a running run is reading it; run the same rm again once it has " \
                  "finished\n"


@pytest.mark.parametrize("args, error", [
    ([], "say what to remove: --all, --step STEP, --older-than YYYY-MM-DD or --key KEY"),
    (["--all", "--step", "build"], "--step goes alone or with --key, not with --all or --older-than"),
    (["--key", "abc"], "'abc' is not a key: give the key that ls prints (4 characters or more)"),
    (["--key", "zzzz"], "'zzzz' is not a key: keys are hex (0-9, a-f), as ls prints them"),
    (["--key", "ab"], "'ab' is not a key: give the key that ls prints (4 characters or more)"),
    (["--key", "a" * 65], f"'{'a' * 65}' is not a key: keys are 64 characters at most"),
    (["--key", "1a2b", "--older-than", "2026-01-01"], "not allowed with argument"),
])
def test_rm_arguments_that_do_not_say_what_to_remove_are_rejected(capsys, tmp_path, args, error):
    with pytest.raises(SystemExit) as exit_info:
        main(["--cache-dir", str(tmp_path), "rm", *args])
    assert exit_info.value.code == 2 and error in capsys.readouterr().err


def test_rm_keeps_an_artifact_a_forced_run_is_making_again(capsys, filled):
    """Waiting for the run's lock, rm used to remove the new artifact the moment the run committed it."""
    (engine, _), = filled.artifacts("build")
    with filled.lock("build", engine.name):  # what force=[build] holds from before its step until its commit
        code, out, err = run_cli_streams(capsys, filled, "rm", "--key", engine.name[:12])
    assert code == 1 and engine.is_dir() and out.startswith("removed 0 artifact(s) from ")  # no empty "()"
    assert f"kept build {engine.name[:12]}: a running run is making it again (or another run or mambapipe-cache " \
           "holds its key for a moment); run the same rm again" in err


def test_rm_keeps_an_artifact_a_forced_run_made_again_after_rm_selected_it(filled, monkeypatch):
    """rm selects first, then removes artifact after artifact: a forced re-run may commit a new artifact in place of
    a selected one before rm comes to it (a new one that `--older-than` would not even select)."""
    (engine, manifest), = filled.artifacts("build")
    staging = filled.new_staging("build", engine.name)
    (staging / "rank0.engine").write_bytes(b"made again")
    remove_dir = filled.remove_dir

    def remove_then_commit(directory):  # the forced re-run commits while rm removes the artifacts before its own
        remove_dir(directory)
        if staging.exists():
            with filled.lock("build", engine.name):
                filled.commit(staging, "build", engine.name, manifest)
    monkeypatch.setattr(filled, "remove_dir", remove_then_commit)
    selected = sorted(select_for_removal(filled, None, "2999-01-01"), key=lambda directory: directory == engine)
    removal = remove(filled, selected, [])
    assert removal.in_use == [(engine, "a run has made it again since rm selected it")]
    assert (engine / "rank0.engine").read_bytes() == b"made again" and len(removal.removed) == 4


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
        code, out, err = run_cli_streams(capsys, filled, "rm", "--all")
        assert code == 1 and engine.is_dir() and [d for d, _ in filled.artifacts()] == [engine]
        assert f"kept build {engine.name[:12]}: a running run is reading it" in err and "kept" not in out
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
        assert re.search(r"convert .*deadbeef .*3\.0 KB .*left by a killed run: not cached; rm --key removes it", out)
        _, out = run_cli(capsys, filled, "rm", "--step", "convert")
    assert "removed 1 artifact(s) and 3.0 KB left by killed runs" in out


def test_rm_step_removes_what_a_killed_re_run_of_a_removed_artifact_left(capsys, filled):
    """A killed force=[build] leaves staging beside the artifact; rm --step took the artifact and then kept that
    staging as 'being written', its own lock on the key still held (found by review)."""
    (engine, _), = filled.artifacts("build")
    leftover = filled.root / "build" / ".staging" / f"{engine.name}.99999.deadbeef"
    leftover.mkdir(parents=True)
    (leftover / "rank0.engine").write_bytes(b"0" * 1000)
    _, out = run_cli(capsys, filled, "rm", "--step", "build")
    assert "removed 1 artifact(s) and 1000 B left by killed runs" in out and not leftover.exists()


def test_rm_key_removes_what_a_killed_run_left_under_that_key(capsys, filled):
    """ls listed the leftover under its key, and rm --key said no artifact had it (found by QA); rm --step, which
    ls suggested, removed every artifact of the step with it."""
    staging = filled.root / "evaluate" / ".staging"
    (staging / "a457f28285b4ffff.4242.deadbeef").mkdir(parents=True)  # a run killed early: nothing written yet
    assert "a457f28285b4 │" in run_cli(capsys, filled, "ls", "--step", "evaluate")[1]
    code, out = run_cli(capsys, filled, "rm", "--key", "a457f28285b4")
    assert code == 0 and out.startswith("removed 0 artifact(s) and 0 B left by killed runs (evaluate a457f28285b4) ")
    assert not staging.exists() and len(list(filled.artifacts("evaluate"))) == 2


def test_rm_key_removes_an_artifact_with_what_a_killed_re_run_of_it_left(capsys, filled):
    (engine, _), = filled.artifacts("build")
    key = engine.name[:12]
    leftover = filled.root / "build" / ".staging" / f"{engine.name}.99999.deadbeef"
    leftover.mkdir(parents=True)
    (leftover / "rank0.engine").write_bytes(b"0" * 1000)
    code, out = run_cli(capsys, filled, "rm", "--key", key)
    assert code == 0 and out.startswith(f"removed 1 artifact(s) and 1000 B left by killed runs (build {key}) ")
    assert not engine.exists() and not leftover.exists()


def test_rm_key_keeps_what_a_running_run_is_writing(capsys, filled):
    live = filled.root / "convert" / ".staging" / f"{'f' * 64}.42.a"
    live.mkdir(parents=True)
    with filled.lock("convert", "f" * 64):
        code, out, err = run_cli_streams(capsys, filled, "rm", "--key", "ffff")
    assert code == 1 and live.is_dir()
    assert out.startswith("removed 0 artifact(s) from ")
    assert "kept convert ffffffffffff: a running run is writing it (or another run or mambapipe-cache holds its key " \
           "for a moment); run the same rm again" in err


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
    assert code == 0 and "damaged manifest.json: not cached; rm --key removes it" in out
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
    assert re.search(rf"{old.name[:12]} │ 2020-01-01 00:00 │ [^│]+ │ damaged manifest.json", listing), listing
    assert run_cli(capsys, filled, "rm", "--older-than", "2021-01-01")[1].startswith("removed 1 artifact")
    assert not old.exists() and new.is_dir() and len(list(filled.artifacts())) == 3


@pytest.mark.parametrize("text", ["last week", "2026-1-5", "2026-13-01"])
def test_bad_date_is_rejected(capsys, filled, text):
    with pytest.raises(SystemExit) as exit_info:
        main(["--cache-dir", str(filled.root), "rm", "--older-than", text])
    assert exit_info.value.code == 2 and f"{text!r} is not a date like 2026-01-31" in capsys.readouterr().err


def test_cache_dir_may_come_after_the_command(capsys, filled, monkeypatch, tmp_path):
    """As the command's own options do: `ls --cache-dir X` was refused ('unrecognized arguments')."""
    monkeypatch.setenv("MAMBAPIPE_CACHE", str(tmp_path / "elsewhere"))
    assert main(["ls", "--step", "evaluate", "--cache-dir", str(filled.root)]) == 0
    assert capsys.readouterr().out.count("│ evaluate │") == 2
    assert main(["rm", "--step", "evaluate", "--cache-dir", str(filled.root)]) == 0
    assert "removed 2 artifact(s)" in capsys.readouterr().out and list(filled.artifacts("evaluate")) == []


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out == f"mambapipe-cache {metadata.version('mambapipe')}\n"


def test_a_cache_dir_that_does_not_exist_is_named(capsys, tmp_path):
    """ls printed an empty table and a total of 0 below the line (found by QA); rm --all says it removed 0."""
    code = main(["--cache-dir", str(tmp_path / "typo"), "ls"])
    captured = capsys.readouterr()  # a warning, not a listing: `ls > cache.txt` shows it on the terminal
    assert code == 0 and captured.out == ""
    assert captured.err == f"{tmp_path / 'typo'} does not exist: nothing is cached there (a wrong --cache-dir, " \
                           "or no run has used it yet)\n"
    assert main(["--cache-dir", str(tmp_path / "typo"), "rm", "--all"]) == 0 and not (tmp_path / "typo").exists()


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


def test_created_is_shown_in_utc():
    assert created_column("2026-01-01T12:00:00.123+02:00") == "2026-01-01 10:00"
    assert created_column("2026-01-01T12:00:00") == "2026-01-01 12:00"  # no zone: UTC


def test_an_artifact_keyed_on_part_of_the_architecture_shows_that_part():
    """trtllm's build keys model.arch.mamba_version alone: 'H None L None V None' said nothing true."""
    partial = {"params": {"model.arch.mamba_version": "Mamba2", "backend": "trtllm"}}
    whole = {"params": {"model.arch.mamba_version": "Mamba1", "model.arch.hidden_size": 768,
                        "model.arch.num_layers": 24, "model.arch.vocab_size": 50280}}
    assert config_items(partial) == {"backend": "backend=trtllm", "model.arch": "model.arch=Mamba2"}
    assert config_items(whole) == {"model.arch": "model.arch=Mamba1 H768 L24 V50280"}


@pytest.mark.parametrize("columns, width", [(None, 120), ("250", 250), ("60", 60)])
def test_output_to_a_file_is_120_wide_unless_columns_says(monkeypatch, columns, width):
    """ls > file cut the 'what' column at 120 with no way to widen it."""
    from mambapipe.pipeline.report import make_console

    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert make_console().width == width
