"""The download step: synthetic checkpoints HF can load, local directories validated and
fingerprinted, hub snapshots pinned to the resolved commit (mocked online, real offline)."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from unittest import mock

import httpx2
import pytest
import torch

from mambapipe.models import ModelSpec
from mambapipe.pipeline.plan import build_plan, step_params
from mambapipe.pipeline.resolve import resolve_config
from mambapipe.pipeline.runner import run_recipe
from mambapipe.pipeline.step import StepContext, StepError
from mambapipe.pipeline.store import ArtifactStore
from mambapipe.steps import download, load_steps
from mambapipe.steps.download import STEP, detect_layout, resolve_commit
from mambapipe.synthetic import write_synthetic_checkpoint, write_synthetic_tokenizer

COMMIT = "a" * 40
TEXTS = ["the cat sat on the mat and did n't move. " * 4, "news of the day: markets rose, rain fell."] * 5


def model_params(compose_config, *overrides: str) -> dict:
    """The params the runner hands the download step for this config."""
    return step_params(STEP, resolve_config(compose_config(*overrides)).config)


def run_step(params: dict, out_dir: Path, environment: dict | None = None) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = StepContext(show_progress=False, environment=environment or {})
    return STEP.run(params, {}, out_dir, ctx)


@pytest.fixture(scope="module")
def local_copy(tmp_path_factory) -> Path:
    """A user's local HF Mamba2 checkpoint with its tokenizer."""
    directory = tmp_path_factory.mktemp("local") / "my-mamba2"
    spec = ModelSpec("Mamba2", 64, 2, 512, 16, head_dim=16, n_groups=2, chunk_size=16)
    write_synthetic_checkpoint(spec, directory, "float32", seed=3, progress=False)
    write_synthetic_tokenizer(directory, 512, TEXTS)
    return directory


@pytest.mark.parametrize("model", ["tiny_mamba", "tiny_mamba2"])
def test_synthetic_writes_a_checkpoint_and_tokenizer_transformers_loads(compose_config, tmp_path, model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    params = model_params(compose_config, f"model={model}")
    facts = run_step(params, tmp_path / "out")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "model")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out" / "tokenizer")
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.eos_token_id == hf.config.eos_token_id == 0
    assert len(tokenizer) <= hf.config.vocab_size == params["model.arch"]["vocab_size"]
    ids = tokenizer("The council did n't vote.", return_tensors="pt").input_ids
    assert tokenizer.decode(ids[0]) == "The council did n't vote."
    logits = hf(ids).logits  # (1, L, V)
    assert torch.isfinite(logits).all() and facts["layout"] == f"hf_{hf.config.model_type}"


def test_synthetic_check_rejects_an_impossible_architecture(compose_config):
    with pytest.raises(StepError, match="model.arch"):
        STEP.check(model_params(compose_config, "model=tiny_mamba2", "model.arch.n_groups=3"))


@pytest.mark.parametrize("source", [(), ("model.source=local", "model.path=/elsewhere")])
def test_a_bad_arch_is_one_plan_problem_whichever_steps_read_it(compose_config, source):
    """download (synthetic only) and convert both read model.arch: the plan names its fault once, by the first."""
    resolved = resolve_config(compose_config("device=cpu", "model=tiny_mamba2", *source, "model.arch.hidden_size=0"))
    problems = build_plan(resolved, load_steps(), ArtifactStore(resolved.config["cache_dir"])).problems
    arch_problems = [p for p in problems if "model.arch" in p]
    step = "convert" if source else "download"
    assert arch_problems == [f"{step}: model.arch is not a valid architecture: hidden_size must be >= 1, got 0"]


def test_local_is_validated_linked_and_fingerprinted(compose_config, tmp_path, local_copy):
    params = model_params(compose_config, "model.source=local", f"model.path={local_copy}")
    STEP.check(params)
    before = STEP.environment(params)
    facts = run_step(params, tmp_path / "out", before)
    assert facts["layout"] == "hf_mamba2" and facts["files"] >= 3
    linked = tmp_path / "out" / "model" / "config.json"
    assert linked.is_symlink() and linked.resolve() == (local_copy / "config.json").resolve()
    assert (tmp_path / "out" / "tokenizer" / "tokenizer.json").is_symlink()
    config = local_copy / "config.json"
    config.write_text(config.read_text() + "\n")  # the user edits a file: a new key, so a new artifact
    assert STEP.environment(params)["fingerprint"] != before["fingerprint"]


