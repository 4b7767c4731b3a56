"""Reading a TensorRT-LLM engine directory's `config.json` (what trtllm-build writes).

The file is `{"version", "pretrained_config": <checkpoint config>, "build_config": {..., "plugin_config"}}`
(trtllm-mamba-format.md §3). Only what the runtime adapter needs is read; the architecture comes back
as a `ModelSpec` so NVIDIA's own quirks (e.g. codestral's rnn_conv_dim_size 18432) are ignored there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from mambapipe.checkpoint.config_json import config_tp_size, read_config_json
from mambapipe.models import ModelSpec
from mambapipe.pipeline.step import StepError

ARCHITECTURE = "MambaForCausalLM"


@dataclass(frozen=True)
class EngineInfo:
    spec: ModelSpec
    dtype: str
    tp_size: int
    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    max_num_tokens: int  # prompt tokens one engine step takes, with packed input
    max_beam_width: int
    remove_input_padding: bool
    paged_state: bool
    mamba_conv1d_plugin: Optional[str]  # None when disabled
    version: str

    @property
    def supports_inflight_batching(self) -> bool:
        """TensorRT-LLM's rule for recurrent models (cpp modelConfig.h `supportsInflightBatching`):
        conv1d plugin, packed input and paged state. summarize.py picks ModelRunnerCpp only then."""
        return bool(self.mamba_conv1d_plugin) and self.remove_input_padding and self.paged_state


def _plugin_value(value: Any) -> Optional[str]:
    return None if value in (None, "disable", False) else str(value)


def _load(engine_dir: Path) -> dict[str, Any]:
    cfg = read_config_json(engine_dir, "an engine directory", "build")
    missing = [k for k in ("pretrained_config", "build_config") if not isinstance(cfg.get(k), dict)]
    if missing:
        raise StepError(f"{engine_dir / 'config.json'} lacks {missing[0]!r}: not a TensorRT-LLM engine config; "
                        "rebuild with backend=trtllm")
    return cfg


def read_engine_config(engine_dir: Path) -> EngineInfo:
    """Validate a TensorRT-LLM Mamba engine dir and return its spec and build limits; raises StepError."""
    engine_dir = Path(engine_dir)
    cfg = _load(engine_dir)
    pretrained, build = cfg["pretrained_config"], cfg["build_config"]
    arch = pretrained.get("architecture")
    if arch != ARCHITECTURE:
        raise StepError(f"engine in {engine_dir} is a {arch!r}, not {ARCHITECTURE!r}; "
                        "point mambapipe at a Mamba engine")
    try:
        spec = ModelSpec.from_trtllm_config(pretrained)
        tp_size = config_tp_size(pretrained)
        plugins = build.get("plugin_config") or {}
        info = EngineInfo(
            spec=spec, dtype=str(pretrained["dtype"]), tp_size=tp_size,
            max_batch_size=int(build["max_batch_size"]), max_input_len=int(build["max_input_len"]),
            max_seq_len=int(build["max_seq_len"]), max_num_tokens=int(build["max_num_tokens"]),
            max_beam_width=int(build.get("max_beam_width", 1)),
            remove_input_padding=bool(plugins.get("remove_input_padding", True)),
            paged_state=bool(plugins.get("paged_state", True)),
            mamba_conv1d_plugin=_plugin_value(plugins.get("mamba_conv1d_plugin", "auto")),
            version=str(cfg.get("version", "unknown")))
    except (KeyError, TypeError, ValueError) as err:
        raise StepError(f"engine config in {engine_dir} is incomplete or malformed ({type(err).__name__}: {err}); "
                        "rebuild the engine") from None
    _check_rank_files(engine_dir, info.tp_size)
    return info


def _check_rank_files(engine_dir: Path, tp_size: int) -> None:
    missing = [f"rank{r}.engine" for r in range(tp_size) if not (engine_dir / f"rank{r}.engine").is_file()]
    if missing:
        raise StepError(f"{engine_dir} lacks {missing[0]} (tp_size {tp_size}): not a complete trtllm-build "
                        "output; rebuild with backend=trtllm")
