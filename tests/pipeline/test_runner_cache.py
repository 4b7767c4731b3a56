"""The runner's cache: hits on re-run, the right steps re-run after each kind of change, force,
partial runs, plan_only, and the records it writes (run.json, manifest.json)."""

from __future__ import annotations

import io
import json

import pytest
from pipeline_fakes import fake_steps
from rich.console import Console

from mambapipe.pipeline.keys import short
from mambapipe.pipeline.runner import run_recipe


def statuses(result) -> dict[str, str]:
    return {o.name: o.status for o in result.outcomes}


def test_first_run_runs_everything_then_rerun_is_all_cached(pipeline):
    first = pipeline.run()
    assert not first.failed
    assert pipeline.ran() == ["download", "convert", "build", "evaluate"]
    assert set(statuses(first).values()) == {"ran"}
    second = pipeline.run()
    assert pipeline.ran() == []
    assert set(statuses(second).values()) == {"cached"}
    assert [o.key for o in first.outcomes] == [o.key for o in second.outcomes]
    assert "cached" in pipeline.output


@pytest.mark.parametrize("override, expected, reason", [
    ("eval.max_ite=5", ["evaluate"], "eval.max_ite 4→5"),
    ("dtype=float16", ["convert", "build", "evaluate"], "dtype float32→float16"),
    ("build.max_batch_size=4", ["build", "evaluate"], "build.max_batch_size 2→4"),
    ("model.seed=7", ["download", "convert", "build", "evaluate"], "model.seed 0→7"),
    ("tp_size=2", ["convert", "build", "evaluate"], "tp_size 1→2"),
])
def test_a_change_reruns_exactly_the_steps_that_read_it(pipeline, override, expected, reason):
    pipeline.run()
    pipeline.ran()
    result = pipeline.run(override)
    assert pipeline.ran() == expected
    assert [n for n, s in statuses(result).items() if s == "ran"] == expected
    assert reason in pipeline.output


@pytest.mark.parametrize("task, reruns", [("summarize", False), ("benchmark", True)])
def test_a_benchmark_setting_reruns_only_a_benchmark(pipeline, task, reruns):
    pipeline.run(f"eval.task={task}")
    pipeline.ran()
    result = pipeline.run(f"eval.task={task}", "eval.repeats=5")
    assert pipeline.ran() == (["evaluate"] if reruns else [])
    assert statuses(result)["evaluate"] == ("ran" if reruns else "cached")


GATE_MISSED = ("evaluate: rouge1 1.50 <= threshold 2.00 (eval.check_accuracy); metrics.json is in the run directory; "
               "compare with eval.compare_hf=true or lower eval.rouge1_threshold")


def test_the_accuracy_gate_is_checked_on_every_run_against_the_evaluation_its_settings_leave_cached(pipeline):
    """The gate's settings are in no key: a new threshold is checked against the evaluation made before (the fakes'
    rouge1 is 1.5), which is not made again, and a missed gate fails the run, cached or not, keeping the
    evaluation for a lower threshold. Before, the threshold was in the key: each new value evaluated again, and a
    cached evaluation was never gated again."""
    gated = ("eval.check_accuracy=true",)
    missed = pipeline.run(*gated, "eval.rouge1_threshold=2.0")
    assert pipeline.ran() == ["download", "convert", "build", "evaluate"] and statuses(missed)["evaluate"] == "ran"
    assert missed.reason == GATE_MISSED and pipeline.errors.endswith(f"\nFAILED {GATE_MISSED}\n")
    passed = pipeline.run(*gated, "eval.rouge1_threshold=1.0")
    assert not passed.failed and pipeline.ran() == [] and statuses(passed)["evaluate"] == "cached"
    again = pipeline.run(*gated, "eval.rouge1_threshold=2.0")
    assert again.reason == GATE_MISSED and pipeline.ran() == [] and statuses(again)["evaluate"] == "cached"
    assert json.loads((again.run_dir / "metrics.json").read_text())["rouge1"] == 1.5  # what the line points to
    assert json.loads((again.run_dir / "run.json").read_text())["reason"] == GATE_MISSED
    assert not pipeline.run("eval.rouge1_threshold=2.0").failed and pipeline.ran() == []  # no gate asked for