@pytest.mark.parametrize("files, layout", [
    ({"params.json": "{}", "consolidated.safetensors": ""}, "mistral"),
    ({"config.json": json.dumps({"d_model": 768, "n_layer": 2, "ssm_cfg": {"layer": "Mamba2"}}),
      "pytorch_model.bin": ""}, "mamba_ssm"),
    ({"config.json": json.dumps({"model_type": "mamba", "d_model": 768, "ssm_cfg": {}}), "model.safetensors": ""},
     "hf_mamba"),  # as state-spaces/mamba-130m-hf's config.json
    ({"config.json": json.dumps({"d_model": 768, "n_layer": 2, "ssm_cfg": {}}), "pytorch_model.bin": ""},
     "mamba_ssm"),
    ({"config.json": json.dumps({"d_model": 768, "n_layer": 2}), "pytorch_model.bin": ""}, "mamba_ssm"),  # ssm_cfg {}
    ({"config.json": json.dumps({"architectures": ["Mamba2ForCausalLM"]}), "model.safetensors": ""}, "hf_mamba2"),
])
def test_the_four_layouts_are_recognised(tmp_path, files, layout):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert detect_layout(tmp_path) == layout


@pytest.mark.parametrize("text", ['{"model_type": "mamba", ', "[1, 2]"])  # truncated; not an object
def test_a_broken_source_config_is_one_line_naming_it(tmp_path, text):
    (tmp_path / "config.json").write_text(text)
    (tmp_path / "model.safetensors").write_text("")
    with pytest.raises(StepError) as info:
        detect_layout(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "config.json") in message and "model.path" in message and "\n" not in message


def test_local_without_a_checkpoint_is_one_clear_line(compose_config, tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    params = model_params(compose_config, "model.source=local", f"model.path={tmp_path}")
    with pytest.raises(StepError) as info:
        STEP.check(params)
    assert str(tmp_path) in str(info.value) and "model.path" in str(info.value) and "\n" not in str(info.value)


def test_hub_pins_the_resolved_commit(compose_config, tmp_path, local_copy):
    params = model_params(compose_config, "model=mamba2_130m")
    info = mock.Mock(sha=COMMIT)
    with mock.patch("huggingface_hub.HfApi.model_info", return_value=info) as model_info, \
         mock.patch("huggingface_hub.constants.HF_HUB_OFFLINE", False), \
         mock.patch("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf-hub")):  # where the refs go
        env = STEP.environment(params)
    assert env == {"commit": COMMIT, "tokenizer_commit": COMMIT}
    assert model_info.call_args_list[0].args[0] == "state-spaces/mamba2-130m"
    with mock.patch("huggingface_hub.snapshot_download", return_value=str(local_copy)) as download:
        facts = run_step(params, tmp_path / "out", env)
    assert [c.kwargs["revision"] for c in download.call_args_list] == [COMMIT, COMMIT]
    assert download.call_args_list[1].args[0] == "EleutherAI/gpt-neox-20b"
    assert facts["commit"] == COMMIT and (tmp_path / "out" / "model" / "config.json").is_symlink()



@pytest.mark.parametrize("shown", [True, False])
def test_hub_download_bars_follow_the_runs_progress_setting(compose_config, tmp_path, local_copy, shown):
    import huggingface_hub.utils

    params = model_params(compose_config, "model=mamba2_130m")
    hidden = []

    def snapshot(*args, **kwargs):
        hidden.append(huggingface_hub.utils.are_progress_bars_disabled())
        return str(local_copy)

    ctx = StepContext(show_progress=shown, environment={"commit": COMMIT, "tokenizer_commit": COMMIT})
    (tmp_path / "out").mkdir()
    with mock.patch("huggingface_hub.snapshot_download", side_effect=snapshot):
        STEP.run(params, {}, tmp_path / "out", ctx)
    assert hidden == [not shown] * 2 and not huggingface_hub.utils.are_progress_bars_disabled()


def test_hub_links_only_the_files_allow_patterns_selects(compose_config, tmp_path, local_copy):
    """The snapshot folder of a commit is shared: files another config fetched must not leak in."""
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    for file in local_copy.iterdir():
        (snapshot / file.name).symlink_to(file)
    (snapshot / "consolidated.safetensors").write_bytes(b"")  # the Mistral copy another run fetched
    (snapshot / "params.json").write_text("{}")
    params = model_params(compose_config, "model=mamba2_130m", "model.tokenizer=null",
                          "model.allow_patterns=[config.json,'model*.safetensors*','tokenizer*']")
    with mock.patch("huggingface_hub.snapshot_download", return_value=str(snapshot)):
        facts = run_step(params, tmp_path / "out", {"commit": COMMIT})
    linked = sorted(p.name for p in (tmp_path / "out" / "model").iterdir())
    assert "params.json" not in linked and "consolidated.safetensors" not in linked
    assert facts["layout"] == "hf_mamba2" and "config.json" in linked and facts["files"] == len(linked)
    params["model.allow_patterns"] = ["tokenizer*"]
    with mock.patch("huggingface_hub.snapshot_download", return_value=str(snapshot)), \
         pytest.raises(StepError, match="widen model.allow_patterns"):
        run_step(params, tmp_path / "out2", {"commit": COMMIT})

