"""eval.dataset=cnn_dailymail is pinned to the hub dataset's commit at plan time, as the model download
is: the commit enters the evaluate key and is the revision loaded. The hub is always mocked."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import httpx2
import pytest

from mambapipe.evaluate import data, task
from mambapipe.evaluate.task import EvalJob
from mambapipe.evaluate.worker import read_job, write_job
from mambapipe.pipeline.plan import build_plan
from mambapipe.pipeline.resolve import resolve_config
from mambapipe.pipeline.step import StepContext, StepError
from mambapipe.pipeline.store import ArtifactStore
from mambapipe.steps import evaluate as evaluate_step
from mambapipe.steps import load_steps

HUB_ID = "abisee/cnn_dailymail"
COMMIT, NEWER = "a" * 40, "b" * 40


@pytest.fixture
def hub_cache(monkeypatch, tmp_path) -> Path:
    """An empty Hugging Face hub cache, online unless a test says otherwise."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return cache


def _cache_ref(cache: Path, commit: str) -> None:
    """What one online load_dataset leaves in the hub cache: refs/main and the commit's README."""
    repo = cache / f"datasets--{HUB_ID.replace('/', '--')}"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "README.md").write_text("# cnn_dailymail")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def _evaluate_plan(compose_config, commit: str):
    resolved = resolve_config(compose_config("eval.dataset=cnn_dailymail"))
    with mock.patch("huggingface_hub.HfApi.dataset_info", return_value=mock.Mock(sha=commit)) as dataset_info:
        plan = build_plan(resolved, load_steps(), ArtifactStore(resolved.config["cache_dir"]))
    return plan, dataset_info


def test_the_dataset_commit_enters_the_evaluate_key(compose_config, hub_cache):
    plan, dataset_info = _evaluate_plan(compose_config, COMMIT)
    newer, _ = _evaluate_plan(compose_config, NEWER)
    assert plan.problems == [] and plan.get("evaluate").environment == {"dataset_commit": COMMIT}
    assert dataset_info.call_args.args[0] == HUB_ID and dataset_info.call_args.kwargs["revision"] == "main"
    assert plan.get("evaluate").key != newer.get("evaluate").key
    assert plan.get("build").key == newer.get("build").key


def test_offline_uses_the_cached_commit_or_names_the_dataset_and_the_fix(monkeypatch, hub_cache):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with mock.patch("huggingface_hub.HfApi.dataset_info", side_effect=AssertionError("offline")):
        with pytest.raises(StepError) as err:
            data.hub_commit(HUB_ID)
        _cache_ref(hub_cache, COMMIT)
        assert data.hub_commit(HUB_ID) == COMMIT
    message = str(err.value)
    assert HUB_ID in message and "HF_HUB_OFFLINE" in message and "\n" not in message
    assert "eval.dataset=sample (the bundled sample)" in message and ".jsonl" in message


def test_offline_without_the_dataset_stops_only_plans_that_evaluate(monkeypatch, compose_config, hub_cache):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for steps, stops in (("[download,convert,build]", False), ("[download,convert,build,evaluate]", True)):
        resolved = resolve_config(compose_config("eval.dataset=cnn_dailymail", f"steps={steps}"))
        plan = build_plan(resolved, load_steps(), ArtifactStore(resolved.config["cache_dir"]))
        assert [p for p in plan.problems if p.startswith(f"evaluate: cannot reach {HUB_ID}")] == plan.problems
        assert bool(plan.problems) == stops, steps


def test_an_unreachable_hub_falls_back_to_the_cached_commit(hub_cache):
    with mock.patch("huggingface_hub.HfApi.dataset_info", side_effect=ConnectionError("no route")):
        with pytest.raises(StepError, match=f"cannot reach {HUB_ID} .*ConnectionError.*check the network"):
            data.hub_commit(HUB_ID)
        _cache_ref(hub_cache, COMMIT)
        assert data.hub_commit(HUB_ID) == COMMIT


def test_an_unknown_dataset_points_at_its_setting(hub_cache):
    from huggingface_hub.errors import RepositoryNotFoundError

    missing = RepositoryNotFoundError(
        "404", response=httpx2.Response(404, request=httpx2.Request("GET", "https://huggingface.co")))
    with mock.patch("huggingface_hub.HfApi.dataset_info", side_effect=missing), \
         pytest.raises(StepError, match="nobody/cnn@main not found on the hub: check eval.dataset_hub_id"):
        data.hub_commit("nobody/cnn")


def test_the_run_loads_the_commit_the_plan_pinned(monkeypatch, compose_config, hub_cache, tmp_path):
    plan, _ = _evaluate_plan(compose_config, COMMIT)
    jobs = []

    def evaluation(job: EvalJob) -> None:
        jobs.append(job)
        (job.out_dir / "metrics.json").write_text(json.dumps({"task": "summarize", "samples": 1, "rouge1": 20.0}))

    monkeypatch.setattr(task, "run_evaluation", evaluation)
    planned = plan.get("evaluate")
    ctx = StepContext(environment=planned.environment)
    evaluate_step.STEP.run(planned.params, {"build": tmp_path, "download": tmp_path}, tmp_path, ctx)
    assert jobs[0].dataset_revision == COMMIT and jobs[0].hub_local_only is None
    write_job(jobs[0], tmp_path / "job.json")  # what the ranks read when tp_size > 1
    assert read_job(tmp_path / "job.json").dataset_revision == COMMIT