def test_a_missed_gate_marks_the_step_and_its_hint_names_the_setting_that_changes_the_verdict(pipeline):
    """Before, the summary said `evaluate ... cached` (run.json too) beside the FAILED line, and the hint was `run
    again once fixed (finished steps are cached): <the same command>`, which fails the same way from the cache. Now
    the status says the gate missed, and the hint offers the command with the threshold to lower, no value made up."""
    gated = ("eval.check_accuracy=true", "eval.rouge1_threshold=2.0")
    missed = pipeline.run(*gated)
    assert [(o.status, o.gate_missed) for o in missed.outcomes][-1] == ("ran", True)
    assert "│ evaluate │" in pipeline.output and "│ ran, gate missed │" in pipeline.output
    again = pipeline.run(*gated)
    assert "│ cached, gate missed │" in pipeline.output and pipeline.output.count("gate missed") == 2  # + `✗`
    steps = json.loads((again.run_dir / "run.json").read_text())["steps"]
    assert [(s["status"], s["gate_missed"]) for s in steps] == [("cached", False)] * 3 + [("cached", True)]
    verdict = json.loads((again.run_dir / "run.json").read_text())["gate_verdict"]  # for a sweep's rerun line
    assert verdict == {"step": "evaluate", "key": "eval.rouge1_threshold", "change": "lower"}
    hint, failed = pipeline.errors.splitlines()
    assert hint == ("evaluate's result is cached: a lower eval.rouge1_threshold is checked against it in about a "
                    f"second: python -m mambapipe eval.check_accuracy=true 'eval.rouge1_threshold=<lower>' "
                    f"hydra.run.dir={again.run_dir}") and failed == f"FAILED {GATE_MISSED}"
    pipeline.run("eval.check_accuracy=true", typed=["eval.check_accuracy=true"])  # the recipe's threshold, 15.0
    assert pipeline.errors.splitlines()[0].endswith("eval.check_accuracy=true 'eval.rouge1_threshold=<lower>' "
                                                    f"hydra.run.dir={pipeline.tmp / 'runs' / '2'}")


def test_a_gate_that_cannot_read_the_artifact_keeps_the_usual_hint(pipeline):
    """A cached evaluation whose metrics.json is gone is no verdict a threshold changes: the FAILED line says to make
    it again (force=[evaluate]), and the hint is the usual one."""
    pipeline.run()
    (pipeline.store.path("evaluate", pipeline.run().outcomes[-1].key) / "metrics.json").unlink()
    result = pipeline.run("eval.check_accuracy=true")
    assert result.outcomes[-1].gate_missed and "force=[evaluate]" in result.reason
    assert pipeline.errors.startswith("run again once fixed (finished steps are cached): python -m mambapipe ")
    assert json.loads((result.run_dir / "run.json").read_text())["gate_verdict"] is None


def test_plan_names_upstream_change(pipeline):
    pipeline.run()
    result = pipeline.run("dtype=float16", "plan_only=true")
    assert pipeline.ran() == ["download", "convert", "build", "evaluate"]  # only the first run
    assert "upstream convert changed" in pipeline.output
    assert statuses(result) == {"download": "cached", "convert": "skipped", "build": "skipped", "evaluate": "skipped"}


def test_plan_only_runs_nothing_and_says_why(pipeline):
    result = pipeline.run("plan_only=true")
    assert not result.failed
    assert pipeline.ran() == []
    assert set(statuses(result).values()) == {"skipped"}
    assert json.loads((result.run_dir / "run.json").read_text())["stopped_at_plan"] is True  # a summary says so
    assert "not cached" in pipeline.output
    assert "plan_only=true: nothing ran" in pipeline.output  # its summary's `skipped` steps are those marked run
    assert not any(pipeline.store.artifacts())