def test_hub_gated_repo_says_what_to_do():
    error = __import__("huggingface_hub").errors.GatedRepoError(
        "gated", response=httpx2.Response(401, request=httpx2.Request("GET", "https://huggingface.co")))
    with mock.patch("huggingface_hub.HfApi.model_info", side_effect=error), \
         mock.patch("huggingface_hub.constants.HF_HUB_OFFLINE", False):
        with pytest.raises(StepError, match="HF_TOKEN"):
            resolve_commit("mistralai/Mamba-Codestral-7B-v0.1", None)


@pytest.mark.parametrize("repo_id, settings", [("bad id with spaces", "model.tokenizer"),
                                              ("a b", "model.repo_id / model.revision")])
def test_a_malformed_repo_id_is_one_line_naming_the_key(repo_id, settings):
    with pytest.raises(StepError, match=rf"^'{repo_id}' is not a hub repo id \(.*\); check {re.escape(settings)}$"):
        resolve_commit(repo_id, None, settings)


OFFLINE_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from mambapipe.pipeline.step import StepContext, StepError
    from mambapipe.steps.download import STEP, resolve_commit
    try:
        commit = resolve_commit("state-spaces/mamba2-130m", None)
    except StepError as exc:
        print("ERROR", exc)
        sys.exit(0)
    params = {"model.source": "hub", "model.repo_id": "state-spaces/mamba2-130m", "model.revision": None,
              "model.tokenizer": None, "model.allow_patterns": None}
    out = Path(sys.argv[1])
    out.mkdir()
    facts = STEP.run(params, {}, out, StepContext(environment={"commit": commit}))
    print("OK", facts["commit"], facts["layout"])
""")


def offline(tmp_path: Path, hf_home: Path) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home)}
    env.pop("HF_HUB_CACHE", None)
    out = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, str(tmp_path / "artifact")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_offline_with_an_empty_cache_names_the_repo_and_the_fix(tmp_path):
    line = offline(tmp_path, tmp_path / "empty-hf-home")
    assert line.startswith("ERROR") and "state-spaces/mamba2-130m" in line
    assert "model.source=local model.path=" in line and "HF_HUB_OFFLINE" in line


def write_hub_snapshot(hub_cache: Path, repo_id: str, files: Path) -> Path:
    """What huggingface_hub leaves in its cache for `repo_id` downloaded at COMMIT (its main): the snapshot,
    here links to `files`' files, and refs/main."""
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for file in files.iterdir():
        (snapshot / file.name).symlink_to(file)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def test_offline_with_a_cached_snapshot_uses_it(tmp_path, local_copy):
    write_hub_snapshot(tmp_path / "hf" / "hub", "state-spaces/mamba2-130m", local_copy)
    assert offline(tmp_path, tmp_path / "hf") == f"OK {COMMIT} hf_mamba2"
    assert (tmp_path / "artifact" / "tokenizer" / "tokenizer.json").exists()


@pytest.mark.parametrize("overrides, needed", [
    (("model.source=local",), "model.path"),
    (("model=mamba_130m", "model.repo_id=null"), "model.repo_id"),
])
def test_a_missing_location_is_a_config_error_at_plan_time(compose_config, overrides, needed):
    with pytest.raises(StepError, match=needed):
        STEP.environment(model_params(compose_config, *overrides))


def test_describe_says_what_will_be_fetched(compose_config, tmp_path):
    lines = STEP.describe(model_params(compose_config, "model=codestral_7b"), {}, tmp_path)
    assert "snapshot_download('mistralai/Mamba-Codestral-7B-v0.1'" in lines[0]
    assert "consolidated.safetensors" in lines[0]
    assert "Mamba2 H64 L2" in STEP.describe(model_params(compose_config), {}, tmp_path)[0]


