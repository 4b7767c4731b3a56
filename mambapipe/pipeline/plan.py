"""The plan: for every step its params, key, and whether it runs, is cached, or is skipped, and why.

Keys depend only on the config (and each step's `environment`), never on artifacts existing, so the
whole plan is known before anything runs.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from mambapipe.pipeline.keys import step_key
from mambapipe.pipeline.lineage import lineage
from mambapipe.pipeline.resolve import Resolved, flatten, select
from mambapipe.pipeline.step import Step, StepError, crash_summary
from mambapipe.pipeline.store import MANIFEST, ArtifactStore

log = logging.getLogger(__name__)
RUN, CACHED, SKIP, MISSING = "run", "cached", "skip", "missing"
_MAX_REASONS = 4  # what a reason lists, then (+N more)
_MAX_DIFFERENCES = 4  # an artifact that differs in more independent things is none to measure against
# What names the model an artifact was made from (with the architecture, model.arch.*): another model's artifacts are
# none to measure against, however few of their params differ (a synthetic model's hidden_size)
_MODEL_KEYS = ("model.source", "model.repo_id", "model.path")


@dataclass
class PlannedStep:
    step: Step
    params: dict[str, Any]
    inputs: dict[str, str]  # upstream step name -> its key
    environment: dict[str, Any]
    key: str
    action: str  # run | cached | skip | missing
    reason: str = ""
    notes: list[str] = field(default_factory=list)  # the step's describe() lines
    gate: dict[str, Any] = field(default_factory=dict)  # the values of the step's gate_uses, in no key

    @property
    def name(self) -> str:
        return self.step.name


@dataclass
class Plan:
    resolved: Resolved
    store: ArtifactStore
    steps: list[PlannedStep]
    problems: list[str]  # one line each; any problem stops the run before work starts

    def get(self, name: str) -> PlannedStep:
        return next(p for p in self.steps if p.name == name)

    def artifact(self, name: str) -> Path:
        return self.store.path(name, self.get(name).key)

    def refused_steps(self) -> set[str]:
        """The steps a problem names as its own (`<step>: ...`): those it stops, as a run records them."""
        names = {planned.name for planned in self.steps}
        return {name for name, _, _ in (problem.partition(": ") for problem in self.problems) if name in names}


def upstream_params(planned_steps: Sequence[PlannedStep], planned: PlannedStep) -> dict[str, Any]:
    """The params of the steps `planned` reads, and of those they read, that its own lack (the nearest's, where two
    have one key): what its manifest records as `upstream` (mambapipe.pipeline.lineage)."""
    by_name = {other.name: other for other in planned_steps}
    found: dict[str, Any] = {}
    queue = list(planned.step.needs)
    while queue:
        upstream = by_name[queue.pop(0)]
        for key, value in upstream.params.items():
            found.setdefault(key, value)
        queue += upstream.step.needs
    return {key: value for key, value in found.items() if key not in planned.params}


def _fmt(value: Any) -> str:
    text = "∅" if value is None else str(value)
    return text if len(text) <= 24 else text[:21] + "..."


def _change(key: str, old: Any, new: Any) -> str:
    """`build.max_batch_size 8→16`; `eval.scenarios changed` where the shortened values would read alike."""
    before, after = _fmt(old), _fmt(new)
    return f"{key} changed" if before == after else f"{key} {before}→{after}"


def explain_miss(store: ArtifactStore, planned: PlannedStep, planned_steps: Sequence[PlannedStep]) -> str:
    """Why a step must run: what differs from the closest cached artifact of the step and of the same model, said to
    be that artifact's difference, as the user may have changed none of it (the artifact may be another run's, and
    this run's may have been removed)."""
    if _damaged(store, planned):
        return "not cached: its manifest.json is damaged"
    closest = _closest(planned, _of_the_same_model(store, planned, planned_steps))
    if closest is None or not closest.lines:
        return "not cached"
    lines = _differences(planned, closest.previous, detailed=True).lines  # the details for the closest alone
    extra = len(lines) - _MAX_REASONS
    return "closest cached: " + "; ".join(lines[:_MAX_REASONS]) + (f" (+{extra} more)" if extra > 0 else "")