def test_force_reruns_a_cached_step_only(pipeline):
    first = pipeline.run()
    pipeline.ran()
    created = pipeline.store.manifest("build", first.outcomes[2].key)["created"]
    result = pipeline.run("force=[build]")
    assert pipeline.ran() == ["build"]
    assert statuses(result)["build"] == "ran" and statuses(result)["evaluate"] == "cached"
    assert "forced" in pipeline.output
    assert pipeline.store.manifest("build", first.outcomes[2].key)["created"] > created


def test_steps_subset_skips_the_rest(pipeline):
    result = pipeline.run("steps=[download,convert]")
    assert pipeline.ran() == ["download", "convert"]
    assert statuses(result) == {"download": "ran", "convert": "ran", "build": "skipped", "evaluate": "skipped"}
    assert json.loads((result.run_dir / "run.json").read_text())["steps"][2]["artifact"] is None


def test_upstream_of_selected_steps_comes_from_cache(pipeline):
    pipeline.run()
    pipeline.ran()
    result = pipeline.run("steps=[evaluate]", "eval.output_len=8")
    assert pipeline.ran() == ["evaluate"]
    assert statuses(result) == {"download": "cached", "convert": "skipped", "build": "cached", "evaluate": "ran"}


def test_a_removed_checkpoint_is_not_needed_by_a_cached_engine(pipeline):
    first = pipeline.run()
    pipeline.store.remove_dir(pipeline.store.path("convert", first.outcomes[1].key))  # e.g. to free disk
    pipeline.ran()
    result = pipeline.run("steps=[evaluate]", "eval.output_len=8")
    assert not result.failed and pipeline.ran() == ["evaluate"]
    assert pipeline.run("steps=[evaluate]", "eval.output_len=8").outcomes[3].status == "cached"
    assert pipeline.run("build.max_batch_size=4", "steps=[build,evaluate]").failed  # a new engine needs it
    assert "convert is needed upstream but not cached: use steps=[convert,build,evaluate]" in pipeline.output


def test_the_reason_names_what_differs_from_the_closest_artifact(pipeline):
    pipeline.run()
    pipeline.run("eval.max_ite=5", "eval.output_len=9")  # the newest evaluate artifact
    pipeline.run("eval.output_len=7", "plan_only=true")
    assert "eval.output_len 16→7" in pipeline.output and "eval.max_ite" not in pipeline.output


def test_the_reason_is_measured_against_an_artifact_made_from_the_same_upstream_artifacts(pipeline):
    pipeline.run()
    pipeline.run("dtype=float16", "eval.output_len=8")  # the newest evaluate artifact, of another engine
    assert plan_row(pipeline.output, "evaluate") == ["run",
                                                     "closest cached: eval.output_len 16→8; upstream build changed"]
    pipeline.run("eval.output_len=8", "plan_only=true")  # the first run's engine: its evaluation is the closest
    assert plan_row(pipeline.output, "evaluate") == ["run", "closest cached: eval.output_len 16→8"]


def test_another_model_is_not_cached_rather_than_a_list_of_what_differs(pipeline):
    pipeline.run()  # quickstart: a tiny synthetic Mamba2
    pipeline.run("recipe=mamba_130m", "model.source=synthetic", "device=cpu", "plan_only=true")
    for step in ("download", "convert", "build", "evaluate"):
        assert plan_row(pipeline.output, step) == ["run", "not cached"]


def test_another_model_of_few_differences_is_not_cached_too(pipeline):
    """One arch value apart, another model's artifacts read as what this run changed: 'model.arch.hidden_size 1→96'
    (found by QA). Each step measures against artifacts made from the same model alone."""
    pipeline.run()
    pipeline.run("model.arch.num_layers=3", "plan_only=true")
    assert [plan_row(pipeline.output, step) for step in ("download", "convert", "build", "evaluate")] == \
        [["run", "not cached"]] * 4