def test_an_unreachable_hub_tokenizer_names_model_tokenizer_and_the_local_fixes(compose_config, local_copy):
    """The README's local example offline: the hub lookup left is the recipe's model.tokenizer."""
    params = model_params(compose_config, "recipe=mamba_130m", "model.source=local", f"model.path={local_copy}")
    with mock.patch("huggingface_hub.HfApi.model_info", side_effect=OSError("network down")), \
         mock.patch("huggingface_hub.constants.HF_HUB_OFFLINE", False), \
         mock.patch("mambapipe.hub.cached_commit", return_value=None), pytest.raises(StepError) as info:
        STEP.environment(params)
    message = str(info.value)
    assert "EleutherAI/gpt-neox-20b" in message and "model.tokenizer names it" in message
    assert "model.tokenizer=null to use the tokenizer files in model.path" in message
    assert "model.source=local" not in message and "\n" not in message


def test_model_tokenizer_null_uses_the_tokenizer_files_in_model_path(compose_config, tmp_path, local_copy):
    params = model_params(compose_config, "recipe=mamba_130m", "model.source=local", f"model.path={local_copy}",
                          "model.tokenizer=null")
    env = STEP.environment(params)  # no hub lookup left
    assert set(env) == {"fingerprint"}
    run_step(params, tmp_path / "out", env)
    linked = tmp_path / "out" / "tokenizer" / "tokenizer.json"
    assert linked.resolve() == (local_copy / "tokenizer.json").resolve()


@pytest.mark.parametrize("tokenizer", ["/nonexistent/dir", "./no-such-tokenizer", "../no-such-tokenizer",
                                       "~/no-such-tokenizer"])
def test_a_tokenizer_path_that_does_not_exist_is_named_not_taken_for_a_hub_id(compose_config, local_copy, tokenizer):
    params = model_params(compose_config, "model.source=local", f"model.path={local_copy}",
                          f"model.tokenizer='{tokenizer}'")  # quoted: Hydra's grammar reads ~ as an operator
    with pytest.raises(StepError) as info:
        STEP.check(params)
    message = str(info.value)
    assert message.startswith(f"model.tokenizer={tokenizer}: no such directory") and "\n" not in message


def test_a_tokenizer_directory_without_tokenizer_files_fails_at_plan_time(compose_config, tmp_path, local_copy):
    params = model_params(compose_config, "model.source=local", f"model.path={local_copy}",
                          f"model.tokenizer={tmp_path}")
    with pytest.raises(StepError, match=f"model.tokenizer={tmp_path} holds no tokenizer files"):
        STEP.check(params)


def test_a_local_copy_without_tokenizer_files_needs_model_tokenizer(compose_config, tmp_path, local_copy):
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).symlink_to(local_copy / name)
    params = model_params(compose_config, "model.source=local", f"model.path={tmp_path}")
    with pytest.raises(StepError, match="has no tokenizer files and model.tokenizer is null"):
        STEP.check(params)


def plan_keys(compose_config, *overrides: str, commit: str = COMMIT) -> dict[str, str]:
    """Every step's key for quickstart + overrides, with the hub lookups pinned to `commit`."""
    resolved = resolve_config(compose_config(*overrides))
    with mock.patch("mambapipe.steps.download.resolve_commit", return_value=commit):
        plan = build_plan(resolved, load_steps(), ArtifactStore(resolved.config["cache_dir"]))
    return {planned.name: planned.key for planned in plan.steps}


NOT_READ = {"synthetic": ("model.name=renamed", "model.tokenizer=foo/bar", "model.path=/elsewhere",
                          "model.repo_id=other/repo"),
            "local": ("model.name=renamed", "model.seed=7", "model.source_dtype=float16", "model.repo_id=other/repo"),
            "hub": ("model.name=renamed", "model.path=/elsewhere", "model.seed=7", "model.source_dtype=float16")}
READ = {"synthetic": ("model.seed=7", "model.source_dtype=float16"), "local": ("model.tokenizer=foo/bar",),
        "hub": ("model.repo_id=other/repo", "model.tokenizer=foo/bar")}


def source_overrides(source: str, local_copy: Path) -> tuple[str, ...]:
    location = {"synthetic": (), "local": (f"model.path={local_copy}",),
                "hub": ("model.repo_id=state-spaces/mamba2-130m",)}
    return (f"model.source={source}", *location[source])


@pytest.mark.parametrize("source, override", [(s, o) for s, overrides in NOT_READ.items() for o in overrides])
def test_a_key_the_source_does_not_read_leaves_every_step_cached(compose_config, local_copy, source, override):
    base = source_overrides(source, local_copy)
    assert plan_keys(compose_config, *base, override) == plan_keys(compose_config, *base)


