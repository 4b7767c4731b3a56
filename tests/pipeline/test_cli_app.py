"""The installed app, run as users run it: `python -m mambapipe` and the `mambapipe` console script
(as Hydra's own tests/test_installed_app.py does)."""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from mambapipe.pipeline.store import ArtifactStore

REPO = Path(__file__).resolve().parents[2]
COMMANDS = {"python -m": [sys.executable, "-m", "mambapipe"], "console script": ["mambapipe"]}
LOG_LINE = re.compile(r"^\[[\d\- :,]+\]\[[\w.]+\]\[[A-Z]+\] - ", re.MULTILINE)  # Hydra's job_logging format
INTERRUPTED_LINE = "INTERRUPTED (finished steps are cached: the same command resumes)\n"


def app_env(tmp_path: Path) -> dict[str, str]:
    # The package of this checkout, wherever the editable install points (a git worktree's points elsewhere).
    this_checkout = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "MAMBAPIPE_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
            "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": this_checkout}


def run(command: list[str], tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*command, *args], cwd=tmp_path, env=app_env(tmp_path), capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(params=sorted(COMMANDS))
def command(request) -> list[str]:
    if request.param == "console script" and shutil.which("mambapipe") is None:
        pytest.fail("the mambapipe console script is not installed: pip install -e .")
    return COMMANDS[request.param]


def test_info_shows_the_config_dir_and_groups(command, tmp_path):
    out = run(command, tmp_path, "--info")
    assert out.returncode == 0, out.stderr
    assert f"file://{REPO / 'configs'}" in out.stdout
    assert "recipe" in out.stdout and "model" in out.stdout


def test_help_lists_recipes_and_examples(tmp_path):
    out = run(COMMANDS["python -m"], tmp_path, "--help")
    recipes = next(line for line in out.stdout.splitlines() if line.startswith("recipe: "))
    assert {"quickstart", "codestral_tp2", "mamba_2p8b"} <= set(recipes[len("recipe: "):].split(", "))
    assert "python -m mambapipe recipe=" in out.stdout
    assert "python -m mambapipe -m " in out.stdout and "--hydra-help" in out.stdout  # Hydra's flags are not listed


def test_help_examples_quote_what_a_shell_would_glob(tmp_path):
    """zsh, macOS's login shell, refuses an unquoted `steps=[evaluate]` (`no matches found`) and bash would expand it
    where a file matched: an example to copy quotes it, as the commands a run prints do."""
    out = run(COMMANDS["python -m"], tmp_path, "--help")
    examples = out.stdout.split("== Configuration groups ==")[0]
    words = [word for line in examples.splitlines() if "mambapipe" in line for word in line.split("#")[0].split()]
    assert [word for word in words if set(word) & set("[]*?") and word[0] not in "'\""] == []


def test_help_offers_models_but_not_their_schema(tmp_path):
    out = run(COMMANDS["python -m"], tmp_path, "--help")
    models = next(line for line in out.stdout.splitlines() if line.startswith("model: "))
    assert set(models[len("model: "):].split(", ")) == {p.stem for p in (REPO / "configs" / "model").glob("*.yaml")}


@pytest.mark.parametrize("override, key", [("model.arch.hidden_size=???", "model.arch.hidden_size"),
                                           ("model.name=???", "model.name")])
def test_a_missing_mandatory_value_is_one_line_naming_the_key(tmp_path, override, key):
    out = run(COMMANDS["python -m"], tmp_path, override, "plan_only=true", "hydra.run.dir=run")
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr
    assert out.stderr.rstrip().splitlines()[-1].startswith(f"FAILED config: {key} has no value (???): set it")


def test_an_override_reading_an_unset_variable_is_one_line_and_is_repeated_as_typed(tmp_path):
    """`tp_size=${oc.env:NGPUS}` with NGPUS unset was OmegaConf's InterpolationResolutionError traceback, raised as
    the app read Hydra's list of overrides; with it set, the rerun command repeated its value, not what was typed."""
    out = run(COMMANDS["python -m"], tmp_path, "tp_size=${oc.env:MAMBAPIPE_TEST_NGPUS}", "plan_only=true",
              "hydra.run.dir=run")
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr, out.stderr
    assert out.stderr.splitlines() == [
        f"fix it, then run: python -m mambapipe 'tp_size=${{oc.env:MAMBAPIPE_TEST_NGPUS}}' plan_only=true "
        f"hydra.run.dir={tmp_path / 'run'}",
        "FAILED config: tp_size cannot be resolved (KeyError raised while resolving interpolation: \"Environment "
        "variable 'MAMBAPIPE_TEST_NGPUS' not found\"): set what it reads, or give tp_size a value"]


@pytest.mark.parametrize("cache_dir, why", [
    ("/proc/nope", "cannot be created"), ("/proc", "cannot be written to"),  # refused even to root
    ("{tmp}/a-file/cache", "cannot be created: {tmp}/a-file is not a directory"),
])
def test_a_cache_dir_that_cannot_be_written_stops_the_plan_naming_it(tmp_path, cache_dir, why):
    (tmp_path / "a-file").write_text("")
    cache_dir, why = cache_dir.format(tmp=tmp_path), why.format(tmp=tmp_path)
    out = run(COMMANDS["python -m"], tmp_path, f"cache_dir={cache_dir}", "plan_only=true", "hydra.run.dir=run")
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr
    assert out.stderr.rstrip().splitlines()[-1].startswith(f"FAILED cache_dir={cache_dir} {why}")
    assert "set cache_dir (or MAMBAPIPE_CACHE) to a directory you can write to" in out.stderr