def test_the_reason_is_what_the_closest_cached_artifact_differs_in(pipeline):
    """Not worded as a change the user made (found by QA: 'eval.task benchmark→summarize' where the summarize
    evaluation had been removed); measured against artifacts whose upstream ones are removed too, by what their
    manifests record."""
    first = pipeline.run()
    pipeline.store.remove_dir(pipeline.store.path("download", first.outcomes[0].key))
    pipeline.run("eval.max_ite=5", "plan_only=true")
    assert plan_row(pipeline.output, "evaluate") == ["run", "closest cached: eval.max_ite 4→5"]


def test_missing_upstream_stops_before_any_work(pipeline):
    result = pipeline.run("steps=[build]")
    assert result.failed and "use steps=[download,convert,build]" in result.reason
    assert pipeline.ran() == []


def plan_row(output: str, step: str) -> list[str]:
    """The action and why of `step` in the printed plan."""
    line = next(line for line in output.splitlines() if line.startswith(f"│ {step} "))
    return [cell.strip() for cell in line.split("│")[3:5]]


def test_one_plan_names_every_missing_upstream_step_in_pipeline_order(pipeline):
    """The convert a missing build reads is missing too: one problem names both, with the steps= value that adds
    them to the user's (in pipeline order), so that one fix is enough, not a round per step."""
    result = pipeline.run("steps=[evaluate,download]")
    assert result.reason == ("convert, build are needed upstream but not cached: "
                             "use steps=[download,convert,build,evaluate]")
    assert plan_row(pipeline.output, "convert") == ["missing", "needed upstream but not cached"]
    assert pipeline.ran() == []
    assert not pipeline.run("steps=[download,convert,build,evaluate]").failed


def test_a_cached_upstream_step_is_used_and_not_named_missing(pipeline):
    pipeline.run()
    result = pipeline.run("steps=[evaluate]", "dtype=float16")
    assert result.reason == "convert, build are needed upstream but not cached: use steps=[convert,build,evaluate]"
    assert plan_row(pipeline.output, "download") == ["cached", "needed upstream"]


def test_a_missing_step_with_a_damaged_manifest_says_so(pipeline):
    first = pipeline.run()
    (pipeline.store.path("build", first.outcomes[2].key) / "manifest.json").write_text("{")
    result = pipeline.run("steps=[evaluate]", "eval.output_len=8")
    assert result.reason == "build is needed upstream but not cached: use steps=[build,evaluate]"
    why = "needed upstream but not cached: its manifest.json is damaged"
    assert plan_row(pipeline.output, "build") == ["missing", why]
    assert plan_row(pipeline.output, "convert") == ["cached", "needed upstream"]


def test_check_failure_stops_before_any_work(pipeline):
    result = pipeline.run(build="bad-config")
    assert result.failed and result.reason == "build: build refuses this config: fix it"
    assert pipeline.ran() == []
    # The step the problem names is the failed one, as a run records a step that raised.
    assert statuses(result) == {"download": "skipped", "convert": "skipped", "build": "failed", "evaluate": "skipped"}
    assert json.loads((result.run_dir / "run.json").read_text())["stopped_at_plan"] is True  # refused, not run