def test_every_spelling_of_a_model_path_is_one_key(compose_config, local_copy, monkeypatch, tmp_path):
    monkeypatch.chdir(local_copy.parent)
    (tmp_path / "link").symlink_to(local_copy)
    absolute = plan_keys(compose_config, "model.source=local", f"model.path={local_copy}")
    for spelling in (local_copy.name, f"../{local_copy.parent.name}/{local_copy.name}", tmp_path / "link"):
        assert plan_keys(compose_config, "model.source=local", f"model.path={spelling}") == absolute


@pytest.mark.parametrize("source, override", [(s, o) for s, overrides in READ.items() for o in overrides])
def test_a_key_the_source_reads_reruns_download(compose_config, local_copy, source, override):
    base = source_overrides(source, local_copy)
    assert plan_keys(compose_config, *base, override)["download"] != plan_keys(compose_config, *base)["download"]


def test_a_hub_revision_is_keyed_by_the_commit_it_names(compose_config, local_copy):
    """A branch, a tag and the commit they point to fetch the same files: one download, one conversion."""
    base = source_overrides("hub", local_copy)
    unset = plan_keys(compose_config, *base)
    for revision in ("main", "v1", COMMIT):
        assert plan_keys(compose_config, *base, f"model.revision='{revision}'") == unset
    moved = plan_keys(compose_config, *base, "model.revision=main", commit="4" * 40)
    assert moved["download"] != unset["download"] and moved["convert"] != unset["convert"]


def plan_problems(compose_config, *overrides: str) -> list[str]:
    resolved = resolve_config(compose_config("device=cpu", *overrides))
    return build_plan(resolved, load_steps(), ArtifactStore(resolved.config["cache_dir"])).problems


def edited_copy(source: Path, destination: Path, **config_changes) -> Path:
    copy = Path(shutil.copytree(source, destination))
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(config | config_changes))
    return copy


@pytest.mark.parametrize("field, value", [("dtype", "float17"), ("vocab_size", 512.7), ("hidden_size", "sixty-four")])
def test_a_bad_field_in_a_local_config_is_a_plan_problem_naming_it(compose_config, tmp_path, local_copy, field, value):
    """Not a traceback from the evaluate step's tokenizer (or the converter's int()) after convert and build ran."""
    copy = edited_copy(local_copy, tmp_path / "mine", **{field: value})
    problems = plan_problems(compose_config, "model.source=local", f"model.path={copy}")
    [problem] = [p for p in problems if p.startswith("download:")]
    assert problem.startswith(f"download: {copy / 'config.json'}: transformers' Mamba2Config refuses "
                              f"{field}={json.dumps(value)} (")
    assert problem.endswith(f"); correct {field} in config.json") and "\n" not in problem


def test_a_bad_field_in_a_mamba_ssm_config_is_found_at_plan_time(compose_config, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"d_model": 64, "n_layer": 2, "ssm_cfg": {"expand": None}}))
    (tmp_path / "pytorch_model.bin").write_text("")
    write_synthetic_tokenizer(tmp_path, 512, TEXTS)
    with pytest.raises(StepError) as info:
        STEP.check(model_params(compose_config, "model.source=local", f"model.path={tmp_path}"))
    assert str(info.value) == (f"{tmp_path / 'config.json'}: ssm_cfg.expand=null is not an integer; correct "
                               "ssm_cfg.expand in config.json")


@pytest.mark.parametrize("broken", ["not json", "config only"])
def test_a_local_tokenizer_that_does_not_load_is_a_plan_problem_naming_its_files(compose_config, tmp_path,
                                                                                 local_copy, broken):
    """Named where the user keeps it, with a fix that helps: downloading again would link the same files."""
    copy = Path(shutil.copytree(local_copy, tmp_path / "mine"))
    if broken == "not json":
        (copy / "tokenizer.json").write_text("{not json")
    else:
        (copy / "tokenizer.json").unlink()
    with pytest.raises(StepError) as info:
        STEP.check(model_params(compose_config, "model.source=local", f"model.path={copy}"))
    message = str(info.value)
    assert message.startswith(f"cannot load the tokenizer from {copy} (config.json, ")
    assert message.endswith("; fix those files, or set model.tokenizer to a tokenizer directory or hub id")
    assert "\n" not in message and "force=[download]" not in message


def test_a_model_path_removed_after_a_run_is_the_one_problem(compose_config, tmp_path):
    """Not the upstream steps "needed but not cached" (their keys hash model.path's files, which are gone)."""
    gone = tmp_path / "moved-away"
    problems = plan_problems(compose_config, "model.source=local", f"model.path={gone}", "steps=[evaluate]")
    assert problems == [f"download: model.path={gone} does not exist; set model.path to the checkpoint's directory"]


