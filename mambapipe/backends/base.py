"""The interface both engine backends (native, trtllm) implement.

The build step calls `Backend.build`; the evaluate step calls `Backend.load` and then only talks to
the returned `Generator`, so summarize and benchmark run unchanged on either backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence

from mambapipe.models import ModelSpec


@dataclass(frozen=True)
class BuildSettings:
    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    device: str  # "cpu" | "cuda" (resolved)
    options: dict[str, Any] = field(default_factory=dict)  # backend-specific (trtllm plugin flags)


@dataclass(frozen=True)
class SamplingConfig:
    greedy: bool = True
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    seed: int = 0


@dataclass
class GenerationOutput:
    output_ids: list[list[int]]  # new tokens per sequence, cut after the first end-of-sequence
    prefill_ms: float  # wall time of the prompt pass (time to first token)
    decode_ms_per_step: float  # mean wall time of one decode step over the batch
    peak_memory_mb: float = 0.0


class Generator(Protocol):
    spec: ModelSpec
    dtype: str
    device: str
    max_batch_size: int
    max_input_len: int
    max_seq_len: int

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                 sampling: SamplingConfig = SamplingConfig(), eos_id: Optional[int] = None,
                 stop_at_eos: bool = True) -> GenerationOutput: ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    def unavailable_reason(self, device: str) -> Optional[str]:
        """None when this backend can build and run here; else a one-line reason with the fix."""

    def build(self, checkpoint_dir: Path, out_dir: Path, settings: BuildSettings) -> dict[str, Any]:
        """Turn a TensorRT-LLM checkpoint into an engine directory; return manifest facts."""

    def load(self, engine_dir: Path, device: str) -> Generator: ...
