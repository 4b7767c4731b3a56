"""Step `convert`: the downloaded checkpoint (any supported layout) -> TensorRT-LLM checkpoint shards."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mambapipe import interrupts
from mambapipe.checkpoint.detect import MAMBA_SSM, SourceInfo, detect_source, load_json_object
from mambapipe.checkpoint.errors import ConvertError, DamagedFileError
from mambapipe.models import ModelSpec, unknown_dtype
from mambapipe.pipeline.step import StepContext, StepError
from mambapipe.pipeline.store import MANIFEST, read_manifest

TP_SIZES = (1, 2, 4, 8)  # the splits the README offers, of which the error names those that fit
# Fields that mean nothing for one version: never let them cause a mismatch.
_MAMBA1_ONLY = {"time_step_rank"}
_MAMBA2_ONLY = {"head_dim", "n_groups", "chunk_size"}
# Bookkeeping only: the padded vocab_size it produced is compared, and HF configs often omit it.
_NOT_COMPARED = {"pad_vocab_size_multiple"}
# How to get a good copy of a damaged source file, by the source the download step took it from.
_DAMAGED_FILE_FIX = {
    "local": "fix or replace it in model.path",
    "hub": "remove the damaged copy from the Hugging Face cache (hf cache rm model/{repo_id}), then run with "
           "force=[download]",
    "synthetic": "the cached download is damaged: run with force=[download]",
}


class ConvertStep:
    name = "convert"
    version = 2  # 2: a vocab off its pad multiple is written with multiple 1 (models.to_trtllm_config)
    uses = ("dtype", "tp_size", "model.arch")
    needs = ("download",)

    def check(self, params: dict[str, Any]) -> None:
        spec = arch_spec(params["model.arch"])
        dtype_problem = unknown_dtype(params["dtype"])
        if dtype_problem:
            raise StepError(dtype_problem)
        tp_size = int(params["tp_size"])
        if tp_size < 1:  # no fault of model.arch's; as the build step says it, so that the plan says it once
            raise StepError(f"tp_size must be >= 1, got {tp_size}")
        misfits = spec.tp_misfits(tp_size)
        if misfits:  # the fix first and the sizes after, short: a sweep's table shows this line in a narrow column
            fits = [str(tp) for tp in TP_SIZES if not spec.tp_misfits(tp)]
            raise StepError(f"tp_size={tp_size} does not fit model.arch: use tp_size={_one_of(fits)}; {tp_size} "
                            f"does not divide {_one_of(misfits)}")

    def check_upstream(self, params: dict[str, Any], upstream: dict[str, dict[str, Any]]) -> None:
        """model.arch against the checkpoint of a local model.path, read as run() will read its links, so that a
        mismatch is a plan problem rather than a failure once download ran. Its directory is read, not declared:
        this key hashes download's, which hashes model.path and its files. A hub checkpoint is compared in run()
        alone (its files are fetched then); a synthetic one is model.arch's own."""
        download = upstream["download"]
        if download["model.source"] != "local":
            return
        model_dir = Path(download["model.path"]).expanduser().resolve()  # as download records it: the run's name
        try:
            check_matches_arch(params["model.arch"], detect_source(model_dir), str(model_dir))
        except ConvertError as e:  # download's check read the same directory: the same message, shown once
            raise StepError(str(e)) from None

    def run(self, params: dict[str, Any], inputs: dict[str, Path], out_dir: Path,
            ctx: StepContext) -> dict[str, Any]:
        with interrupts.deferred():  # the converter brings torch: imported whole or not at all
            from mambapipe.checkpoint.convert import convert_checkpoint

        model_dir = Path(inputs["download"]) / "model"
        download = read_manifest(Path(inputs["download"]) / MANIFEST) or {}
        try:
            # Even for a local source, compared at plan time: its directory may have changed since.
            check_matches_arch(params["model.arch"], detect_source(model_dir), _source_dir(model_dir, download))
            facts = convert_checkpoint(model_dir, out_dir, params["dtype"], int(params["tp_size"]),
                                       progress=ctx.show_progress)
        except ConvertError as e:
            raise StepError(_source_error(e, model_dir, download)) from None
        revision = (download.get("environment") or {}).get("commit")  # the hub commit download pinned, if any
        return facts | ({"source_revision": revision} if revision else {})