def arch_mismatch(directory: Path) -> str:
    """The plan problem of quickstart's model.arch (n_groups 4) over a copy of local_copy (n_groups 2)."""
    return (f"convert: {directory.resolve()}: checkpoint does not match model.arch (n_groups: config 4, checkpoint 2); "
            "fix the model config or point at the right checkpoint")


def test_plan_only_over_a_local_checkpoint_that_is_not_model_arch_fails_naming_it(compose_config, tmp_path,
                                                                                 local_copy):
    """Found by the plan, not by the convert step once download ran (the command line exits 1 on a failed run)."""
    local = ("device=cpu", "model.source=local", f"model.path={local_copy}", "plan_only=true")
    mismatched = run_recipe(compose_config(*local), tmp_path / "run")
    assert mismatched.failed and mismatched.reason == arch_mismatch(local_copy)
    matching = run_recipe(compose_config(*local, "model.arch.n_groups=2"), tmp_path / "run")
    assert not matching.failed, matching.reason


def test_a_cached_local_download_is_compared_with_a_changed_model_arch(compose_config, tmp_path, local_copy):
    local = ("device=cpu", "model.source=local", f"model.path={local_copy}")
    cached = run_recipe(compose_config(*local, "model.arch.n_groups=2", "steps=[download]"), tmp_path / "run")
    assert not cached.failed, cached.reason
    resolved = resolve_config(compose_config(*local))
    plan = build_plan(resolved, load_steps(), ArtifactStore(resolved.config["cache_dir"]))
    assert plan.get("download").action == "cached" and plan.problems == [arch_mismatch(local_copy)]


def test_a_local_directory_download_refuses_is_not_compared_with_model_arch_too(compose_config, tmp_path, local_copy):
    """Its one fault named once, by download: not again by convert in other words (without download's fix)."""
    copy = Path(shutil.copytree(local_copy, tmp_path / "mine"))
    (copy / "config.json").write_text("{not json")
    problems = plan_problems(compose_config, "model.source=local", f"model.path={copy}")
    assert len(problems) == 1 and problems[0].startswith(f"download: {copy / 'config.json'} is not valid JSON ("), \
        problems


@pytest.mark.parametrize("name, target", [("model.safetensors", "/moved/away/model.safetensors"),
                                          ("config.json", "../config.json")])  # a relative target: from its dir
def test_a_file_that_is_a_link_to_nothing_is_named_with_its_target(compose_config, tmp_path, local_copy, name,
                                                                    target):
    """Found by a new user: a model.safetensors linking to a file since moved was reported as 'no weights found'."""
    copy = edited_copy(local_copy, tmp_path / "copy")
    (copy / name).unlink()
    (copy / name).symlink_to(target)
    problems = plan_problems(compose_config, "model.source=local", f"model.path={copy}")
    assert problems == [f"download: {copy / name} is a link to {copy / target}, which does not exist; fix the file "
                        "or model.path"]


def test_a_model_path_that_is_a_file_is_one_line_with_one_fix(compose_config, local_copy):
    config = local_copy / "config.json"
    problems = plan_problems(compose_config, "model.source=local", f"model.path={config}")
    assert problems == [f"download: model.path={config} is a file, not a directory; set model.path to the "
                        "checkpoint's directory"]


def test_an_unreadable_model_path_keeps_its_own_fix_alone(tmp_path, monkeypatch):
    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "is_dir", denied)  # as root, chmod 000 would not stop the listing
    with pytest.raises(StepError) as info:
        detect_layout(tmp_path)
    assert str(info.value) == f"{tmp_path}: cannot be read (Permission denied); make it readable"


@pytest.fixture
def hub_snapshot(monkeypatch, tmp_path, local_copy) -> Path:
    """A hand-built Hugging Face cache whose my-org/my-mamba2 main is COMMIT, a snapshot of the local copy."""
    import huggingface_hub.constants

    snapshot = write_hub_snapshot(tmp_path / "hf-hub", "my-org/my-mamba2", local_copy)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return snapshot


def hub_params(compose_config, *overrides: str) -> dict:
    return model_params(compose_config, "model.source=hub", "model.repo_id=my-org/my-mamba2", "model.tokenizer=null",
                        *overrides)


def test_a_hub_found_unreachable_at_plan_time_is_not_asked_again_for_the_files(compose_config, tmp_path,
                                                                                hub_snapshot):
    """huggingface_hub would retry for ~20 s before reading the cache it reads at once with local_files_only."""
    import huggingface_hub

    params = hub_params(compose_config)
    with mock.patch("huggingface_hub.HfApi.repo_info", side_effect=OSError("network down")) as asked, \
         mock.patch("huggingface_hub.snapshot_download", wraps=huggingface_hub.snapshot_download) as fetch:
        env = STEP.environment(params)
        facts = run_step(params, tmp_path / "out", env)
    assert env == {"commit": COMMIT} and facts["layout"] == "hf_mamba2" and asked.call_count == 1
    assert fetch.call_args.kwargs["local_files_only"] is True