def test_run_json_has_exactly_the_promised_schema(pipeline):
    result = pipeline.run()
    record = json.loads((result.run_dir / "run.json").read_text())
    assert set(record) == {"steps", "reason", "gate_verdict", "stopped_at_plan", "finished", "versions", "git_commit",
                           "git_dirty", "machine"}
    assert record["gate_verdict"] is None
    assert record["reason"] is None and record["stopped_at_plan"] is False and record["finished"].endswith("+00:00")
    assert [s["name"] for s in record["steps"]] == ["download", "convert", "build", "evaluate"]
    for step in record["steps"]:
        assert set(step) == {"name", "key", "status", "seconds", "artifact", "gate_missed"}
        assert isinstance(step["seconds"], float) and step["status"] in ("cached", "ran", "failed", "skipped")
        assert step["gate_missed"] is False
        assert (pipeline.store.root / step["name"] / step["key"]).samefile(step["artifact"])
    assert {"mambapipe", "torch", "hydra-core", "omegaconf"} <= set(record["versions"])
    assert record["git_commit"] is None or len(record["git_commit"]) == 40
    assert record["git_dirty"] in (True, False) if record["git_commit"] else record["git_dirty"] is None
    assert set(record["machine"]) == {"host", "cpu", "cpus", "cuda_devices"} and record["machine"]["cpus"] >= 1
    assert record["machine"]["cuda_devices"] == []  # a CPU run names no GPU, whatever the host has


def test_the_printed_summary_says_what_ran_where(pipeline):
    """Found by QA: the summary a run ends with named neither the model nor the code, so pasted alone it said too
    little. It ends with the model and its architecture, dtype, tp, device and backend, the code and the machine."""
    record = json.loads((pipeline.run("model.arch.num_layers=3").run_dir / "run.json").read_text())
    lines = pipeline.output.splitlines()
    summary = lines[next(i for i, line in enumerate(lines) if line.startswith("summary")):]
    software = f"software mambapipe {record['versions']['mambapipe']} ("
    assert summary[-4:-1] == [
        "run      tiny-mamba2 (synthetic Mamba2, hidden 64, 3 layers, vocab 512), dtype float32, tp 1, device cpu, "
        "backend native",
        f"{software}{'git ' + record['git_commit'][:12] if record['git_commit'] else 'no git'}"
        f"{', dirty' if record['git_dirty'] else ', clean' if record['git_commit'] else ''}), "
        f"torch {record['versions']['torch']}, transformers {record['versions']['transformers']}",
        f"machine  {record['machine']['host']}: {record['machine']['cpu']} ({record['machine']['cpus']} CPUs); "
        f"finished {record['finished'][:10]} {record['finished'][11:16]} UTC"]
    assert summary[-1].startswith("run directory: ")


def test_run_dir_holds_resolved_config_and_evaluate_outputs(pipeline):
    result = pipeline.run()
    config = (result.run_dir / "config.yaml").read_text()
    assert "${" not in config and "cache_dir: " + str(pipeline.store.root) in config
    assert "device: cpu" in config and "backend: native" in config
    assert json.loads((result.run_dir / "metrics.json").read_text())["rouge1"] == 1.5
    assert (result.run_dir / "predictions.jsonl").is_file()
    cached = pipeline.run()  # a cached evaluate still publishes its files
    assert (cached.run_dir / "metrics.json").is_file()
    assert "rouge1 1.50" in pipeline.output


def test_a_damaged_manifest_is_the_reason_given(pipeline):
    first = pipeline.run()
    pipeline.run("build.max_batch_size=1")  # a closer-looking artifact for the reason to be measured against
    (pipeline.store.path("build", first.outcomes[2].key) / "manifest.json").write_text("{")
    pipeline.run("force=[evaluate]", "plan_only=true")  # evaluate reads the build, which must be remade
    assert "not cached: its manifest.json is damaged" in pipeline.output and "max_batch_size" not in pipeline.output


def test_a_task_switch_leads_the_reason_and_keys_no_longer_read_are_left_out(pipeline):
    pipeline.run()
    pipeline.run("eval.task=benchmark", "eval.scenarios=[{batch:1,input_len:8,output_len:4}]", "plan_only=true")
    why = next(line for line in pipeline.output.splitlines() if line.startswith("│ evaluate"))
    assert "eval.task summarize→benchmark" in why and "eval.dataset" not in why


