"""A plan, a plan-time error and a run whose every step is cached import none of the libraries the steps' work needs
(seconds of a run that does no such work, and of every test and sweep job that starts `python -m mambapipe`)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from mambapipe.pipeline.runner import run_recipe

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "datasets", "rouge_score", "nltk", "scipy")
# The quickstart recipe, run by mambapipe.cli's main as `python -m mambapipe` runs it, three ways in one process (a
# process each would cost a second more): after each, the heavy packages imported so far.
RUNS = """
import json, sys
from pathlib import Path

from mambapipe.cli import main
from mambapipe.pipeline.store import ArtifactStore

def run(*args):
    sys.argv = ["mambapipe", *args]
    try:
        main()
    except SystemExit:  # a failed run's exit
        pass
    print("imported:", json.dumps(sorted({name.split(".")[0] for name in sys.modules} & set(HEAVY))))

run("dtype=bogus")  # a config error
run("eval.batch_size=9", "hydra.run.dir=refused")  # a plan problem
run("plan_only=true", "hydra.run.dir=plan")
store = ArtifactStore(Path("cache"))  # every step's artifact, as the plan keyed it, made complete
for step in json.loads(Path("plan/run.json").read_text())["steps"]:
    store.commit(store.new_staging(step["name"], step["key"]), step["name"], step["key"], {"created": "2026-12-01"})
run("hydra.run.dir=cached")
"""


def test_a_plan_its_errors_and_a_cached_run_import_none_of_the_steps_libraries(tmp_path):
    env = {**os.environ, "MAMBAPIPE_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{RUNS}"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    imported = [line for line in out.stdout.splitlines() if line.startswith("imported: ")]
    assert imported == ["imported: []"] * 4, out.stdout + out.stderr
    assert "FAILED evaluate: eval.batch_size 9 > build.max_batch_size 2" in out.stderr, out.stderr
    statuses = [step["status"] for step in json.loads((tmp_path / "cached" / "run.json").read_text())["steps"]]
    assert statuses == ["cached"] * 4, statuses


def test_an_install_that_cannot_import_datasets_stops_a_run_at_its_plan_but_not_a_plan_only(
        compose_config, tmp_path, monkeypatch):
    """The evaluate step's check_imports, which the plan leaves out with plan_only=true."""
    monkeypatch.setitem(sys.modules, "datasets", None)  # what a missing or broken package looks like to import
    quiet = {"console": Console(file=io.StringIO()), "errors": Console(file=io.StringIO())}
    assert run_recipe(compose_config("plan_only=true"), tmp_path / "plan", **quiet).reason is None
    result = run_recipe(compose_config(), tmp_path / "run", **quiet)
    assert result.reason.startswith("evaluate: the summarize task cannot import datasets "), result.reason
    assert [outcome.status for outcome in result.outcomes] == ["skipped", "skipped", "skipped", "failed"]