@pytest.mark.parametrize("revision", ["3" * 40, "v3"])
def test_an_uncached_revision_offline_is_named_at_plan_time(compose_config, monkeypatch, hub_snapshot, revision):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(StepError) as info:
        STEP.environment(hub_params(compose_config, f"model.revision='{revision}'"))
    assert str(info.value).startswith(f"cannot reach my-org/my-mamba2 on the Hugging Face hub (HF_HUB_OFFLINE is set) "
                                      f"and its revision {revision} is not in the local cache")


def test_an_incomplete_cached_snapshot_says_to_complete_it_online(compose_config, monkeypatch, tmp_path,
                                                                    hub_snapshot):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    (hub_snapshot / "model.safetensors").unlink()  # what an interrupted download leaves
    params = hub_params(compose_config)
    with pytest.raises(StepError) as info:
        run_step(params, tmp_path / "out", STEP.environment(params))
    message = str(info.value)
    assert message.startswith(f"the local cache's snapshot of my-org/my-mamba2 at {COMMIT} holds no Mamba checkpoint")
    assert message.endswith("run once with the hub reachable to complete it") and "allow_patterns=None" not in message


def test_a_hub_error_other_than_the_network_is_not_taken_for_an_unreachable_hub(compose_config, hub_snapshot):
    """A 5xx for one lookup falls back to the cache for that lookup only: the files are still asked of the hub."""
    from mambapipe import hub

    error = __import__("huggingface_hub").errors.HfHubHTTPError(
        "busy", response=httpx2.Response(503, request=httpx2.Request("GET", "https://huggingface.co")))
    with mock.patch("huggingface_hub.HfApi.repo_info", side_effect=error):
        assert STEP.environment(hub_params(compose_config)) == {"commit": COMMIT}
    assert not hub.use_local_files_only()


def test_a_hub_answer_with_nothing_cached_is_quoted(compose_config, hub_snapshot):
    error = __import__("huggingface_hub").errors.HfHubHTTPError(
        "429 Too Many Requests for url https://huggingface.co/api/models/my-org/other",
        response=httpx2.Response(429, request=httpx2.Request("GET", "https://huggingface.co")))
    with mock.patch("huggingface_hub.HfApi.repo_info", side_effect=error), pytest.raises(StepError) as info:
        STEP.environment(hub_params(compose_config, "model.repo_id=my-org/other"))
    assert "(HfHubHTTPError: 429 Too Many Requests for url" in str(info.value)


@pytest.mark.parametrize("url, message, said", [
    ("https://user:secret@mirror.example:8443/api/models/my-org/other/revision/main?token=hf_x",
     "[Errno -2] Name or service not known",
     "ConnectError for https://mirror.example:8443: [Errno -2] Name or service not known"),
    ("https://huggingface.co/api/models/my-org/other/revision/main",  # a message naming the host keeps it once
     "HTTPSConnectionPool(host='huggingface.co', port=443): Max retries exceeded",
     "ConnectError: HTTPSConnectionPool(host='huggingface.co', port=443): Max retries exceeded")])
def test_a_network_failure_names_the_server_it_asked_and_no_credentials(compose_config, hub_snapshot, url, message,
                                                                        said):
    """httpx's connection errors do not name the server (HF_ENDPOINT may name a mirror); the line does, without the
    request's path and query or a user and password in the URL."""
    error = httpx2.ConnectError(message, request=httpx2.Request("GET", url))
    with mock.patch("huggingface_hub.HfApi.repo_info", side_effect=error), pytest.raises(StepError) as info:
        STEP.environment(hub_params(compose_config, "model.repo_id=my-org/other"))
    assert f"on the Hugging Face hub ({said}) and its revision main" in str(info.value)


def test_the_fingerprint_follows_the_weights_not_touches_or_dot_files(tmp_path, monkeypatch):
    """A large file is known by size, mtime and ctime (a rewrite whose mtime was put back still moves its ctime), a
    small one by its bytes; .git and .cache, which no step reads and git or a hub client rewrite, not at all."""
    monkeypatch.setattr(download, "_SMALL_FILE", 64)
    (tmp_path / "tokenizer.json").write_text('{"small": true}')
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\1" * 1000)
    before = download.fingerprint(tmp_path)
    os.utime(tmp_path / "tokenizer.json")  # touched, same bytes
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "index").write_bytes(b"rewritten by git status")
    (tmp_path / ".cache" / "huggingface").mkdir(parents=True)
    (tmp_path / ".cache" / "huggingface" / "x.metadata").write_text("hub client state")
    assert download.fingerprint(tmp_path) == before
    stat = weights.stat()
    time.sleep(0.01)
    weights.write_bytes(b"\2" * 1000)  # same size, its old mtime put back: touch -r, cp -p
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert download.fingerprint(tmp_path) != before