def test_an_environment_fact_the_step_no_longer_has_is_no_change():
    """Found by trying the README: quickstart's evaluate planned as a benchmark was 'closest cached: eval.task
    summarize→benchmark; reads 4 more (...); dataset_sha256 changed', though a benchmark reads no dataset."""
    from types import SimpleNamespace

    from mambapipe.pipeline.plan import _differences

    planned = SimpleNamespace(step=SimpleNamespace(name="evaluate", version=1), inputs={}, environment={},
                              params={"eval.task": "benchmark"})
    summarized = {"version": 1, "inputs": {}, "params": {"eval.task": "summarize", "eval.dataset": "sample"},
                  "environment": {"dataset_sha256": "d" * 64}}
    assert _differences(planned, summarized).lines == ["eval.task summarize→benchmark"]
    edited = SimpleNamespace(**{**vars(planned), "params": summarized["params"],
                                "environment": {"dataset_sha256": "e" * 64}})
    assert _differences(edited, summarized).lines == ["dataset_sha256 changed"]  # an edit of the file still is


def test_a_change_that_shortened_values_would_hide_is_named_without_them():
    """Found by trying the README: bench_mamba2_130m's own grid after a one-scenario run was 'closest cached:
    eval.scenarios [{'batch': 1, 'input_...→[{'batch': 1, 'input_...', two values that read alike."""
    from types import SimpleNamespace

    from mambapipe.pipeline.plan import _differences

    one = [{"batch": 1, "input_len": 128, "output_len": 128}]
    planned = SimpleNamespace(step=SimpleNamespace(name="evaluate", version=1), inputs={}, environment={},
                              params={"eval.scenarios": [*one, {"batch": 64, "input_len": 100, "output_len": 100}],
                                      "eval.repeats": 5})
    previous = {"version": 1, "inputs": {}, "environment": {}, "params": {"eval.scenarios": one, "eval.repeats": 3}}
    assert _differences(planned, previous).lines == ["eval.repeats 3→5", "eval.scenarios changed"]


def test_the_keys_a_task_switch_brings_count_as_that_one_change(pipeline):
    pipeline.run("eval.task=benchmark", "eval.scenarios=[{batch:1,input_len:8,output_len:4}]")
    pipeline.run("plan_only=true")  # summarize reads eval.dataset, eval.max_ite, eval.output_len, ...
    why = plan_row(pipeline.output, "evaluate")[1]
    assert why.startswith("closest cached: eval.task benchmark→summarize; reads ")
    assert "∅" not in why  # one line, not a list


def test_a_reused_run_dir_shows_no_earlier_results(pipeline):
    first = pipeline.run()
    again = run_recipe(pipeline.compose("plan_only=true"), first.run_dir, ["plan_only=true"],
                       steps=fake_steps(pipeline.journal), console=Console(file=io.StringIO()))
    assert again.run_dir == first.run_dir
    assert not (first.run_dir / "metrics.json").exists() and not (first.run_dir / "predictions.jsonl").exists()


def test_a_reused_run_dir_keeps_no_file_an_earlier_run_of_a_step_wrote_there(pipeline):
    first = pipeline.run()
    ranks_log = first.run_dir / "evaluate-ranks.log"  # the real evaluate step's, for a tp_size > 1 run
    ranks_log.write_text("rank 1 failed: an earlier run's reason\n")
    again = run_recipe(pipeline.compose(), first.run_dir, [], steps=fake_steps(pipeline.journal),
                       console=Console(file=io.StringIO()))
    assert [o.status for o in again.outcomes] == ["cached"] * 4
    assert not ranks_log.exists()


