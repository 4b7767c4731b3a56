"""The hub source through huggingface_hub's real HTTP path, against a fake hub on 127.0.0.1 (fake_hub.py) serving a
checkpoint the synthetic source wrote: pinning, allow_patterns, an offline run after an online one, and the one-line
errors of a gated repo, a download broken off, an unknown revision and a hub that is down; then the evaluate step's
hub dataset through datasets' own client."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fake_hub import FakeHub, Repo

from mambapipe.evaluate.prompts import load_tokenizer
from mambapipe.hub import cached_commit, hub_cache
from mambapipe.models import ModelSpec
from mambapipe.pipeline.plan import step_params
from mambapipe.pipeline.resolve import resolve_config
from mambapipe.pipeline.runner import run_recipe
from mambapipe.pipeline.step import StepContext, StepError
from mambapipe.steps.download import STEP, fetch_snapshot
from mambapipe.synthetic import write_synthetic_checkpoint, write_synthetic_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMIT, TOKENIZER_COMMIT = "5eed" * 10, "70ce" * 10
REPO_ID, TOKENIZER_ID = "fake-org/tiny-mamba2", "fake-org/tokenizer"
ALLOW = "model.allow_patterns=[config.json,'model*.safetensors*','tokenizer*']"
NOT_SELECTED = {"README.md": b"# tiny\n", "consolidated.safetensors": b"\0" * 64}  # a Mistral copy: not to fetch
TOKEN = "hf_fakeSecretToken0123456789"


@pytest.fixture(scope="module")
def repo_files(tmp_path_factory) -> Path:
    """What the synthetic source writes for model=tiny_mamba2 (its seed 0, float32), as a hub repo holds it, with
    files beside it that the allow patterns leave out."""
    directory = tmp_path_factory.mktemp("hub-repo")
    arch = yaml.safe_load((REPO_ROOT / "configs" / "model" / "tiny_mamba2.yaml").read_text())["arch"]
    spec = ModelSpec(**arch)
    write_synthetic_checkpoint(spec, directory, "float32", seed=0, progress=False)
    write_synthetic_tokenizer(directory, spec.vocab_size)
    for name, data in NOT_SELECTED.items():
        (directory / name).write_bytes(data)
    return directory


def point_huggingface_hub_at(monkeypatch, endpoint: str, hf_home: Path) -> None:
    """huggingface_hub reads HF_ENDPOINT and HF_HOME when it is imported: in-process, its constants are set instead
    (HfApi and hf_hub_url read them at each call)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(hf_home / "token"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(hf_home / ".agent_harnesses.json"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)


@pytest.fixture
def hub(monkeypatch, tmp_path, repo_files):
    """The fake hub serving REPO_ID at COMMIT (its main); TOKENIZER_ID, a copy at TOKENIZER_COMMIT; fake-org/gated,
    which grants no token; fake-org/flaky, whose weights fail to download."""
    repos = {("model", REPO_ID): Repo.of_directory(repo_files, COMMIT),
             ("model", "fake-org/gated"): Repo.of_directory(repo_files, COMMIT, gated=True),
             ("model", "fake-org/flaky"): Repo.of_directory(repo_files, COMMIT, failing={"model.safetensors": 500}),
             ("model", TOKENIZER_ID): Repo.of_directory(repo_files, TOKENIZER_COMMIT)}
    with FakeHub(repos) as server:
        point_huggingface_hub_at(monkeypatch, server.url, tmp_path / "hf")
        yield server


def hub_overrides(*overrides: str, repo_id: str = REPO_ID) -> tuple[str, ...]:
    return ("model=tiny_mamba2", "model.source=hub", f"model.repo_id={repo_id}", "model.tokenizer=null", ALLOW,
            "steps=[download,convert]", *overrides)


def run(compose_config, tmp_path: Path, *overrides: str):
    result = run_recipe(compose_config(*overrides), tmp_path / "run", overrides)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    return result, record


def fetched(hub: FakeHub, repo_id: str) -> set[str]:
    """The files of `repo_id` the hub was asked for, each asked at the commit the plan pinned."""
    paths = [path for path in hub.paths() + hub.paths("HEAD") if path.startswith(f"/{repo_id}/resolve/")]
    pinned = {REPO_ID: COMMIT, TOKENIZER_ID: TOKENIZER_COMMIT}[repo_id]
    assert all(path.startswith(f"/{repo_id}/resolve/{pinned}/") for path in paths)
    return {path.rsplit("/", 1)[1] for path in paths}


def test_a_hub_model_is_fetched_at_the_pinned_commit_and_converts(compose_config, tmp_path, hub):
    result, record = run(compose_config, tmp_path, *hub_overrides(f"model.tokenizer={TOKENIZER_ID}"))
    assert not result.failed, result.reason
    assert [(step["name"], step["status"]) for step in record["steps"][:2]] == [("download", "ran"), ("convert", "ran")]
    download = Path(record["steps"][0]["artifact"])
    manifest = json.loads((download / "manifest.json").read_text())
    assert manifest["environment"] == {"commit": COMMIT, "tokenizer_commit": TOKENIZER_COMMIT}
    assert manifest["facts"]["commit"] == COMMIT and manifest["facts"]["layout"] == "hf_mamba2"
    # each main asked once, at plan time; then only the files the patterns select, at the pinned commits
    assert [hub.paths().count(f"/api/models/{repo}/revision/main") for repo in (REPO_ID, TOKENIZER_ID)] == [1, 1]
    assert fetched(hub, REPO_ID) == {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert fetched(hub, TOKENIZER_ID) == {"config.json", "tokenizer.json", "tokenizer_config.json"}
    assert sorted(p.name for p in (download / "model").iterdir()) == sorted(fetched(hub, REPO_ID))
    assert Path(os.readlink(download / "tokenizer" / "tokenizer.json")).parent.name == TOKENIZER_COMMIT
    assert load_tokenizer(download / "tokenizer").tokenizer.vocab_size == 512
    converted = Path(record["steps"][1]["artifact"])
    assert json.loads((converted / "manifest.json").read_text())["step"] == "convert"


@pytest.mark.parametrize("token, status", [(None, 401), (TOKEN, 403)])
def test_a_gated_repo_is_one_line_and_no_token_is_logged(compose_config, tmp_path, hub, monkeypatch, caplog, capsys,
                                                          token, status):
    """The hub answers a gated repo's info, and 401 (no token) or 403 (a token without access) for its files."""
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    with caplog.at_level(logging.DEBUG):
        result, record = run(compose_config, tmp_path, *hub_overrides(repo_id="fake-org/gated"))
    assert result.reason == ("download: fake-org/gated is gated: accept its licence on huggingface.co and set "
                             "HF_TOKEN to a token of that account")
    assert [step["status"] for step in record["steps"][:2]] == ["failed", "skipped"]
    assert any(request.authorization == (f"Bearer {token}" if token else None) for request in hub.requests)
    outputs = capsys.readouterr()
    assert TOKEN not in caplog.text + outputs.out + outputs.err + (tmp_path / "run" / "run.json").read_text()
    assert_no_download_left(tmp_path / "cache")


def assert_no_download_left(cache: Path) -> None:
    """Neither an artifact nor a staging directory of the download step."""
    assert not [path for path in (cache / "download").iterdir() if not path.name.startswith(".")]
    assert not list((cache / "download" / ".staging").iterdir())


@pytest.mark.parametrize("revision", ["v9", "9" * 40])
def test_a_revision_the_hub_does_not_know_is_named(compose_config, tmp_path, hub, revision):
    result, record = run(compose_config, tmp_path, *hub_overrides(f"model.revision='{revision}'"))
    assert result.reason == (f"download: {REPO_ID}@{revision} not found on the hub: check model.repo_id / "
                             "model.revision")
    assert record["stopped_at_plan"] and not hub.paths("HEAD")



@pytest.mark.parametrize("token", [None, TOKEN])
def test_a_repo_the_hub_does_not_show_names_the_token_where_none_is_set(compose_config, tmp_path, hub, monkeypatch,
                                                                        token):
    """The hub answers a private repo asked for without a token as one that does not exist: with no token set, the
    line says what a private repo needs too."""
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    result, _ = run(compose_config, tmp_path, *hub_overrides("model.repo_id=fake-org/private"))
    private = "; a private repo needs HF_TOKEN set to a token that can read it"
    assert result.reason == ("download: fake-org/private@main not found on the hub: check model.repo_id / "
                             f"model.revision{'' if token else private}")

def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_hub_that_is_down_is_one_line(compose_config, tmp_path, monkeypatch, repo_files):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    point_huggingface_hub_at(monkeypatch, endpoint, tmp_path / "hf")
    result, _ = run(compose_config, tmp_path, *hub_overrides())
    assert result.reason == (f"download: cannot reach {REPO_ID} on the Hugging Face hub (ConnectError for {endpoint}: "
                             "[Errno 111] Connection refused) and its revision main is not in the local cache: set "
                             "model.source=local model.path=/path/to/copy, or check the network")


def test_a_hub_found_down_by_one_lookup_is_said_in_full_by_the_next(compose_config, tmp_path, hub, monkeypatch,
                                                                    caplog, capsys):
    """The model's lookup finds the hub down and pins the commit an earlier run fetched; the tokenizer's, which does
    not ask again, says what the first met (it said only `unreachable: ConnectError`), and no token."""
    fetched_run, _ = run(compose_config, tmp_path / "online", *hub_overrides("steps=[download]"))
    assert not fetched_run.failed, fetched_run.reason
    endpoint = f"http://127.0.0.1:{closed_port()}"
    point_huggingface_hub_at(monkeypatch, endpoint, tmp_path / "hf")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with caplog.at_level(logging.DEBUG):
        result, _ = run(compose_config, tmp_path / "offline", *hub_overrides(f"model.tokenizer={TOKENIZER_ID}"))
    down = f"ConnectError for {endpoint}: [Errno 111] Connection refused"
    assert result.reason == (f"download: cannot reach {TOKENIZER_ID} on the Hugging Face hub (unreachable: {down}) "
                             "and its revision main is not in the local cache: model.tokenizer names it; set "
                             "model.tokenizer=null to use the tokenizer files of model.repo_id, or "
                             "model.tokenizer=/path/to/tokenizer/dir, or check the network")
    assert f"asking the hub for {REPO_ID}@main failed ({down}): pinned to the local cache's {COMMIT}" in caplog.text
    outputs, record = capsys.readouterr(), (tmp_path / "offline" / "run" / "run.json").read_text()
    assert TOKEN not in caplog.text + outputs.out + outputs.err + record


def test_a_download_the_hub_breaks_off_is_one_line_and_leaves_no_partial_file(compose_config, tmp_path, hub):
    result, _ = run(compose_config, tmp_path, *hub_overrides(repo_id="fake-org/flaky"))
    assert result.reason.startswith(f"download: fetching fake-org/flaky at {COMMIT} failed (HfHubHTTPError: Server "
                                    "error '500 Internal Server Error' for url ")
    assert result.reason.endswith("/model.safetensors'); run again") and "\n" not in result.reason
    assert_no_download_left(tmp_path / "cache")
    blobs = tmp_path / "hf" / "hub" / "models--fake-org--flaky" / "blobs"
    assert not [blob.name for blob in blobs.iterdir() if blob.name.endswith(".incomplete")]


MIRROR_PASSWORD = "mirrorPassword0123456789"


def test_a_mirror_s_password_and_the_token_are_in_no_output_or_record(tmp_path, hub):
    """HF_ENDPOINT naming a mirror with its user:password@: huggingface_hub's HTTP errors quote the URL with them, and
    httpx logs every request's URL at INFO (which the run's logging config leaves out). `python -m mambapipe` as a
    user runs it: neither the password nor HF_TOKEN is on standard output or error, in mambapipe.log or in run.json
    (the password was in each but standard output)."""
    mirror = hub.url.replace("http://", f"http://mirror:{MIRROR_PASSWORD}@")
    env = {**os.environ, "HF_ENDPOINT": mirror, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("HF_HUB_OFFLINE", None)
    out = subprocess.run([sys.executable, "-m", "mambapipe", *hub_overrides(repo_id="fake-org/flaky"),
                          f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    assert (f"FAILED download: fetching fake-org/flaky at {COMMIT} failed (HfHubHTTPError: Server error '500 Internal "
            f"Server Error' for url 'http://***@127.0.0.1:") in out.stderr
    assert "HTTP Request:" not in out.stderr  # httpx's line a request, quiet below WARNING
    said = [out.stdout, out.stderr, *((tmp_path / "run" / name).read_text() for name in ("mambapipe.log", "run.json"))]
    assert not [text for text in said if MIRROR_PASSWORD in text or TOKEN in text]


def test_a_crash_quoting_the_token_is_redacted_in_the_log_the_reason_and_run_json(compose_config, tmp_path, hub,
                                                                                  monkeypatch, capsys):
    """A fetch that fails in a way mambapipe does not know (a crash: its traceback goes to the log) with a message
    that quotes the token, as a proxy's may. The log is formatted as configs/hydra/job_logging/mambapipe.yaml says."""
    import logging.config

    def snapshot_download(*args, **kwargs):
        raise RuntimeError(f"the proxy refused Authorization: Bearer {TOKEN}\nsent as token={TOKEN}")

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    logging_config = yaml.safe_load((REPO_ROOT / "configs" / "hydra" / "job_logging" / "mambapipe.yaml").read_text())
    formatter = logging.config.DictConfigurator({}).configure_formatter(logging_config["formatters"]["simple"])
    log = logging.StreamHandler(io.StringIO())
    log.setFormatter(formatter)
    logging.getLogger().addHandler(log)
    try:
        result, record = run(compose_config, tmp_path, *hub_overrides())
    finally:
        logging.getLogger().removeHandler(log)
    assert result.reason == "download: unexpected RuntimeError: the proxy refused Authorization: ***"
    assert record["reason"] == result.reason
    assert "RuntimeError: the proxy refused Authorization: ***\nsent as token=***" in log.stream.getvalue()
    outputs = capsys.readouterr()
    assert TOKEN not in log.stream.getvalue() + outputs.out + outputs.err


@pytest.mark.parametrize("variable", [None, "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"])
def test_a_hub_cache_whose_disk_fills_is_named_with_the_variable_that_moves_it(compose_config, tmp_path, hub,
                                                                                  monkeypatch, variable):
    """The Hugging Face cache's disk fills as the weights come in: one line naming that cache and the variable that
    moves it (HF_HOME, below which it lies, unless the user moved it alone), not 'failed ...; run again', which the
    same full disk would fail again; neither huggingface_hub's partial file nor the step's staging dir is left."""
    from huggingface_hub import file_download

    def disk_fills(url, temp_file, **kwargs):
        temp_file.write(b"\0" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(file_download, "http_get", disk_fills)
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    hub_cache = tmp_path / "hf" / "hub"  # where point_huggingface_hub_at puts it, as these variables would
    if variable:
        monkeypatch.setenv(variable, str(hub_cache))
    result, _ = run(compose_config, tmp_path, *hub_overrides())
    assert result.reason == (f"download: no space left on device in the Hugging Face cache {hub_cache}: free space "
                             f"there, or set {variable or 'HF_HOME'} to a directory on a disk with room")
    assert_no_download_left(tmp_path / "cache")
    blobs = hub_cache / f"models--{REPO_ID.replace('/', '--')}" / "blobs"
    assert not [blob.name for blob in blobs.iterdir() if blob.name.endswith(".incomplete")]



def test_a_plan_that_fetches_nothing_leaves_the_caches_refs_alone(compose_config, tmp_path, hub):
    """plan_only asks the hub for main's commit and fetches nothing: refs/main in the shared Hugging Face cache, which
    other tools read offline too, would point at files the cache lacks. The run that fetches them writes it."""
    from huggingface_hub import constants

    ref = Path(constants.HF_HUB_CACHE) / f"models--{REPO_ID.replace('/', '--')}" / "refs" / "main"
    planned, _ = run(compose_config, tmp_path / "plan", *hub_overrides("plan_only=true"))
    assert not planned.failed, planned.reason
    assert not ref.exists()
    fetched_run, _ = run(compose_config, tmp_path / "fetch", *hub_overrides())
    assert not fetched_run.failed, fetched_run.reason
    assert ref.read_text() == COMMIT


def test_a_fetch_records_the_revision_each_repo_was_pinned_by(compose_config, tmp_path, hub, repo_files):
    """The refs the fetch writes are those of the revision that chose each repo: the model's tag, and main for the
    tokenizer (model.revision names the model's alone); a tag's commit must not move the model's main."""
    from huggingface_hub import constants

    hub.repos[("model", REPO_ID)] = Repo.of_directory(repo_files, COMMIT, refs=("main", "v1"))
    result, _ = run(compose_config, tmp_path, *hub_overrides("steps=[download]", "model.revision=v1",
                                                             f"model.tokenizer={TOKENIZER_ID}"))
    assert not result.failed, result.reason
    refs = {repo: Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "refs"
            for repo in (REPO_ID, TOKENIZER_ID)}
    assert {path.name: path.read_text() for path in refs[REPO_ID].iterdir()} == {"v1": COMMIT}
    assert {path.name: path.read_text() for path in refs[TOKENIZER_ID].iterdir()} == {"main": TOKENIZER_COMMIT}


def test_a_partial_snapshot_the_run_fetched_serves_it_offline(compose_config, tmp_path, hub, monkeypatch):
    """allow_patterns leave the snapshot partial by design (the tokenizer's repo always so): the offline plan must
    still find the commit main pointed to, and the run its files, without asking the hub."""
    overrides = hub_overrides("steps=[download]", f"model.tokenizer={TOKENIZER_ID}")
    online, _ = run(compose_config, tmp_path / "online", *overrides)
    assert not online.failed, online.reason
    asked = len(hub.requests)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    offline, record = run(compose_config, tmp_path / "offline", *overrides, "force=[download]")
    assert not offline.failed, offline.reason
    manifest = json.loads((Path(record["steps"][0]["artifact"]) / "manifest.json").read_text())
    assert manifest["environment"] == {"commit": COMMIT, "tokenizer_commit": TOKENIZER_COMMIT}
    assert len(hub.requests) == asked



def test_a_repo_removed_after_the_plan_is_named_not_retried(compose_config, tmp_path, repo_files, monkeypatch):
    """A repo deleted (or made private) between the plan and the fetch: running again cannot help, so the line
    names the repo and the keys that chose it."""
    params = step_params(STEP, resolve_config(compose_config(*hub_overrides())).config)
    with FakeHub({("model", REPO_ID): Repo.of_directory(repo_files, COMMIT)}) as server:
        point_huggingface_hub_at(monkeypatch, server.url, tmp_path / "hf")
        environment = STEP.environment(params)
        server.repos.clear()
        (tmp_path / "out").mkdir()
        with pytest.raises(StepError) as info:
            STEP.run(params, {}, tmp_path / "out", StepContext(show_progress=False, environment=environment))
    assert str(info.value) == (f"{REPO_ID} at {COMMIT}, which the plan found, is no longer on the hub "
                               "(RepositoryNotFoundError: 404 Client Error.): check model.repo_id / model.revision; a "
                               "repo made private needs HF_TOKEN set to a token that can read it")

def test_a_hub_gone_down_after_the_plan_is_named_when_the_files_are_fetched(compose_config, tmp_path, repo_files,
                                                                              monkeypatch):
    params = step_params(STEP, resolve_config(compose_config(*hub_overrides())).config)
    with FakeHub({("model", REPO_ID): Repo.of_directory(repo_files, COMMIT)}) as server:
        point_huggingface_hub_at(monkeypatch, server.url, tmp_path / "hf")
        environment = STEP.environment(params)
    (tmp_path / "out").mkdir()
    # huggingface_hub retries a refused connection for ~20 s: time.sleep (the module's, so this process's) skips it
    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", lambda seconds: None)
    with pytest.raises(StepError) as info:
        STEP.run(params, {}, tmp_path / "out", StepContext(show_progress=False, environment=environment))
    assert str(info.value) == (f"cannot reach {REPO_ID} on the Hugging Face hub (ConnectError for {server.url}: "
                               f"[Errno 111] Connection refused) and its revision {COMMIT} is not in the local "
                               "cache: set model.source=local model.path=/path/to/copy, or check the network")


# ---- the evaluate step's hub dataset (eval.dataset=cnn_dailymail), through datasets' own hub client ----------------

DATASET_ID, DATASET_COMMIT = "fake-org/news", "da7a" * 10
ARTICLES = [{"article": f"Article {i}: the river rose {i} feet overnight.", "highlights": f"River up {i} ft.",
             "id": f"n{i}"} for i in range(4)]


@pytest.fixture
def dataset_hub(monkeypatch, tmp_path):
    """The fake hub serving DATASET_ID at DATASET_COMMIT as abisee/cnn_dailymail lays it out (a README whose configs
    name each config's parquet files); datasets reads its endpoint, offline switch and cache from its own config."""
    import datasets.config
    import pyarrow
    import pyarrow.parquet

    files = tmp_path / "news"
    (files / "3.0.0").mkdir(parents=True)
    table = pyarrow.Table.from_pylist(ARTICLES)
    pyarrow.parquet.write_table(table, files / "3.0.0" / "test-00000-of-00001.parquet")
    (files / "README.md").write_text("---\nconfigs:\n- config_name: 3.0.0\n  data_files:\n  - split: test\n"
                                     "    path: 3.0.0/test-*\n---\n# news\n")
    with FakeHub({("dataset", DATASET_ID): Repo.of_directory(files, DATASET_COMMIT)}) as server:
        point_huggingface_hub_at(monkeypatch, server.url, tmp_path / "hf")
        monkeypatch.setattr(datasets.config, "HF_ENDPOINT", server.url)
        monkeypatch.setattr(datasets.config, "HUB_DATASETS_URL",
                            server.url + "/datasets/{repo_id}/resolve/{revision}/{path}")
        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf" / "datasets")
        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
        yield server



@pytest.mark.parametrize("raised", ["connection", "disk"])
def test_a_fetch_broken_off_by_the_connection_itself_reads_as_an_unreachable_hub(raised, monkeypatch):
    """Where huggingface_hub raises the HTTP client's own error from snapshot_download (the GPU machine's release
    did, where this one chains it into a LocalEntryNotFoundError), a hub gone down since the plan is still said as
    one that cannot be reached; a full disk is the Hugging Face cache's."""
    class TransportError(Exception):  # the base of httpx's connection errors, which mambapipe knows by name
        pass

    class ConnectError(TransportError):
        pass

    error = ConnectError("[Errno 111] Connection refused") if raised == "connection" else OSError(
        errno.ENOSPC, os.strerror(errno.ENOSPC))

    def snapshot_download(*args, **kwargs):
        raise error

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    with pytest.raises(StepError) as info:
        fetch_snapshot(REPO_ID, None, COMMIT, None)
    if raised == "connection":
        assert str(info.value).startswith(f"cannot reach {REPO_ID} on the Hugging Face hub (ConnectError: [Errno 111] "
                                          f"Connection refused) and its revision {COMMIT} is not in the local cache")
    else:
        assert str(info.value).startswith(f"no space left on device in the Hugging Face cache {hub_cache()[0]}: ")


def test_the_cache_lookup_does_without_incomplete_snapshot_errors(monkeypatch):
    """pyproject allows huggingface_hub releases from before IncompleteSnapshotError: an offline plan's lookup of the
    local cache works with them (it failed on importing the name)."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    def snapshot_download(*args, **kwargs):  # as an older release answers for a snapshot it has not got
        raise LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    monkeypatch.delattr("huggingface_hub.errors.IncompleteSnapshotError")
    assert cached_commit("fake-org/never-fetched", "main", "model") is None

def test_a_hub_dataset_is_pinned_loaded_at_its_commit_and_then_offline(dataset_hub, monkeypatch):
    from mambapipe.evaluate.data import hub_commit, load_articles

    def load(local_only=None):
        return load_articles("cnn_dailymail", DATASET_ID, "3.0.0", "test", revision=DATASET_COMMIT,
                             local_only=local_only, show_progress=False)

    assert hub_commit(DATASET_ID) == DATASET_COMMIT
    online = load()
    assert sorted(online["id"]) == ["n0", "n1", "n2", "n3"] and set(online.column_names) >= {"article", "highlights"}
    files = [path for path in dataset_hub.paths() if "/resolve/" in path]
    assert files and all(path.startswith(f"/datasets/{DATASET_ID}/resolve/{DATASET_COMMIT}/") for path in files)
    asked = len(dataset_hub.requests)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets
    assert hub_commit(DATASET_ID) == DATASET_COMMIT
    assert load(local_only="HF_HUB_OFFLINE is set")["id"] == online["id"]
    assert len(dataset_hub.requests) == asked

