"""The build step: TensorRT-LLM checkpoint (convert artifact) -> engine directory, on either backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from mambapipe.backends import get_backend
from mambapipe.backends.base import BuildSettings
from mambapipe.checkpoint.config_json import config_tp_size, read_config_json
from mambapipe.engine.checks import dtype_problem, limits_problem, resolve_ssm_state_dtype, ssm_state_dtype_problem
from mambapipe.pipeline.step import StepContext, StepError

TRTLLM_KEYS = ("build.paged_state", "build.mamba_conv1d_plugin", "build.remove_input_padding", "build.gemm_plugin")
NATIVE_KEYS = ("build.ssm_state_dtype",)
NATIVE_DEFAULTS = {"build.ssm_state_dtype": "auto"}
# The build.* options each backend reads, and so the only ones in its key: a trtllm plugin flag must not
# rebuild a native engine. trtllm reads the native ones too, to refuse values it cannot honour.
BACKEND_OPTION_KEYS = {"native": NATIVE_KEYS, "trtllm": TRTLLM_KEYS + NATIVE_KEYS}
TRTLLM_ARCH_KEYS = ("model.arch.mamba_version",)  # for _trtllm_parallelism_problem


def settings_from(params: dict[str, Any]) -> BuildSettings:
    option_keys = BACKEND_OPTION_KEYS[params["backend"]]
    return BuildSettings(max_batch_size=int(params["build.max_batch_size"]),
                         max_input_len=int(params["build.max_input_len"]),
                         max_seq_len=int(params["build.max_seq_len"]), device=params["device"],
                         options={key.split(".", 1)[1]: params[key] for key in option_keys})


def _check_checkpoint_matches(params: dict[str, Any], checkpoint_dir: Path) -> None:
    cfg = read_config_json(checkpoint_dir, "a TensorRT-LLM checkpoint", "convert")
    tp = config_tp_size(cfg)
    if cfg.get("dtype") != params["dtype"] or tp != int(params["tp_size"]):
        raise StepError(f"checkpoint {checkpoint_dir} is dtype={cfg.get('dtype')} tp_size={tp} but the build asks "
                        f"for dtype={params['dtype']} tp_size={params['tp_size']}; rerun convert")


def _native_options_problem(params: dict[str, Any], device: str) -> Optional[str]:
    problem = ssm_state_dtype_problem(params["build.ssm_state_dtype"], device)
    if problem or params["backend"] == "native":
        return problem
    changed = [key for key in NATIVE_KEYS if params[key] != NATIVE_DEFAULTS[key]]
    if changed:  # refused rather than silently ignored: the key would claim a computation that never ran
        asked = ", ".join(f"{key}={params[key]}" for key in changed)
        defaults = ", ".join(f"{key}={NATIVE_DEFAULTS[key]}" for key in changed)
        return (f"backend={params['backend']} cannot honour {asked} (TensorRT-LLM picks its own "
                f"state dtype and kernels); set {defaults} or use backend=native")
    return None


def _trtllm_parallelism_problem(params: dict[str, Any]) -> Optional[str]:
    """TensorRT-LLM's Mamba1 layer asserts tp_size == 1 (tensorrt_llm/models/mamba/model.py), which trtllm-build
    would only hit after the checkpoint was converted; the native engine splits Mamba1 too."""
    if params["backend"] == "trtllm" and params["model.arch.mamba_version"] == "Mamba1" and int(params["tp_size"]) > 1:
        return (f"backend=trtllm cannot split a Mamba1 model (tp_size={params['tp_size']}): TensorRT-LLM runs "
                "Mamba1 on one GPU only; use tp_size=1, or backend=native")
    return None


class BuildStep:
    name = "build"
    version = 1
    uses = ("dtype", "tp_size", "backend", "device", "build.max_batch_size", "build.max_input_len",
            "build.max_seq_len")
    needs = ("convert",)

    def extra_uses(self, params: dict[str, Any]) -> tuple[str, ...]:
        """The build.* options of the resolved backend; for trtllm also what it cannot build (below)."""
        return BACKEND_OPTION_KEYS[params["backend"]] + (TRTLLM_ARCH_KEYS if params["backend"] == "trtllm" else ())

    def normalize(self, params: dict[str, Any]) -> dict[str, Any]:
        """An explicit build.ssm_state_dtype equal to what auto resolves to builds the same engine, so it keys as
        auto. Native only: on trtllm auto is TensorRT-LLM's own choice and check() refuses any other value."""
        auto_resolves_to = resolve_ssm_state_dtype("auto", params["dtype"], params["device"])
        if params["backend"] == "native" and params["build.ssm_state_dtype"] == auto_resolves_to:
            return {**params, "build.ssm_state_dtype": "auto"}
        return params

    def check(self, params: dict[str, Any]) -> None:
        """Every problem at once: the first may be the run's own (device=cuda with no GPU), which the plan does not
        repeat, and a plan without TensorRT-LLM must still say how to install it."""
        s = settings_from(params)
        problems = [_native_options_problem(params, s.device), _trtllm_parallelism_problem(params),
                    limits_problem(s.max_batch_size, s.max_input_len, s.max_seq_len),
                    dtype_problem(params["dtype"], s.device),
                    get_backend(params["backend"]).unavailable_reason(s.device),
                    f"tp_size must be >= 1, got {params['tp_size']}" if int(params["tp_size"]) < 1 else None]
        if any(problems):
            raise StepError(*filter(None, problems))

    def environment(self, params: dict[str, Any]) -> dict[str, Any]:
        backend = get_backend(params["backend"])
        return backend.environment() if hasattr(backend, "environment") else {}

    def describe(self, params: dict[str, Any], inputs: dict[str, Path], out_dir: Path) -> list[str]:
        backend = get_backend(params["backend"])
        if not hasattr(backend, "describe_build"):
            return []
        return backend.describe_build(Path(inputs["convert"]), Path(out_dir), settings_from(params))

    def run(self, params: dict[str, Any], inputs: dict[str, Path], out_dir: Path, ctx: StepContext) -> dict[str, Any]:
        self.check(params)
        _check_checkpoint_matches(params, Path(inputs["convert"]))
        facts = get_backend(params["backend"]).build(Path(inputs["convert"]), out_dir, settings_from(params),
                                                     ctx.show_progress)
        return {"backend": params["backend"], **facts}


STEP = BuildStep()