def _of_the_same_model(store: ArtifactStore, planned: PlannedStep,
                       planned_steps: Sequence[PlannedStep]) -> list[dict[str, Any]]:
    """The manifests of the step's cached artifacts made from this plan's model, as they and the artifacts they were
    made from say (an artifact whose upstream is no longer known is left out)."""
    model = _model_of(planned.params | upstream_params(planned_steps, planned))
    lookup = functools.cache(lambda ref: store.manifest(*ref))
    return [manifest for _, manifest in store.artifacts(planned.name) if _model_of(lineage(manifest, lookup)) == model]


def _model_of(params: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in flatten(params).items()
            if key in _MODEL_KEYS or key.startswith("model.arch.")}


def _damaged(store: ArtifactStore, planned: PlannedStep) -> bool:
    """Whether the step's artifact has a manifest the store cannot read; called only for one it found incomplete."""
    return (store.path(planned.name, planned.key) / MANIFEST).exists()


@dataclass
class _Differences:
    """What differs from one artifact of the step (`previous`, its manifest): `lines` as the reason names them."""
    previous: dict[str, Any]
    lines: list[str]
    upstream: int  # its inputs that are not this run's
    one_sided: int  # of `lines`, keys only one of the two reads: they follow from another line (eval.task)

    @property
    def independent(self) -> int:
        return len(self.lines) - self.one_sided


def _closest(planned: PlannedStep, manifests: list[dict[str, Any]]) -> Optional[_Differences]:
    """The differences from the closest artifact: one made from the same upstream artifacts where there is one, so
    that what this run changed in the step itself is not hidden behind an upstream change another run made; then
    the fewest differences; ties: the newest. An artifact that differs in more than _MAX_DIFFERENCES independent things
    (another recipe) is none to measure against: a list of them would say nothing about this run."""
    newest_first = sorted(manifests, key=lambda manifest: manifest["created"], reverse=True)
    comparable = [differences for differences in (_differences(planned, manifest) for manifest in newest_first)
                  if differences.independent <= _MAX_DIFFERENCES]
    return min(comparable, key=lambda differences: (differences.upstream, len(differences.lines)), default=None)


def _differences(planned: PlannedStep, previous: dict[str, Any], detailed: bool = False) -> _Differences:
    """`detailed`: with what changed in a changed environment fact, where the step can say (it may read files)."""
    step = planned.step
    lines = []
    if previous.get("version") != step.version:
        lines.append(f"{step.name} version {previous.get('version')}→{step.version}")
    old, new = flatten(previous.get("params", {})), flatten(planned.params)
    # Keys the step no longer reads (eval.dataset once eval.task=benchmark) are no change of this run; those it
    # reads now and did not then follow from a changed value (eval.task benchmark→summarize), which leads, and are
    # one line: a list of "∅→value" would bury it.
    changed = sorted(k for k in new if k in old and old[k] != new[k])
    lines += [_change(k, old[k], new[k]) for k in changed]
    read_now = sorted(k for k in new if k not in old)
    if read_now:
        lines.append(f"reads {len(read_now)} more ({', '.join(read_now[:2])}{', ...' if len(read_now) > 2 else ''})")
    upstream = [f"upstream {name} changed" for name, key in planned.inputs.items()
                if previous.get("inputs", {}).get(name) != key]
    lines += upstream
    # As with keys: an environment fact the step no longer has (a summarize's dataset_sha256 once eval.task=benchmark)
    # is no change of this run.
    old_env, new_env = flatten(previous.get("environment", {})), flatten(planned.environment)
    changed_env = [k for k in sorted(new_env) if old_env.get(k) != new_env[k]]
    lines += [_environment_change(planned, previous, k) if detailed else f"{k} changed" for k in changed_env]
    one_sided = bool(read_now) + sum((k in old_env) != (k in new_env) for k in changed_env)
    return _Differences(previous, lines, len(upstream), one_sided)


def _environment_change(planned: PlannedStep, previous: dict[str, Any], name: str) -> str:
    """`<name> changed`, and what in it where the step can say (download: the files of a local directory)."""
    step = planned.step
    detail = step.environment_change(name, planned.params, previous) if hasattr(step, "environment_change") else ""
    return f"{name} changed ({detail})" if detail else f"{name} changed"


