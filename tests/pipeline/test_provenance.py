"""Where a run came from: the git commit of the mambapipe checkout, and whether its tracked files had changes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mambapipe.pipeline import provenance
from mambapipe.pipeline.provenance import git_state, machine, machine_line, software_line


def git(repo: Path, *arguments: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *arguments], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A git checkout with one commit of a README."""
    repo = tmp_path / "checkout"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "README.md").write_text("mambapipe\n")
    git(repo, "add", "README.md")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    return repo


def test_a_clean_checkout_is_its_commit(checkout):
    assert git_state(checkout) == {"git_commit": git(checkout, "rev-parse", "HEAD").strip(), "git_dirty": False}


def test_a_changed_tracked_file_makes_it_dirty(checkout):
    """Found by QA: a line appended to README.md gave the same commit and no marker."""
    with open(checkout / "README.md", "a") as readme:
        readme.write("one more line\n")
    assert git_state(checkout)["git_dirty"] is True


def test_untracked_files_leave_it_clean(checkout):
    (checkout / "outputs").mkdir()
    (checkout / "outputs" / "run.json").write_text("{}")
    assert git_state(checkout)["git_dirty"] is False


def test_outside_a_checkout_both_are_unknown(tmp_path):
    assert git_state(tmp_path) == {"git_commit": None, "git_dirty": None}


def test_the_run_and_its_artifacts_record_a_dirty_checkout(pipeline, checkout, monkeypatch):
    (checkout / "README.md").write_text("changed\n")
    monkeypatch.setattr(provenance, "SOURCE", checkout)
    result = pipeline.run()
    record = json.loads((result.run_dir / "run.json").read_text())
    assert record["git_commit"] == git(checkout, "rev-parse", "HEAD").strip() and record["git_dirty"] is True
    manifest = pipeline.store.manifest("evaluate", result.outcomes[-1].key)
    assert manifest["git_commit"] == record["git_commit"] and manifest["git_dirty"] is True


COMMIT = "0f45781e1463aee9705bf9ba61491aa31dc48437"


@pytest.mark.parametrize("git, shown", [({"git_commit": COMMIT, "git_dirty": True}, "git 0f45781e1463, dirty"),
                                        ({"git_commit": COMMIT, "git_dirty": False}, "git 0f45781e1463, clean"),
                                        ({"git_commit": COMMIT}, "git 0f45781e1463"),  # a run.json before git_dirty
                                        ({"git_commit": None, "git_dirty": None}, "no git")])
def test_the_software_line_names_the_commit_and_whether_it_was_dirty(git, shown):
    record = {"versions": {"mambapipe": "0.1.0", "torch": "2.13.0", "transformers": "5.24.0", "omegaconf": "2.3"},
              **git}
    assert software_line(record) == f"mambapipe 0.1.0 ({shown}), torch 2.13.0, transformers 5.24.0"


def test_the_machine_line_counts_the_gpus_of_each_name():
    record = {"machine": {"host": "node7", "cpu": "AMD EPYC 9654", "cpus": 16,
                          "cuda_devices": ["NVIDIA H200", "NVIDIA H200"]}}
    assert machine_line(record) == "node7: AMD EPYC 9654 (16 CPUs), 2 × NVIDIA H200"
    assert machine_line({}) is None  # a run.json from before the machine was recorded


def test_the_machine_of_a_cpu_run_names_no_gpu():
    found = machine("cpu")
    assert found["cuda_devices"] == [] and found["cpus"] >= 1 and found["host"]