def _one_of(items: list[str]) -> str:
    """'a', 'a or b', 'a, b or c'."""
    return " or ".join(filter(None, [", ".join(items[:-1]), items[-1]]))


def check_matches_arch(arch: dict[str, Any], found: SourceInfo, source_dir: str) -> None:
    """StepError naming `source_dir` (the user's directory, not the cache's links to it) when the checkpoint
    `found` there is not the architecture model.arch describes."""
    mismatches = [m + _version_evidence(found) if m.startswith("mamba_version:") else m
                  for m in spec_mismatches(arch_spec(arch), found.spec)]
    if mismatches:
        raise StepError(f"{source_dir}: checkpoint does not match model.arch ({'; '.join(mismatches)}); fix the "
                        "model config or point at the right checkpoint")


def spec_mismatches(configured: ModelSpec, found: ModelSpec) -> list[str]:
    """`field: config X, checkpoint Y` for every architecture field that differs."""
    ignored = _NOT_COMPARED | (_MAMBA2_ONLY if found.mamba_version == "Mamba1" else _MAMBA1_ONLY)
    want, got = _normalised(configured), _normalised(found)
    return [f"{k}: config {want[k]}, checkpoint {got[k]}" for k in want if k not in ignored and want[k] != got[k]]


def _version_evidence(found: SourceInfo) -> str:
    """Why a mamba_ssm config reads as the version it does: only its ssm_cfg.layer says, and mamba_ssm builds Mamba1
    without one, so a Mamba2 checkpoint whose config lost its ssm_cfg looks like a Mamba1."""
    if found.format != MAMBA_SSM:
        return ""
    layer = (load_json_object(found.config_file).get("ssm_cfg") or {}).get("layer")
    if layer:
        return f' (its ssm_cfg.layer is "{layer}")'
    return f' ({found.config_file.name} has no ssm_cfg with layer "Mamba2", so mamba_ssm reads it as Mamba1)'


def _normalised(spec: ModelSpec) -> dict[str, Any]:
    return dataclasses.asdict(spec) | {"time_step_rank": spec.dt_rank}


def arch_spec(arch: dict[str, Any]) -> ModelSpec:
    """The ModelSpec model.arch describes, or the one-line StepError for it. This step reads model.arch for every
    source; download reads it too (synthetic only) and checks it here, so both name a bad value alike and the plan
    shows it once."""
    try:
        return ModelSpec(**arch)
    except (TypeError, ValueError) as e:
        raise StepError(f"model.arch is not a valid architecture: {e}") from None


def _source_dir(model_dir: Path, manifest: dict[str, Any]) -> str:
    """The directory the download artifact's links point into (model.path, or the hub snapshot); the
    artifact's own directory for a synthetic checkpoint, whose files live there."""
    return (manifest.get("facts") or {}).get("from") or str(model_dir)


def _source_error(error: ConvertError, model_dir: Path, manifest: dict[str, Any]) -> str:
    """The error naming the user's file, not the cache's link to it (both have the same path below their
    directory), and for a damaged file the fix that fits where it came from."""
    facts = manifest.get("facts") or {}
    message = str(error)
    if isinstance(error, DamagedFileError) and facts.get("source") in _DAMAGED_FILE_FIX:
        repo_id = (manifest.get("params") or {}).get("model.repo_id")
        fix = _DAMAGED_FILE_FIX[facts["source"]].format(repo_id=repo_id)
        message = f"{error.path}: {error.problem}; {fix}"
    return message.replace(str(model_dir), _source_dir(model_dir, manifest))


STEP = ConvertStep()