def test_the_fingerprint_keys_as_it_did(tmp_path):
    """Computed from the per-file records now: the same hash, so no local download's key, nor those after it, moves."""
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "tokenizer.json").write_text("[]")
    assert download.fingerprint(tmp_path) == "6f9c1a5b6ba2c42aa2ef5aff985fe6883d90d68b61201f9e7055552ce693da67"


def test_the_plan_names_the_local_files_behind_a_changed_fingerprint(compose_config, tmp_path, local_copy):
    """The why was 'fingerprint changed' alone (found by QA): the download's manifest records what it hashed of each
    file, to compare the directory with."""
    copy = Path(shutil.copytree(local_copy, tmp_path / "mine"))
    local = ("device=cpu", "model.source=local", f"model.path={copy}", "model.arch.n_groups=2", "steps=[download]")
    assert not run_recipe(compose_config(*local), tmp_path / "run").failed
    (copy / "config.json").write_text((copy / "config.json").read_text() + "\n")
    (copy / "notes.txt").write_text("mine")
    resolved = resolve_config(compose_config(*local))
    plan = build_plan(resolved, load_steps(), ArtifactStore(resolved.config["cache_dir"]))
    assert plan.get("download").reason == "closest cached: fingerprint changed (config.json, +notes.txt)"


def test_changed_files_marks_new_and_gone_ones_and_counts_past_three():
    old = {name: {"size": 1} for name in ("a", "b", "c", "gone")}
    new = {"a": {"size": 2}, "b": {"size": 1}, "c": {"size": 1, "mtime_ns": 5}, "d": {"size": 1}, "e": {"size": 1}}
    assert download.changed_files(old, new) == "a, c, +d and 2 more"
    assert download.changed_files(old, {**old, "gone": {"size": 3}}) == "gone"
    assert download.changed_files({"x": {}}, {}) == "-x"


def test_an_unreadable_source_file_is_one_line_naming_it(tmp_path, monkeypatch):
    (tmp_path / "README.md").write_text("notes")

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)  # as root, chmod 000 would not stop the read
    with pytest.raises(StepError, match=rf"^cannot read {tmp_path}/README.md \(Permission denied\); make it readable "
                                        rf"or move it out of {tmp_path}$"):
        download.fingerprint(tmp_path)


@pytest.mark.parametrize("index, problem", [
    ({"weight_map": {"backbone.norm_f.weight": "model-00002-of-00002.safetensors"}},
     "lists shard(s) ['model-00002-of-00002.safetensors'] that are missing"),
    ({"metadata": {}}, "no weight_map"),
])
def test_a_damaged_local_index_gets_the_local_fix_alone(tmp_path, index, problem):
    """A damaged file's own fix is to download it again; in a directory of the user's, it is to fix or replace it."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba2"}))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(StepError) as info:
        detect_layout(tmp_path)
    assert str(info.value) == f"{tmp_path / 'model.safetensors.index.json'}: {problem}; fix or replace it in model.path"


def test_a_full_tmpdir_as_the_local_tokenizer_is_checked_names_tmpdir(compose_config, tmp_path, local_copy,
                                                                        monkeypatch):
    """The check links the tokenizer's files into a temporary directory: its disk full (measured: a 4 MiB ext4 with
    one block left, where the first link of a long path takes one more) was 'unexpected OSError: [Errno 28] ...'."""
    params = model_params(compose_config, "recipe=mamba_130m", "model.source=local", f"model.path={local_copy}",
                          "model.tokenizer=null")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again, as a process does once
    real_symlink = os.symlink

    def symlink_on_a_full_disk(source, link, *args, **kwargs):
        if str(link).startswith(str(tmpdir)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(source), None, str(link))
        return real_symlink(source, link, *args, **kwargs)

    monkeypatch.setattr(os, "symlink", symlink_on_a_full_disk)
    with pytest.raises(StepError) as refused:
        STEP.check(params)
    assert str(refused.value) == (f"no space left on device in the temporary directory {tmpdir} (TMPDIR): free "
                                  "space there, or set TMPDIR to a directory on a disk with room")
    assert list(tmpdir.iterdir()) == []  # the temporary directory is gone
