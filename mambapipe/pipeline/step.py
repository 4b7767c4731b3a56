"""What a pipeline step is: a small named unit that declares the config keys it reads.

A step never sees the whole config. The runner hands it `params`, a flat dict holding exactly the
resolved values of the dotted keys in `uses` and in the optional `extra_uses` (below); a step whose output
depends on `backend` or `device` declares them there, and gets the runner's decision, never `auto`. It
also hands it `inputs`, the artifact directories of the steps in `needs`. Its cache key hashes those
params, the keys of those inputs, and `version`; bump `version` whenever the step's output would change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol

from mambapipe.redact import redact

INTERRUPTED_EXIT = 130  # what shells report for a command stopped by Ctrl-C (128 + SIGINT): a run's, a sweep job's


class StepError(Exception):
    """A user-facing failure: the message is one line naming the bad thing and what to do. A check that finds
    several problems raises them together, `StepError(first, second)`: the plan lists each on its own line (and
    leaves out one the run itself has already stated), and the message is them all. Each is redacted: many quote
    another exception's text, which may hold a credential (mambapipe.redact)."""

    def __init__(self, *problems: str) -> None:
        problems = tuple(map(redact, problems))
        super().__init__("; ".join(problems))
        self.problems = problems


class GateMissed(StepError):
    """A gate's verdict against a whole artifact (evaluate: rouge1 at or below the threshold), as check_gate raises
    it: run as it was, the run would give it again from the cache. `key` is the gate setting that changes it and
    `change` how (`lower`), for the hint offered instead of the same command; no value is made up for it."""

    def __init__(self, problem: str, key: str, change: str) -> None:
        super().__init__(problem)
        self.key, self.change = key, change


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, '' when it has none: for one-line summaries, as many messages go
    on with detail (a YAML error's offending text and caret, a wrapped error's report); redacted, as it may quote a
    URL with a mirror's password or a token (mambapipe.redact)."""
    lines = str(error).strip().splitlines()
    return redact(lines[0]) if lines else ""


def crash_summary(exc: BaseException) -> str:
    """One line for a crash (a bug, not bad input); the traceback goes to the log, not the summary."""
    return f"unexpected {type(exc).__name__}: {first_line(exc)}"


@dataclass
class StepContext:
    """What the runner hands a step besides its params and inputs."""
    show_progress: bool = True
    # What the step's environment() returned at plan time, as hashed into the key: a step reads it here rather
    # than looking again, which could see a hub branch that moved since the plan. Empty for steps without one.
    environment: dict[str, Any] = field(default_factory=dict)
    # The run directory, for a log the run keeps whether the step fails or not (its staging dir goes if it fails);
    # None where there is none.
    run_dir: Optional[Path] = None


class Step(Protocol):
    name: str  # one of mambapipe.config.STEP_NAMES
    version: int
    uses: tuple[str, ...]  # dotted config keys, e.g. ("dtype", "tp_size", "build.max_batch_size")
    needs: tuple[str, ...]  # upstream step names whose artifacts this step reads

    def check(self, params: dict[str, Any]) -> None:
        """Plan-time validation from params alone (no artifact exists yet); raise StepError."""

    def run(self, params: dict[str, Any], inputs: dict[str, Path], out_dir: Path,
            ctx: StepContext) -> dict[str, Any]:
        """Do the work, writing only under `out_dir` (a staging dir the runner renames into place).
        Returns step-specific facts the runner records in the artifact's manifest."""


# Optional methods a step may also define; the runner calls them when present.
#
#   extra_uses(params) -> tuple[str, ...]
#       Dotted keys the step reads only for some values of the keys `params` holds (e.g. build reads the
#       trtllm-only build.* flags only when backend=trtllm). They join `params`, and so the key, exactly like
#       `uses`; keys left out can change without invalidating the artifact. It is asked again with the keys it
#       added until it adds none, so an extra key may decide further ones (evaluate: eval.task=summarize adds
#       eval.dataset, and eval.dataset=cnn_dailymail adds the hub's eval.dataset_hub_id, ...).
#
#   normalize(params) -> dict
#       The params as keyed: a value that means the same as another is written as that one, so both settings
#       find one artifact (build: an explicit build.ssm_state_dtype equal to what `auto` resolves to is `auto`).
#       Called once `uses` and `extra_uses` are selected; `check` and `run` get the normalized params.
#
#   check_upstream(params, upstream) -> None
#       Plan-time validation of the step's params against those of the steps in `needs`: `upstream` maps each
#       to its params as planned (convert compares model.arch with the checkpoint a local model.path holds). A step
#       may read them without declaring them, since its key hashes theirs. Called after `check` passes, and only
#       when every upstream step is cached or passed its own checks: a fault of theirs is theirs to name, once.
#       Raise StepError.
#
#   check_imports(params) -> None
#       Plan-time check that the libraries the step's run imports can be imported, where that takes seconds (evaluate's
#       summarize: datasets and rouge-score), so that a broken install stops the run before its first step. Called
#       for a step that runs, once the whole plan has no problem, and not with plan_only=true: a plan that runs
#       nothing, or stops at a problem, does not wait for those imports. Raise StepError.
#
#   key_params(params, environment) -> dict
#       The params as the key hashes them, where `environment` pins what one of them names: download keys a hub
#       model.revision as if unset once the commit it resolved to is in `environment`, so `main`, a tag and the
#       commit itself find one artifact. By default the key hashes the params as they are; checks, descriptions,
#       the run and the manifest always get them as they are.
#
#   gate_uses: tuple[str, ...]  and  check_gate(gate, artifact) -> None
#       A pass/fail check of the output against settings that do not change it (evaluate: rouge1 above
#       eval.rouge1_threshold, with eval.check_accuracy). `gate_uses` are dotted keys the gate alone reads: in no
#       key, so a new threshold finds the evaluation made before. The runner calls check_gate with their values
#       (`gate`) and the artifact's directory on every run, whether the step ran or was cached, after the run dir
#       got the artifact's files; a StepError fails the run with its message, the artifact kept in the cache, its
#       status marked `gate missed`. A GateMissed (a verdict, not an unreadable artifact) also names the setting
#       that changes the verdict: the run's hint says to change it rather than run the same command again.
#
#   run_dir_files: tuple[str, ...]
#       Files the step writes into the run dir itself (evaluate: its ranks' log), beside the metrics.json and
#       predictions.jsonl the runner copies there. The runner removes them from a reused run dir
#       (hydra.run.dir=...) before the plan, so a run whose step is cached shows no earlier run's file.
#
#   environment(params) -> dict
#       Facts outside the config that change the output (e.g. tensorrt_llm/TensorRT versions, the GPU's
#       compute capability). Hashed into the key and recorded in the manifest.
#
#   environment_change(name, params, previous) -> str
#       What changed in the environment fact `name` since the artifact whose manifest is `previous` was made, where
#       the step can say ('' where not): download names the files of a local directory behind a changed fingerprint,
#       from the records its run put in the manifest's facts. The plan's why adds it to `<name> changed`.
#
#   describe(params, inputs, out_dir) -> list[str]
#       Extra plan lines, e.g. the exact `trtllm-build ...` command line (printed with plan_only=true).
#       `inputs` and `out_dir` are the final artifact paths (they may not exist yet).