def test_tab_completion_offers_recipes_and_keys(tmp_path):
    env_line = {"COMP_LINE": "mambapipe recipe=code"}
    out = subprocess.run(["mambapipe", "-sc", "query=bash"], env={**os.environ, **env_line},
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["recipe=codestral", "recipe=codestral_tp2"]


def bash_completions(tmp_path: Path, install: str, comp_line: str) -> list[str]:
    """What bash offers for `comp_line` (the cursor at its end) once `install` ran, calling the completion function
    as bash does, with COMP_LINE, COMP_POINT and COMP_CWORD set."""
    script = (f'{install}\nCOMP_LINE={shlex.quote(comp_line)}; COMP_POINT=${{#COMP_LINE}}; '
              f'COMP_CWORD={len(comp_line.split()) - 1}\nhydra_bash_completion; printf "%s\\n" "${{COMPREPLY[@]}}"')
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=app_env(tmp_path), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_the_readmes_tab_completion_line_completes_the_console_script_only(tmp_path):
    install = re.search(r"`([^`]*-sc install=bash[^`]*)`", (REPO / "README.md").read_text())[1]
    assert bash_completions(tmp_path, install, "mambapipe recipe=code") == ["recipe=codestral", "recipe=codestral_tp2"]
    assert bash_completions(tmp_path, install, "mambapipe build.max_b") == ["build.max_batch_size="]
    (tmp_path / "mine" / "recipe").mkdir(parents=True)
    (tmp_path / "mine" / "recipe" / "my_codestral.yaml").write_text("# @package _global_\n")
    assert bash_completions(tmp_path, install, "mambapipe -cd mine recipe=my_") == []  # from configs/ alone
    python_m = install.replace("mambapipe -sc", "python -m mambapipe -sc")  # completion installed for `python`
    assert bash_completions(tmp_path, python_m, "python -m mambapipe recipe=code") == []


def test_plan_only_exits_zero_and_writes_the_run_dir(tmp_path):
    out = run(COMMANDS["console script"], tmp_path, "plan_only=true", "hydra.run.dir=run")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "not cached" in out.stdout
    assert {"config.yaml", "run.json", "mambapipe.log"} <= {p.name for p in (tmp_path / "run").iterdir()}
    assert not (tmp_path / "cache" / "download").exists() or not any((tmp_path / "cache" / "download").iterdir())


@pytest.mark.parametrize("args, line", [
    (["dtype=float32,", "bfloat16"], "dtype=float32,: a sweep runs with -m, its values separated by commas, not "
                                     "spaces: `python -m mambapipe -m dtype=float32,bfloat16 plan_only=true`"),
    (["steps=download,", "convert"], "steps=download,: steps is a list; write it without spaces, in brackets and "
                                     "quotes: 'steps=[download,convert]'"),
    (["hydra.job.chdir=true,false"], "hydra.job.chdir=true,false: Hydra sweeps none of its own settings, with -m or "
                                     "without: give hydra.job.chdir one value (hydra.job.chdir=true, and run once "
                                     "per value)"),
    (["-m", "hydra.run.dir=a,b"], "hydra.run.dir=a,b: Hydra sweeps none of its own settings, with -m or without: "
                                  "give hydra.run.dir one value (hydra.run.dir=a, and run once per value), or one "
                                  "with commas in quotes: 'hydra.run.dir=\"a,b\"'"),
])
def test_a_sweep_mistake_is_one_line_before_hydra_runs(tmp_path, args, line):
    """Hydra's reports of these were three to six lines ('Ambiguous value', 'Sweeping over Hydra's configuration
    is not supported') or, for the spaced sweep, a fix that left bfloat16 out."""
    out = run(COMMANDS["python -m"], tmp_path, *args, "plan_only=true")
    assert (out.returncode, out.stdout, out.stderr) == (1, "", f"FAILED {line}\n")
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


@pytest.mark.parametrize("launcher,size,rank", [("torchrun", "WORLD_SIZE", "RANK"),
                                                ("mpirun", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),
                                                ("mpirun", "PMI_SIZE", "PMI_RANK")])
def test_started_as_one_of_several_ranks_it_refuses_in_one_line_said_once(tmp_path, launcher, size, rank):
    """`torchrun --nproc-per-node 2 -m mambapipe` ran the whole pipeline twice (two plans, two run.json), each copy
    launching its own ranks (found by QA): mambapipe starts its own. Rank 0 says so, the others exit quietly."""
    outputs = []
    for this_rank in ("0", "1"):
        env = {**app_env(tmp_path), size: "2", rank: this_rank, "LOCAL_RANK": this_rank}
        outputs.append(subprocess.run([sys.executable, "-m", "mambapipe", "eval.max_ite=3", "force=[build]"],
                                      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120))
    assert [out.returncode for out in outputs] == [2, 0]  # the others at once: the launcher keeps rank 0's 2
    assert outputs[0].stderr == (f"mambapipe was started as one of 2 ranks by {launcher}, but it starts its own "
                                 "tp_size ranks: run `python -m mambapipe eval.max_ite=3 'force=[build]'` without "
                                 f"{launcher} (recipe=quickstart runs tp_size=1; for 2 ranks add tp_size=2)\n")
    assert outputs[0].stdout == outputs[1].stdout == outputs[1].stderr == ""
    assert not (tmp_path / "outputs").exists()


def first_of_ranks(tmp_path: Path, ranks: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`python -m mambapipe ARGS` as the first of `ranks` ranks that torchrun started."""
    env = {**app_env(tmp_path), "WORLD_SIZE": ranks, "RANK": "0", "LOCAL_RANK": "0", **env}
    return subprocess.run([sys.executable, "-m", "mambapipe", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def test_on_several_nodes_the_suggested_tp_size_is_one_nodes_ranks(tmp_path):
    """WORLD_SIZE counts the ranks of every node, while one engine's tp_size ranks are of one node: 8 ranks over 2
    nodes was told to run tp_size=8."""
    out = first_of_ranks(tmp_path, "8", "eval.max_ite=3", LOCAL_WORLD_SIZE="4")
    assert out.returncode == 2 and out.stderr == (
        "mambapipe was started as one of 8 ranks (4 on each node) by torchrun, but it starts its own tp_size ranks: "
        "run `python -m mambapipe eval.max_ite=3` on one node without torchrun (recipe=quickstart runs tp_size=1; "
        "for 4 ranks add tp_size=4)\n")


@pytest.mark.parametrize("ranks, args, why", [
    ("4", ["recipe=codestral_tp2"], "recipe=codestral_tp2 runs tp_size=2; for 4 ranks add tp_size=4"),
    ("2", ["recipe=codestral_tp2"], "recipe=codestral_tp2 runs tp_size=2"),
    ("2", ["recipe=mamba2_130m", "plan_only=true"],  # was told to add tp_size=2, which the plan then refuses
     "recipe=mamba2_130m runs tp_size=1; mamba2-130m does not split 2 ways (2 does not divide n_groups=1)"),
    ("4", ["recipe=codestral", "tp_size=2"], "tp_size=2 as given; for 4 ranks write tp_size=4"),
    ("2", ["recipe=codestral", "++tp_size=1"], "tp_size=1 as given; for 2 ranks write tp_size=2"),
    ("2", ["recipe=quickstrat"], "for 2 ranks add tp_size=2"),  # no config to read: the run says what is wrong
    ("2", ["tp_size=${oc.env:NGPUS}"], "for 2 ranks write tp_size=2"),  # NGPUS unset: was a traceback, exit 1
])
def test_the_command_a_launcher_is_refused_with_is_the_users_own_and_says_why(tmp_path, ranks, args, why):
    """`mpirun -n 4 python -m mambapipe recipe=codestral_tp2` was told to run `... recipe=codestral_tp2 tp_size=4`
    without a word on the recipe's own tp_size=2, and a model that does not split that many ways was told the same."""
    out = first_of_ranks(tmp_path, ranks, *args)
    assert out.returncode == 2 and out.stderr == (
        f"mambapipe was started as one of {ranks} ranks by torchrun, but it starts its own tp_size ranks: run "
        f"`python -m mambapipe {shlex.join(args)}` without torchrun ({why})\n")


@pytest.mark.parametrize("args, shows", [(["--version"], "mambapipe "), (["--help"], "mambapipe: download"),
                                         (["--cfg", "job", "dtype=bfloat16"], "dtype: bfloat16"),
                                         (["-sc", "install=bash"], "hydra_bash_completion"),
                                         (["cache", "ls"], "")])
def test_a_command_line_that_runs_no_step_runs_once_under_a_launcher(tmp_path, args, shows):
    """--version, --help, --cfg job, -sc and another program's command (cache ls) were refused under torchrun with
    a command that added tp_size=2 to them: they run nothing in parallel, so rank 0 runs them, the others exit 0."""
    outputs = []
    for this_rank in ("0", "1"):
        env = {**app_env(tmp_path), "WORLD_SIZE": "2", "RANK": this_rank, "LOCAL_RANK": this_rank}
        outputs.append(subprocess.run([sys.executable, "-m", "mambapipe", *args], cwd=tmp_path, env=env,
                                      capture_output=True, text=True, timeout=120))
    first, other = outputs
    assert "tp_size" not in first.stderr and "started as one of" not in first.stderr, first.stderr
    if args[0] == "cache":  # the app's own line for it, exit 2
        assert first.returncode == 2 and "run `mambapipe-cache ls`" in first.stderr, first.stderr
    else:
        assert first.returncode == 0 and shows in first.stdout, first.stdout + first.stderr
    assert (other.returncode, other.stdout, other.stderr) == (0, "", "")


def test_one_rank_of_a_launcher_runs_as_it_is(tmp_path):
    """torchrun --nproc-per-node 1 starts one copy: nothing runs twice."""
    out = subprocess.run([sys.executable, "-m", "mambapipe", "--version"], cwd=tmp_path, capture_output=True, text=True,
                         env={**app_env(tmp_path), "WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("mambapipe "), out.stderr


def test_failure_exits_nonzero_with_reason_last(tmp_path):
    out = run(COMMANDS["python -m"], tmp_path, "recipe=mamba_130m", "hydra.run.dir=run")
    assert out.returncode == 1
    last = out.stderr.rstrip().splitlines()[-1]
    assert "state-spaces/mamba-130m-hf" in last and "model.source=local model.path=" in last
    assert "Traceback" not in out.stdout + out.stderr


def test_a_local_dataset_without_the_fields_stops_the_plan_before_any_step(tmp_path):
    """Not after download, convert and build have done their work, which only evaluate's loader would learn."""
    dataset = tmp_path / "articles.jsonl"
    dataset.write_text('{"text": "A story.", "summary": "Story."}\n')
    out = run(COMMANDS["python -m"], tmp_path, f"eval.dataset={dataset}", "hydra.run.dir=run")
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr
    assert (f"problem evaluate: eval.dataset '{dataset}' lacks field(s) ['article', 'highlights'] (has ['text', "
            "'summary'])") in out.stdout.replace("\n", "")
    assert "▶" not in out.stdout and not list(ArtifactStore(tmp_path / "cache").artifacts())


def test_a_recipe_of_ones_own_in_a_config_dir_is_named_again_by_the_rerun_line(tmp_path):
    """`-cd DIR recipe=NAME` reads DIR/recipe/NAME.yaml; a rerun without the -cd would not find it."""
    (tmp_path / "mine" / "recipe").mkdir(parents=True)
    (tmp_path / "mine" / "recipe" / "too_wide.yaml").write_text("# @package _global_\ntp_size: 3\n")
    out = run(COMMANDS["python -m"], tmp_path, "-cd", str(tmp_path / "mine"), "recipe=too_wide", "hydra.run.dir=run")
    assert out.returncode == 1 and "tp_size=3" in out.stderr, out.stdout + out.stderr
    assert (f"fix it, then run: python -m mambapipe --config-dir {tmp_path / 'mine'} recipe=too_wide "
            f"hydra.run.dir={tmp_path / 'run'}") in out.stderr


@pytest.mark.parametrize("args", [["recipe=typo"], ["-m", "recipe=quickstart,typo"]])
def test_a_yaml_syntax_error_in_a_recipe_file_is_one_line_before_any_job(tmp_path, args):
    """Hydra's report was the YAML scanner's traceback, ~100 lines (QA); a sweep ran its other jobs first."""
    (tmp_path / "mine" / "recipe").mkdir(parents=True)
    recipe = "# @package _global_\neval:\n  task: summarize\n  max_ite 2\n  batch_size: 1\n"  # QA's, cut short
    (tmp_path / "mine" / "recipe" / "typo.yaml").write_text(recipe)
    out = run(COMMANDS["python -m"], tmp_path, "-cd", str(tmp_path / "mine"), *args, "plan_only=true",
              "hydra.run.dir=run", "hydra.sweep.dir=sweep")
    assert out.returncode == 1 and out.stdout == "", out.stdout + out.stderr
    assert out.stderr == (f"FAILED recipe=typo: {tmp_path / 'mine' / 'recipe' / 'typo.yaml'} line 4: could not find "
                          "expected ':'\n")
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


def test_hydra_full_error_still_gives_hydras_traceback_of_a_recipe_file(tmp_path):
    (tmp_path / "mine" / "recipe").mkdir(parents=True)
    (tmp_path / "mine" / "recipe" / "typo.yaml").write_text("# @package _global_\ndtyp: float32\n")
    out = subprocess.run([*COMMANDS["python -m"], "-cd", str(tmp_path / "mine"), "recipe=typo", "hydra.run.dir=run"],
                         cwd=tmp_path, env={**app_env(tmp_path), "HYDRA_FULL_ERROR": "1"}, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" in out.stderr and "Key 'dtyp' not in 'MambapipeConfig'" in out.stderr


def test_an_unquoted_tilde_is_one_line_and_the_quoted_path_is_expanded(tmp_path):
    """Hydra's report was `LexerNoViableAltException: model.path=~/m1hf` with a caret and a link (QA)."""
    env = {**app_env(tmp_path), "HOME": str(tmp_path)}
    out = subprocess.run([*COMMANDS["python -m"], "model.source=local", "model.path=~/m1hf", "hydra.run.dir=run"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stdout == "", out.stdout + out.stderr
    assert out.stderr == ("FAILED model.path=~/m1hf: Hydra reads ~ only in quotes: write 'model.path=\"~/m1hf\"' "
                          "(mambapipe expands the ~ itself; the shell does not, after =)\n")
    out = subprocess.run([*COMMANDS["python -m"], "model.source=local", 'model.path="~/m1hf"', "plan_only=true",
                          "hydra.run.dir=run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert f"model.path={tmp_path / 'm1hf'} does not exist" in out.stdout, out.stdout + out.stderr


def test_a_config_dir_given_with_a_tilde_after_the_equals_sign_is_found(tmp_path):
    """The shell leaves `--config-dir=~/mine` as typed; Hydra looked for ./~/mine (QA)."""
    (tmp_path / "mine" / "recipe").mkdir(parents=True)
    (tmp_path / "mine" / "recipe" / "wide.yaml").write_text("# @package _global_\ntp_size: 3\n")
    out = subprocess.run([*COMMANDS["python -m"], "--config-dir=~/mine", "recipe=wide", "plan_only=true",
                          "hydra.run.dir=run"], cwd=tmp_path, env={**app_env(tmp_path), "HOME": str(tmp_path)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "tp_size=3" in out.stderr, out.stdout + out.stderr
    assert f"python -m mambapipe --config-dir {tmp_path / 'mine'} recipe=wide" in out.stderr


def test_a_mistyped_key_is_one_line_naming_the_key_meant(tmp_path):
    """Before Hydra composes: its own error spans six lines and suggests `+build.max_batch_sise=16`."""
    out = run(COMMANDS["python -m"], tmp_path, "recipe=mamba_130m", "build.max_batch_sise=16", "hydra.run.dir=run")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr == "FAILED build.max_batch_sise is not a config key; did you mean build.max_batch_size?\n"
    assert not (tmp_path / "run").exists()


def test_a_mistyped_key_beside_a_config_dir_is_one_line_too(tmp_path):
    """A --config-dir adds recipes, not keys: a recipe's key that the schema lacks is refused, as a typo is."""
    (tmp_path / "mine" / "recipe").mkdir(parents=True)
    (tmp_path / "mine" / "recipe" / "extra.yaml").write_text("# @package _global_\nmy_key: 1\n")
    out = run(COMMANDS["python -m"], tmp_path, f"--config-dir={tmp_path / 'mine'}", "build.max_batch_sise=16",
              "hydra.run.dir=run")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr == "FAILED build.max_batch_sise is not a config key; did you mean build.max_batch_size?\n"
    out = run(COMMANDS["python -m"], tmp_path, "-cd", str(tmp_path / "mine"), "recipe=extra", "hydra.run.dir=run")
    assert out.returncode == 1 and out.stdout == "", out.stdout + out.stderr
    assert out.stderr == (f"FAILED recipe=extra: {tmp_path / 'mine' / 'recipe' / 'extra.yaml'}: my_key is not a config "
                          "key; see python -m mambapipe --help\n")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, line", [
    (["recipe=quickstrat"], "FAILED recipe=quickstrat: no such recipe; did you mean recipe=quickstart? (recipes: "),
    (["model=tiny_mamba3"], "FAILED model=tiny_mamba3: no such model; did you mean model=tiny_mamba? (models: "),
    (["eval.task=bench"], "FAILED eval.task=bench: Invalid value 'bench', expected one of [summarize, benchmark]\n"),
    (["-m", "recipe=quickstart,quickstrat"], "FAILED recipe=quickstrat: no such recipe; did you mean"),
    (["-m", "dtype=float32,float8"], "FAILED dtype=float8: Invalid value 'float8', expected one of [float16, "),
    (["build=3"], "FAILED build=3: build is a group of settings, not one value: set its keys (max_batch_size, "),
    (["force='[build]'"], "FAILED force='[build]': force is a list; write 'force=[build]'\n"),
    (["recipe=[]"], "FAILED recipe=[]: a run takes one recipe, and [] picks none: write recipe=NAME (recipes: "),
    (["-m", "recipe=quickstart,"], "FAILED recipe=quickstart,: Hydra cannot parse an empty value between commas: "
                                   "write recipe=quickstart\n"),  # Hydra: 4 lines, not naming the override
    (["recipe=quickstart,mamba_130m"], "FAILED recipe=quickstart,mamba_130m: a comma-separated value for a key "
     "without -m is a sweep: add -m (`python -m mambapipe -m recipe=quickstart,mamba_130m plan_only=true "
     "hydra.run.dir=run hydra.sweep.dir=sweep`)\n"),  # Hydra: 'Ambiguous value', 4 lines, first a list to write
    (["-m", "dtype=float32", "bfloat16"], "FAILED bfloat16: not an override, which reads key=value; a sweep's values "
                                          "are separated by commas, not spaces: write dtype=float32,bfloat16\n"),
])
def test_a_bad_recipe_model_or_value_is_one_line_before_any_job(tmp_path, args, line):
    """Hydra's own errors span 5 to 20 lines (a missing recipe's lists the search path); a sweep stops before any
    job, naming the bad value of the sweep."""
    out = run(COMMANDS["python -m"], tmp_path, *args, "plan_only=true", "hydra.run.dir=run", "hydra.sweep.dir=sweep")
    assert out.returncode == 1 and out.stdout == "", out.stdout + out.stderr
    assert out.stderr.startswith(line) and out.stderr.count("\n") == 1, out.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


def test_a_recipe_that_sets_model_keys_but_picks_no_model_stops_before_any_step(tmp_path):
    (tmp_path / "mine" / "recipe").mkdir(parents=True)
    (tmp_path / "mine" / "recipe" / "my_m1.yaml").write_text(
        "# @package _global_\nmodel:\n  arch:\n    mamba_version: Mamba1\n")
    out = run(COMMANDS["python -m"], tmp_path, "-cd", str(tmp_path / "mine"), "recipe=my_m1", "hydra.run.dir=run")
    assert out.returncode == 1 and out.stdout == "", out.stdout + out.stderr
    assert out.stderr.startswith("FAILED recipe=my_m1 sets model.arch but picks no model, so they would be merged "
                                 "into the default model tiny_mamba2 (a Mamba2): ") and out.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_the_header_names_the_architecture_that_runs(tmp_path):
    """Found by QA: `model my-m1 (synthetic)` did not say that a Mamba2 ran where the recipe meant a Mamba1."""
    out = run(COMMANDS["python -m"], tmp_path, "model=tiny_mamba", "model.arch.num_layers=3", "plan_only=true",
              "hydra.run.dir=run")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("mambapipe model tiny-mamba (synthetic Mamba1, hidden 64, 3 layers, vocab 512), "
                                 "dtype float32, tp 1\n")


@pytest.mark.parametrize("args, script", [(["cache", "ls"], "mambapipe-cache ls"),
                                          (["sweep", "summarize", "s"], "mambapipe-sweep summarize s")])
def test_a_command_of_another_program_is_one_line_naming_it(tmp_path, command, args, script):
    """Hydra's own answer is a parse error of its override grammar (`missing EQUAL at '<EOF>'`)."""
    out = run(command, tmp_path, *args)
    assert out.returncode == 2 and out.stdout == "", out.stdout + out.stderr
    assert out.stderr.count("\n") == 1 and f"run `{script}`" in out.stderr, out.stderr


@pytest.mark.parametrize("args, shows", [
    (["--cfg", "job", "recipe=bench_codestral", "model=mamba_130m", "eval.scenarios.0.batch=3", "+extra=1",
      "hydra.run.dir=run"], "batch: 3"),
    (["--cfg", "hydra", "hydra/launcher=mambapipe_slurm", "hydra.launcher.partition=gpu"], "partition: gpu"),
    (["-sc", "install=bash"], "hydra_bash_completion"),
])
def test_what_hydra_accepts_passes_the_key_check(tmp_path, args, shows):
    out = run(COMMANDS["python -m"], tmp_path, *args)
    assert out.returncode == 0 and shows in out.stdout, out.stdout + out.stderr


def test_a_sweep_passes_the_key_check(tmp_path):
    out = run(COMMANDS["python -m"], tmp_path, "-m", "dtype=float32,bfloat16", "plan_only=true", "hydra.sweep.dir=s")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "dtype=float32" in out.stdout and "dtype=bfloat16" in out.stdout
    assert "2 jobs planned (plan_only=true): nothing ran." in (tmp_path / "s" / "summary.md").read_text()


VERSION_WITHOUT_TORCH = """
import sys
from mambapipe.cli import main  # as the console script starts it
main()
print("torch imported" if "torch" in sys.modules else "")
"""


def test_version_names_mambapipe_and_hydra(command, tmp_path):
    out = run(command, tmp_path, "recipe=quickstart", "--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"mambapipe {metadata.version('mambapipe')} (Hydra {metadata.version('hydra-core')})\n"
    assert "torch imported" not in run([sys.executable, "-c", VERSION_WITHOUT_TORCH], tmp_path, "--version").stdout


def test_cache_console_script(tmp_path):
    out = subprocess.run(["mambapipe-cache", "--cache-dir", str(tmp_path), "ls"], capture_output=True, text=True)
    assert out.returncode == 0 and "artifacts in" in out.stdout


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["plan_only=true"]])
def test_a_reader_of_standard_output_that_went_away_ends_it_quietly_as_the_cache_command(tmp_path, args,
                                                                                          reader_gone):
    ended, cache_ls = (subprocess.run(command, cwd=tmp_path, env=app_env(tmp_path), stdout=reader_gone,
                                      stderr=subprocess.PIPE, text=True, timeout=120)
                       for command in ([*COMMANDS["python -m"], *args],
                                       ["mambapipe-cache", "--cache-dir", str(tmp_path), "ls"]))
    assert (ended.returncode, ended.stderr) == (cache_ls.returncode, cache_ls.stderr) == (1, "")


def test_a_reader_gone_in_the_middle_of_a_step_leaves_nothing_of_it_in_the_cache(tmp_path):
    """The evaluate step prints its table into a pipe whose reader left once the step had begun: the run ends
    there, and the step's staging dir goes with it; the steps before are cached whole."""
    app = subprocess.Popen([*COMMANDS["python -m"], "hydra.run.dir=run"], cwd=tmp_path, env=app_env(tmp_path),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in app.stdout:
        if line.startswith("▶ evaluate"):
            break
    app.stdout.close()
    errors = app.communicate(timeout=120)[1]
    assert (app.returncode, errors) == (1, "")
    store = ArtifactStore(tmp_path / "cache")
    assert [path.name for path in (store.root / "evaluate").iterdir() if not path.name.startswith(".")] == []
    assert not any(store.root.glob("*/.staging/*"))
    assert len([path for path in (store.root / "build").iterdir() if not path.name.startswith(".")]) == 1


def test_ctrl_c_in_a_step_exits_130_with_the_resume_command(tmp_path, ctrl_c_while_download_waits):
    """Ctrl-C at the terminal (SIGINT to the process group) inside the download step: held there, waiting on
    the artifact's lock that this test holds, so the signal cannot come after a fast step has finished."""
    planned = run(COMMANDS["python -m"], tmp_path, "plan_only=true", "hydra.run.dir=plan")
    download_key = json.loads((tmp_path / "plan" / "run.json").read_text())["steps"][0]["key"]
    code, out = ctrl_c_while_download_waits([*COMMANDS["python -m"], "hydra.run.dir=run"], tmp_path,
                                            app_env(tmp_path), tmp_path / "cache", download_key, timeout=60)
    assert planned.returncode == 0 and code == 130, out[-3000:]
    assert "Traceback" not in out and "FAILED download: interrupted" in out, out[-3000:]
    assert f"resume (finished steps are cached): python -m mambapipe hydra.run.dir={tmp_path / 'run'}\n" in out


A_RUN_THAT_LOGS = """
import logging
import mambapipe.steps

load_steps = mambapipe.steps.load_steps

def logging_load_steps():  # a log line of the run's, as the libraries a step imports may write (a plan imports none)
    logging.getLogger("mambapipe.steps").info("loading the steps")
    return load_steps()

mambapipe.steps.load_steps = logging_load_steps
from mambapipe.cli import main
main()
"""


def test_logs_go_to_standard_error(tmp_path):
    """Standard output is the results' (`> results.txt`); Hydra's own logging config sends logs there too."""
    out = run([sys.executable, "-c", A_RUN_THAT_LOGS], tmp_path, "plan_only=true", "hydra.run.dir=run",
              "hydra.verbose=true")
    assert out.returncode == 0 and "not cached" in out.stdout, out.stdout + out.stderr
    assert LOG_LINE.search(out.stderr) and "loading the steps" in out.stderr and "[HYDRA]" in out.stderr, out.stderr
    assert not LOG_LINE.search(out.stdout) and "[HYDRA]" not in out.stdout, out.stdout


A_STEP_THAT_FAILS = """
import mambapipe.pipeline.runner as runner
from mambapipe.pipeline.step import StepError

def _call_step(*args):  # the download step refuses what it was given, as a step does
    raise StepError("the checkpoint is damaged; download it again")

runner._call_step = _call_step
from mambapipe.cli import main
main()
"""


@pytest.mark.parametrize("argv, said", [
    (["-m", "mambapipe", "build.max_batch_sise=16"],  # refused before Hydra composes: no results at all
     ["FAILED build.max_batch_sise is not a config key; did you mean build.max_batch_size?"]),
    (["-c", A_STEP_THAT_FAILS, "steps=[download]"],
     ["run again once fixed (finished steps are cached): python -m mambapipe 'steps=[download]' hydra.run.dir={run}",
      "FAILED download: the checkpoint is damaged; download it again"]),
])
def test_why_a_run_failed_is_on_standard_error_below_its_results(tmp_path, argv, said):
    """`python -m mambapipe ... > results.txt` left the terminal without a word of why it failed: the FAILED line and
    the command that runs it again were on standard output, among the results."""
    said = [line.format(run=tmp_path / "run") for line in said]
    out = run([sys.executable, *argv], tmp_path, "hydra.run.dir=run")
    assert out.returncode == 1 and out.stderr.splitlines()[-len(said):] == said, out.stdout + out.stderr
    assert "FAILED" not in out.stdout and "run again" not in out.stdout, out.stdout
    # On a terminal that shows both streams the error comes last, below the summary it follows.
    both = subprocess.run([sys.executable, *argv, "hydra.run.dir=run"], cwd=tmp_path, env=app_env(tmp_path),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert both.stdout.splitlines()[-len(said):] == said, both.stdout
    if out.stdout:
        assert out.stdout.endswith(f"run directory: {tmp_path / 'run'}\n")
        assert both.stdout.splitlines()[-len(said) - 1] == f"run directory: {tmp_path / 'run'}"


def test_the_failed_line_is_in_color_on_a_terminal_only(tmp_path):
    """Standard error's console asks standard error, not standard output, whether it is a terminal."""
    import pty

    env = {**app_env(tmp_path), "TERM": "xterm-256color"}
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE"):
        env.pop(name, None)
    terminal, its_device = pty.openpty()
    with open(terminal, "rb") as screen:
        app = subprocess.run([*COMMANDS["python -m"], "build.max_batch_sise=16"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=its_device, timeout=120)
        os.close(its_device)
        shown = os.read(screen.fileno(), 4096).decode()
    assert app.returncode == 1 and app.stdout == b""
    assert shown == "\x1b[31mFAILED\x1b[0m build.max_batch_sise is not a config key; did you mean " \
                    "build.max_batch_size?\r\n"
    plain = subprocess.run([*COMMANDS["python -m"], "build.max_batch_sise=16"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert plain.stderr.startswith("FAILED build.max_batch_sise") and "\x1b" not in plain.stderr


@pytest.mark.parametrize("logging_choice", ["hydra/job_logging=disabled", "hydra/hydra_logging=disabled"])
def test_another_logging_config_replaces_mambapipes_whole(tmp_path, logging_choice):
    """`disabled` has no console handler: config.yaml selects whole logging configs, not a handler to merge in."""
    out = run(COMMANDS["python -m"], tmp_path, "plan_only=true", "hydra.run.dir=run", "hydra.verbose=true",
              logging_choice)
    assert out.returncode == 0 and "not cached" in out.stdout, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and not LOG_LINE.search(out.stdout), out.stdout + out.stderr


HYDRA_INTERNALS_CHANGED = """
import hydra._internal.config_loader_impl  # Hydra's own ConfigRepository; the check gets one that takes more:
from hydra._internal import config_repository

class ConfigRepository(config_repository.ConfigRepository):
    def __init__(self, config_search_path, more):
        super().__init__(config_search_path)

config_repository.ConfigRepository = ConfigRepository
from mambapipe.cli import main
main()
"""


def test_a_command_runs_when_hydras_internals_changed(tmp_path):
    """The value check reads config groups through hydra._internal; once that changes, it is left out."""
    out = run([sys.executable, "-c", HYDRA_INTERNALS_CHANGED], tmp_path, "plan_only=true", "hydra.run.dir=run")
    assert out.returncode == 0 and "not cached" in out.stdout, out.stdout + out.stderr


CTRL_C_IN_THE_APPS_IMPORTS = """
import sys

class CtrlC:  # pressed while the imports that start the app load, Hydra's first
    def find_spec(self, name, path, target=None):
        if name == "hydra":
            raise KeyboardInterrupt

sys.meta_path.insert(0, CtrlC())
from mambapipe.cli import main  # as the console script starts it
main()
"""
CTRL_C_IN_TORCHS_IMPORT = """
import logging
import mambapipe.steps

def load_steps():  # the runner's import of the steps and torch, stopped after torch's exit handler was registered
    logging.getLogger("torch._subclasses.fake_tensor").info("FakeTensor cache stats:")
    raise KeyboardInterrupt

mambapipe.steps.load_steps = load_steps
from mambapipe.cli import main
main()
"""
CTRL_C_AS_TORCH_STARTS_LOADING = """
import atexit, os, signal, sys, time

class CtrlC:  # pressed as the download step's synthetic model starts on torch, by the test: at a known point
    def find_spec(self, name, path, target=None):
        if name == "torch":
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)  # the handler runs meanwhile

sys.meta_path.insert(0, CtrlC())
atexit.register(lambda: print("torch loaded:", hasattr(sys.modules.get("torch"), "Tensor"), file=sys.stderr))
from mambapipe.cli import main
main()
"""
CTRL_C_IN_EXECD_CODE = """
import mambapipe.steps

def load_steps():  # a Ctrl-C in code that exec() runs: the methods of a dataclass, which torch's import makes
    exec("raise KeyboardInterrupt")

mambapipe.steps.load_steps = load_steps
from mambapipe.cli import main
main()
"""
CTRL_C_IN_EXECD_CODE_IN_A_STEP = """
import mambapipe.pipeline.runner as runner

def _call_step(*args):  # the same within the download step, which the runner reports
    exec("raise KeyboardInterrupt")

runner._call_step = _call_step
from mambapipe.cli import main
main()
"""
CTRL_C_AGAIN_AS_IT_SHUTS_DOWN = """
import atexit, os, signal, time
import mambapipe.steps

def load_steps():  # a Ctrl-C before any step ran
    raise KeyboardInterrupt

def ctrl_c_again():  # and another as the interpreter shuts down: exit handlers run last registered first
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)

atexit.register(ctrl_c_again)
mambapipe.steps.load_steps = load_steps
from mambapipe.cli import main
main()
"""
CTRL_C_WHILE_THE_RUN_IS_RECORDED = """
import mambapipe.pipeline.runner as runner

def _finish(*args, **kwargs):  # the steps ran; a Ctrl-C outside any step, which the runner does not catch
    raise KeyboardInterrupt

runner._finish = _finish
from mambapipe.cli import main
main()
"""


@pytest.mark.parametrize("script", [CTRL_C_IN_THE_APPS_IMPORTS, CTRL_C_IN_TORCHS_IMPORT])
def test_ctrl_c_before_any_step_is_one_line_and_exit_130(tmp_path, script):
    """Not a KeyboardInterrupt's traceback, nor the INFO lines of a torch whose import stopped before it set its
    own loggers to WARNING (its exit handler logs FakeTensor cache stats)."""
    out = run([sys.executable, "-c", script], tmp_path, "hydra.run.dir=run")
    assert out.returncode == 130 and out.stdout == "" and out.stderr == INTERRUPTED_LINE, out.stdout + out.stderr
    assert "FakeTensor" not in out.stdout + out.stderr, out.stderr


def test_ctrl_c_in_torchs_import_is_raised_once_torch_is_loaded(tmp_path):
    """Stopped halfway, torch's import left numpy half-imported and did not always let the KeyboardInterrupt out:
    the plan went on and failed in numpy with a RecursionError (QA). The Ctrl-C waits for the import instead, which
    the first step to need torch makes (the plan does without it)."""
    out = run([sys.executable, "-c", CTRL_C_AS_TORCH_STARTS_LOADING], tmp_path, "steps=[download]", "hydra.run.dir=run")
    assert out.returncode == 130 and "✓ download" not in out.stdout, out.stdout + out.stderr
    assert out.stderr.endswith("FAILED download: interrupted\ntorch loaded: True\n"), out.stderr
    assert json.loads((tmp_path / "run" / "run.json").read_text())["reason"] == "download: interrupted"


@pytest.mark.parametrize("script, last_line", [(CTRL_C_IN_EXECD_CODE, INTERRUPTED_LINE),
                                               (CTRL_C_IN_EXECD_CODE_IN_A_STEP, "FAILED download: interrupted\n")])
def test_a_ctrl_c_through_execd_code_exits_130_under_python_m(tmp_path, script, last_line):
    """CPython 3.10 to 3.13 take a KeyboardInterrupt that left exec()'d code for one nothing caught, and
    `python -m` then ended by SIGINT (returncode -2) after its whole report (QA: 3 of ~25 Ctrl-Cs)."""
    (tmp_path / "ctrl_c_app.py").write_text(script)
    out = run([sys.executable, "-m", "ctrl_c_app"], tmp_path, "steps=[download]", "hydra.run.dir=run")
    assert out.returncode == 130 and out.stderr.endswith(last_line), out.stdout + out.stderr


def test_a_second_ctrl_c_as_the_interpreter_shuts_down_is_ignored(tmp_path):
    out = run([sys.executable, "-c", CTRL_C_AGAIN_AS_IT_SHUTS_DOWN], tmp_path, "hydra.run.dir=run")
    assert out.returncode == 130 and out.stdout == "" and out.stderr == INTERRUPTED_LINE, out.stdout + out.stderr


def test_ctrl_c_after_a_step_ran_does_not_say_none_ran(tmp_path):
    out = run([sys.executable, "-c", CTRL_C_WHILE_THE_RUN_IS_RECORDED], tmp_path, "steps=[download]",
              "hydra.run.dir=run")
    assert out.returncode == 130 and "✓ download" in out.stdout, out.stdout + out.stderr
    assert out.stderr == INTERRUPTED_LINE and "INTERRUPTED" not in out.stdout, out.stdout + out.stderr


def test_a_run_dir_on_a_full_disk_is_one_line_before_hydra_writes_there(tmp_path, run_on_a_full_disk):
    """Hydra writes .hydra/ before mambapipe runs: a full disk there was Hydra's traceback and an empty config.yaml."""
    out = run_on_a_full_disk(["plan_only=true", "hydra.run.dir=full/run"], tmp_path, app_env(tmp_path),
                             tmp_path / "full")
    assert out.returncode == 1 and out.stdout == "", out.stdout + out.stderr
    assert out.stderr == (f"FAILED no space left on device in the run directory {tmp_path / 'full' / 'run'}: free "
                          "space there, or set hydra.run.dir (hydra.sweep.dir for a sweep) to a directory on a disk "
                          "with room\n")
    assert not (tmp_path / "full").exists()  # the directories the check made are gone: nothing half-written


def test_a_full_disk_under_the_runs_log_is_one_line_not_a_logging_error(tmp_path):
    """The log file handler's write fails (/dev/full: ENOSPC) as the run logs: one line, and the log goes on on
    standard error; logging's handlers printed '--- Logging error ---' and a traceback for each record."""
    out = run([sys.executable, "-c", A_RUN_THAT_LOGS], tmp_path, "plan_only=true", "hydra.run.dir=run",
              "hydra.job_logging.handlers.file.filename=/dev/full")
    assert out.returncode == 0 and "not cached" in out.stdout, out.stdout + out.stderr
    assert "Logging error" not in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert "loading the steps" in out.stderr and out.stderr.count("\nWARNING no space left on device writing the "
                                                                   "log /dev/full: ") == 1, out.stderr


@pytest.mark.parametrize("run_dir, why", [
    ("/proc/nope", "cannot be created (No such file or directory)"),  # refused even to root
    ("/proc", "cannot be written to (No such file or directory)"),
    ("{tmp}/a-file/run", "cannot be created: {tmp}/a-file is not a directory"),  # Hydra's NotADirectoryError
    ("{tmp}/a-file", "cannot be created: {tmp}/a-file is not a directory"),  # Hydra's FileExistsError
    pytest.param("{tmp}/made/" + "x" * 300, "cannot be created (File name too long)", id="made/x*300"),  # made/ made
])
def test_a_run_dir_that_cannot_be_made_or_written_is_one_line_naming_it(tmp_path, run_dir, why):
    """Not a full disk, yet no place for Hydra's .hydra/ either: that was Hydra's traceback of its mkdir or write."""
    (tmp_path / "a-file").write_text("")
    run_dir, why = run_dir.format(tmp=tmp_path), why.format(tmp=tmp_path)
    out = run(COMMANDS["python -m"], tmp_path, "plan_only=true", f"hydra.run.dir={run_dir}")
    assert out.returncode == 1 and out.stdout == "", out.stdout + out.stderr
    assert out.stderr == f"FAILED the run directory {run_dir} {why}; set hydra.run.dir to a directory you can " \
                         "write to\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing half-made left behind, nor a cache


@pytest.mark.parametrize("error, why", [(errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied")])
@pytest.mark.parametrize("run_dir, what", [("ro", "written to"), ("ro/a/run", "created")])
def test_a_run_dir_on_a_read_only_or_forbidden_disk_is_one_line_naming_it(tmp_path, run_where_writes_are_refused,
                                                                         error, why, run_dir, what):
    """Nothing can be made or written below ro/ (a read-only file system's mount point; a directory not the user's)."""
    (tmp_path / "ro").mkdir()
    out = run_where_writes_are_refused(["plan_only=true", f"hydra.run.dir={run_dir}"], tmp_path, app_env(tmp_path),
                                       tmp_path / "ro", error)
    assert out.returncode == 1 and out.stdout == "", out.stdout + out.stderr
    assert out.stderr == (f"FAILED the run directory {tmp_path / run_dir} cannot be {what} ({why}); set hydra.run.dir "
                          "to a directory you can write to\n")