def test_the_run_hands_the_ranks_the_local_files_planned_hash(monkeypatch, compose_config, tmp_path):
    """The ranks load the file after convert and build ran: they must see the contents the key was made from."""
    path = tmp_path / "articles.jsonl"
    path.write_text('{"article": "a b c", "highlights": "a"}\n')
    resolved = resolve_config(compose_config(f"eval.dataset={path}"))
    planned = build_plan(resolved, load_steps(), ArtifactStore(resolved.config["cache_dir"])).get("evaluate")
    assert _ranks_job(planned, monkeypatch, tmp_path).dataset_sha256 == data.local_dataset_sha256(path)


def test_a_hub_found_unreachable_at_plan_time_sends_the_ranks_to_the_local_cache(monkeypatch, compose_config,
                                                                                hub_cache, tmp_path):
    """datasets retries an unreachable hub for ~20 s before reading its cache; the job tells the ranks not to ask."""
    _cache_ref(hub_cache, COMMIT)
    resolved = resolve_config(compose_config("eval.dataset=cnn_dailymail"))
    with mock.patch("huggingface_hub.HfApi.dataset_info", side_effect=ConnectionError("no route")):
        planned = build_plan(resolved, load_steps(), ArtifactStore(resolved.config["cache_dir"])).get("evaluate")
    assert _ranks_job(planned, monkeypatch, tmp_path).hub_local_only == "unreachable: ConnectionError: no route"


@pytest.fixture
def sample_copy(monkeypatch, tmp_path) -> Path:
    """A copy of the bundled sample that eval.dataset=sample reads, to edit: the real file is never touched."""
    copy = tmp_path / "sample-copy" / "sample.jsonl"
    copy.parent.mkdir()
    copy.write_bytes(data.sample_path().read_bytes())
    monkeypatch.setattr(data, "sample_path", lambda: copy)
    return copy


def test_the_bundled_samples_contents_enter_the_evaluate_key(compose_config, sample_copy):
    """Editing the sample must change the evaluate key, as an edit of a local model.path changes the download's:
    its name alone kept serving the cached scores of the old articles."""
    def planned():
        resolved = resolve_config(compose_config())  # the quickstart: eval.dataset=sample
        return build_plan(resolved, load_steps(), ArtifactStore(resolved.config["cache_dir"]))

    before, contents = planned(), data.local_dataset_sha256(sample_copy)
    records = sample_copy.read_text().splitlines()
    sample_copy.write_text("\n".join([records[1], records[0], *records[2:]]) + "\n")  # the same articles, reordered
    after = planned()
    assert before.get("evaluate").environment == {"dataset_sha256": contents} != after.get("evaluate").environment
    assert before.get("evaluate").key != after.get("evaluate").key
    assert before.get("build").key == after.get("build").key


def test_the_run_hands_the_ranks_the_samples_planned_hash_and_the_loader_checks_it(monkeypatch, compose_config,
                                                                                   sample_copy, tmp_path):
    resolved = resolve_config(compose_config())
    planned = build_plan(resolved, load_steps(), ArtifactStore(resolved.config["cache_dir"])).get("evaluate")
    job = _ranks_job(planned, monkeypatch, tmp_path)
    assert job.dataset_sha256 == data.local_dataset_sha256(sample_copy)
    assert len(data.load_articles("sample", sha256=job.dataset_sha256, show_progress=False)) > 0
    sample_copy.write_text(sample_copy.read_text().replace("e", "E", 1))  # edited while convert and build ran
    with pytest.raises(StepError, match="changed after the plan hashed it"):
        data.load_articles("sample", sha256=job.dataset_sha256, show_progress=False)


def _ranks_job(planned, monkeypatch, tmp_path) -> EvalJob:
    """The job the evaluate step hands its launched ranks (tp_size > 1), run with a stand-in evaluation."""
    jobs = []
    monkeypatch.setattr(task, "run_evaluation", lambda job: jobs.append(job) or (job.out_dir / "metrics.json")
                        .write_text(json.dumps({"task": "summarize", "samples": 1, "rouge1": 20.0})))
    ctx = StepContext(environment=planned.environment)
    evaluate_step.STEP.run(planned.params, {"build": tmp_path, "download": tmp_path}, tmp_path, ctx)
    write_job(jobs[0], tmp_path / "job.json")
    return read_job(tmp_path / "job.json")


def test_load_articles_asks_datasets_for_that_commit(monkeypatch):
    import datasets

    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.Dataset.from_list([{"article": "A long story.", "highlights": "Story."}])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    articles = data.load_articles("cnn_dailymail", HUB_ID, "3.0.0", "test", revision=COMMIT)
    assert articles["highlights"] == ["Story."]
    assert calls == [((HUB_ID, "3.0.0"), {"split": "test", "revision": COMMIT})]


def test_load_articles_with_local_only_keeps_datasets_off_the_hub_for_that_load(monkeypatch):
    import datasets
    import datasets.config

    offline_during_load = []

    def load_dataset(*args, **kwargs):
        offline_during_load.append(datasets.config.HF_HUB_OFFLINE)
        if len(offline_during_load) == 2:
            raise ConnectionError("Couldn't reach 'abisee/cnn_dailymail' on the Hub (OfflineModeIsEnabled)")
        return datasets.Dataset.from_list([{"article": "A long story.", "highlights": "Story."}])

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    data.load_articles("cnn_dailymail", HUB_ID, revision=COMMIT, local_only="unreachable: ConnectError")
    with pytest.raises(StepError) as err:
        data.load_articles("cnn_dailymail", HUB_ID, revision=COMMIT, local_only="HF_HUB_OFFLINE is set")
    assert offline_during_load == [True, True] and datasets.config.HF_HUB_OFFLINE is False
    assert "the local datasets cache does not hold it (HF_HUB_OFFLINE is set); run once with the network" in str(
        err.value) and "\n" not in str(err.value)