def _problems(step: Step, exc: Exception) -> list[str]:
    if isinstance(exc, StepError):
        return [f"{step.name}: {problem}" for problem in exc.problems]
    log.error("%s failed while planning", step.name, exc_info=True)
    return [f"{step.name}: {crash_summary(exc)} (while planning)"]


def step_params(step: Step, config: dict[str, Any]) -> dict[str, Any]:
    """The config slice `step` reads: its `uses`, plus its `extra_uses` for those values, asked again while it
    names keys not yet selected (a key it adds may decide others: eval.task=summarize brings
    eval.dataset, whose value decides the hub's keys), normalized by the step where it has
    several spellings of one value, so they share a key."""
    params = select(config, step.uses)
    while hasattr(step, "extra_uses"):
        added = [key for key in step.extra_uses(params) if key not in params]
        if not added:
            break
        params.update(select(config, added))
    return step.normalize(params) if hasattr(step, "normalize") else params


def _environment(step: Step, params: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    if not hasattr(step, "environment"):
        return {}
    try:
        return step.environment(params)
    except Exception as exc:  # the plan still shows every step; the run stops before any work
        problems.extend(_problems(step, exc))
        return {"unresolved": str(exc)}


def _action(planned: PlannedStep, complete: bool, selected: set[str], forced: set[str],
            read_by_a_maker: bool, read_by_selected: bool) -> tuple[str, str]:
    name = planned.name
    if name in forced:
        return RUN, "forced"
    if complete:
        if name in selected:
            return CACHED, ""
        return (CACHED, "needed upstream") if read_by_a_maker else (SKIP, "not in steps")
    if name in selected:
        if read_by_selected and not read_by_a_maker:  # e.g. a convert removed to free disk, its engine cached
            return SKIP, "not needed: the steps that read it are cached"
        return RUN, ""  # why: explain_miss, once the step is known to run
    if read_by_a_maker:
        return MISSING, "needed upstream but not cached"  # the fix for all of them: _missing_problem
    return SKIP, "not in steps"


def _decide_actions(planned_steps: Sequence[PlannedStep], store: ArtifactStore, selected: set[str],
                    forced: set[str]) -> None:
    """Last step first, since a step's artifact is needed only where a step that reads it will run: a cached
    engine is evaluated again without its checkpoint, which may have been removed to free disk. A missing step
    counts as one that will run, since it must be added to steps: its own inputs are needed too, so that one plan
    names every step to add (evaluate on an empty cache: build, and the convert build reads), not a step a round."""
    makers: set[str] = set()  # the steps whose artifact is made: those that run, and those that must be added
    for planned in reversed(planned_steps):
        readers = [p.name for p in planned_steps if planned.name in p.step.needs]
        complete = store.is_complete(planned.name, planned.key)
        planned.action, planned.reason = _action(planned, complete, selected, forced,
                                                 read_by_a_maker=any(r in makers for r in readers),
                                                 read_by_selected=any(r in selected for r in readers))
        if planned.action in (RUN, MISSING):
            makers.add(planned.name)
        if planned.action == RUN and not planned.reason:
            planned.reason = explain_miss(store, planned, planned_steps)
        if planned.action == MISSING and _damaged(store, planned):
            planned.reason += ": its manifest.json is damaged"


def _missing_problem(planned_steps: Sequence[PlannedStep], steps: Sequence[str], unknown: set[str]) -> Optional[str]:
    """One problem for all the missing steps, with the steps= value that adds them to the user's, in pipeline
    order, so that a single fix makes the plan whole. A step whose key is `unknown` (its lookup failed, or an
    upstream one's) is left out: its artifact may well be cached, and the lookup's own problem says what to fix."""
    missing = [p.name for p in planned_steps if p.action == MISSING and p.name not in unknown]
    if not missing:
        return None
    use = [p.name for p in planned_steps if p.name in missing or p.name in steps]
    return (f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} needed upstream but not cached: "
            f"use steps=[{','.join(use)}]")