def test_a_reused_run_dir_keeps_no_earlier_file_where_the_config_stops_the_run_before_a_plan(pipeline):
    """The run-dir files the steps declare were removed only once the config resolved: a mandatory value left ???
    kept an earlier run's evaluate-ranks.log beside this run's run.json."""
    first = pipeline.run()
    ranks_log = first.run_dir / "evaluate-ranks.log"
    ranks_log.write_text("rank 1 failed: an earlier run's reason\n")
    again = run_recipe(pipeline.compose("model.arch.hidden_size=???"), first.run_dir, [],
                       steps=fake_steps(pipeline.journal), console=Console(file=io.StringIO()),
                       errors=Console(file=io.StringIO()))
    assert again.failed and again.reason.startswith("config: model.arch.hidden_size has no value (???)")
    assert not ranks_log.exists() and not (first.run_dir / "metrics.json").exists()


def test_manifest_records_provenance(pipeline):
    result = pipeline.run("eval.output_len=9")
    build, evaluate = result.outcomes[2], result.outcomes[3]
    manifest = pipeline.store.manifest("evaluate", evaluate.key)
    assert manifest["step"] == "evaluate" and manifest["key"] == evaluate.key and manifest["version"] == 1
    assert manifest["inputs"] == {"build": build.key, "download": result.outcomes[0].key}
    assert manifest["params"]["eval.output_len"] == 9
    assert set(manifest["params"]) == {"eval.task", "eval.random_seed", "device", "backend", "tp_size",
                                       "build.max_batch_size", "build.max_input_len", "build.max_seq_len",
                                       "eval.dataset", "eval.max_ite", "eval.batch_size", "eval.max_input_length",
                                       "eval.output_len", "eval.compare_hf"}
    # what it was made from (the build's, the conversion's and the download's params), for ls once those are gone
    assert manifest["upstream"]["dtype"] == "float32" and manifest["upstream"]["model.source"] == "synthetic"
    assert not set(manifest["upstream"]) & set(manifest["params"])
    assert manifest["overrides"] == ["eval.output_len=9"] and manifest["facts"] == {"fake": True}
    assert {"created", "seconds", "environment", "git_commit", "git_dirty"} <= set(manifest)
    assert short(evaluate.key) in pipeline.output


def test_steps_receive_only_declared_and_resolved_params(pipeline):
    result = pipeline.run("device=auto", "backend=auto")
    payload = json.loads((pipeline.store.path("build", result.outcomes[2].key) / "payload.json").read_text())
    assert set(payload["params"]) == {"dtype", "tp_size", "backend", "device", "build.max_batch_size",
                                      "build.max_input_len", "build.max_seq_len", "build.ssm_state_dtype"}
    assert payload["params"]["device"] in ("cpu", "cuda") and payload["params"]["backend"] in ("native", "trtllm")
    assert "auto:" in pipeline.output  # the plan says why auto chose what it chose


def test_a_failed_lookup_is_the_problem_not_the_cached_steps_its_key_hides(pipeline):
    """With download's lookup failing, no step downstream of it has a known key: calling them "needed upstream but
    not cached" (and suggesting steps= that fail the same way) would hide the one fault there is."""
    pipeline.run()
    pipeline.ran()
    result = pipeline.run("steps=[evaluate]", download="bad-lookup")
    assert result.reason == "download: download cannot look up its inputs: a one-line reason"
    assert plan_row(pipeline.output, "convert") == ["missing", "key unknown: a lookup failed (see problems)"]
    assert pipeline.ran() == []


@pytest.mark.parametrize("setting, terminal, shown", [
    ("progress=true", False, True), ("progress=false", True, False),
    ("progress=null", True, True), ("progress=null", False, False),
])
def test_progress_bars_follow_the_setting_or_the_terminal_and_key_nothing(pipeline, monkeypatch, setting, terminal,
                                                                          shown):
    monkeypatch.setattr("sys.stderr.isatty", lambda: terminal)
    result = pipeline.run(setting)
    payload = json.loads((pipeline.store.path("download", result.outcomes[0].key) / "payload.json").read_text())
    assert payload["show_progress"] is shown
    flipped = "progress=false" if shown else "progress=true"
    assert set(statuses(pipeline.run(flipped)).values()) == {"cached"}
