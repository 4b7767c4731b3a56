"""Step `convert`: the downloaded checkpoint (any supported layout) -> TensorRT-LLM checkpoint shards."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from mambapipe.checkpoint import ConvertError, convert_checkpoint, detect_source, parse_dtype
from mambapipe.models import ModelSpec
from mambapipe.pipeline.step import StepContext, StepError

# Fields that mean nothing for one version: never let them cause a mismatch.
_MAMBA1_ONLY = {"time_step_rank"}
_MAMBA2_ONLY = {"head_dim", "n_groups", "chunk_size"}
# Bookkeeping only: the padded vocab_size it produced is compared, and HF configs often omit it.
_NOT_COMPARED = {"pad_vocab_size_multiple"}


class ConvertStep:
    name = "convert"
    version = 1
    uses = ("dtype", "tp_size", "model.arch")
    needs = ("download",)

    def check(self, params: dict[str, Any]) -> None:
        spec = _configured_spec(params)
        try:
            parse_dtype(params["dtype"])
        except ConvertError as e:
            raise StepError(str(e)) from None
        problems = spec.tp_problems(int(params["tp_size"]))
        if problems:
            raise StepError(f"tp_size={params['tp_size']} does not fit model.arch: {'; '.join(problems)}")

    def run(self, params: dict[str, Any], inputs: dict[str, Path], out_dir: Path,
            ctx: StepContext) -> dict[str, Any]:
        model_dir = Path(inputs["download"]) / "model"
        try:
            found = detect_source(model_dir).spec
            mismatches = spec_mismatches(_configured_spec(params), found)
            if mismatches:
                raise StepError(f"{model_dir}: checkpoint does not match model.arch ({'; '.join(mismatches)}); "
                                "fix the model config or point at the right checkpoint")
            facts = convert_checkpoint(model_dir, out_dir, params["dtype"], int(params["tp_size"]),
                                       progress=ctx.show_progress)
        except ConvertError as e:
            raise StepError(str(e)) from None
        revision = _download_revision(Path(inputs["download"]))
        return facts | ({"source_revision": revision} if revision else {})


def spec_mismatches(configured: ModelSpec, found: ModelSpec) -> list[str]:
    """`field: config X, checkpoint Y` for every architecture field that differs."""
    ignored = _NOT_COMPARED | (_MAMBA2_ONLY if found.mamba_version == "Mamba1" else _MAMBA1_ONLY)
    want, got = _normalised(configured), _normalised(found)
    return [f"{k}: config {want[k]}, checkpoint {got[k]}" for k in want if k not in ignored and want[k] != got[k]]


def _normalised(spec: ModelSpec) -> dict[str, Any]:
    return dataclasses.asdict(spec) | {"time_step_rank": spec.dt_rank}


def _configured_spec(params: dict[str, Any]) -> ModelSpec:
    try:
        return ModelSpec(**params["model.arch"])
    except (TypeError, ValueError) as e:
        raise StepError(f"model.arch is not a valid architecture: {e}") from None


def _download_revision(download_dir: Path) -> str | None:
    """The hub commit the download step pinned, when its manifest records one."""
    manifest = download_dir / "manifest.json"
    if not manifest.is_file():
        return None
    data = json.loads(manifest.read_text())
    for section in (data, data.get("facts") or {}, data.get("environment") or {}):
        if isinstance(section, dict) and section.get("commit"):
            return str(section["commit"])
    return None


STEP = ConvertStep()