def build_plan(resolved: Resolved, steps: Sequence[Step], store: ArtifactStore) -> Plan:
    config = resolved.config
    forced = set(config["force"])
    selected = set(config["steps"]) | forced
    planned_steps: list[PlannedStep] = []
    lookup_problems: dict[str, list[str]] = {}
    keys: dict[str, str] = {}
    unknown_keys: set[str] = set()  # steps whose key rests on a failed lookup, theirs or upstream
    for step in steps:
        params, lookup_problems[step.name] = step_params(step, config), []
        environment = _environment(step, params, lookup_problems[step.name])
        if lookup_problems[step.name] or unknown_keys.intersection(step.needs):
            unknown_keys.add(step.name)
        inputs = {name: keys[name] for name in step.needs}
        keyed = step.key_params(params, environment) if hasattr(step, "key_params") else params
        keys[step.name] = step_key(step.name, step.version, keyed, inputs, environment)
        planned_steps.append(PlannedStep(step, params, inputs, environment, keys[step.name], SKIP,
                                         gate=select(config, getattr(step, "gate_uses", ()))))
    _decide_actions(planned_steps, store, selected, forced)
    for planned in planned_steps:
        if planned.name in unknown_keys and planned.action in (RUN, MISSING):  # no artifact to compare it with
            planned.reason = "key unknown: a lookup failed (see problems)"
    problems: list[str] = list(resolved.problems)
    for planned in planned_steps:
        if planned.action != SKIP:  # nothing uses a skipped step's key: e.g. no dataset lookup for steps=[build]
            problems.extend(lookup_problems[planned.name])
    missing = _missing_problem(planned_steps, config["steps"], unknown_keys)
    if missing:
        problems.append(missing)
    plan = Plan(resolved, store, planned_steps, problems)
    valid: set[str] = set()  # steps with no problem of their own: a downstream check_upstream may read their params
    for planned in plan.steps:
        if _check_and_describe(plan, planned, valid) and planned.name not in unknown_keys:
            valid.add(planned.name)
    if not plan.problems and not config["plan_only"]:
        _check_imports(plan)
    plan.problems = _distinct(plan.problems, [s.name for s in steps])
    return plan


def _distinct(problems: list[str], step_names: list[str]) -> list[str]:
    """Each problem once, as the first to find it names it: a step's environment() and check() may agree, two
    steps that read one key may find the same fault in it (a bad model.arch: download and convert), and a step
    may restate a problem of the run itself (device=cuda with no GPU), which comes first, named without a step."""
    said: set[str] = set()
    kept = []
    for problem in problems:
        name, sep, message = problem.partition(": ")
        what = message if sep and name in step_names else problem
        if what not in said:
            said.add(what)
            kept.append(problem)
    return kept


def _check_and_describe(plan: Plan, planned: PlannedStep, valid: set[str]) -> bool:
    """Check a step that will run, and take its description (e.g. the trtllm-build command line). A step that
    fails its check is still described where it can be, so a plan made without the step's software (no
    TensorRT-LLM) still shows what it would run; a description that fails after a failed check adds nothing.
    Returns whether the step's params are valid: it passed its checks, or its artifact is cached (made by a run
    that passed them)."""
    if planned.action != RUN:
        return planned.action == CACHED
    step = planned.step
    try:
        step.check(planned.params)
        _check_upstream(plan, planned, valid)
        checked = True
    except Exception as exc:
        plan.problems.extend(_problems(step, exc))
        checked = False
    if not hasattr(step, "describe"):
        return checked
    try:
        inputs = {name: plan.artifact(name) for name in step.needs}
        planned.notes = list(step.describe(planned.params, inputs, plan.artifact(step.name)))
    except Exception as exc:
        if checked:
            plan.problems.extend(_problems(step, exc))
    return checked


def _check_imports(plan: Plan) -> None:
    """The check_imports of the steps that run, which import what those runs will (seconds: datasets, rouge-score),
    for a plan that goes on to run them: plan_only=true runs nothing, and a plan with a problem stops before any
    step, so neither waits for those imports."""
    for planned in plan.steps:
        if planned.action == RUN and hasattr(planned.step, "check_imports"):
            try:
                planned.step.check_imports(planned.params)
            except Exception as exc:
                plan.problems.extend(_problems(planned.step, exc))


def _check_upstream(plan: Plan, planned: PlannedStep, valid: set[str]) -> None:
    """The step's params against those of the steps it reads, once all of those are `valid`: an upstream step
    with a problem (a local model.path that is no checkpoint) names it itself, and a check reading its params
    would say it a second time, in other words."""
    step = planned.step
    if hasattr(step, "check_upstream") and valid.issuperset(step.needs):
        step.check_upstream(planned.params, {name: plan.get(name).params for name in step.needs})
