"""The interface both engine backends (native, trtllm) implement.

The build step calls `Backend.build`; the evaluate step calls `Backend.load` and then only talks to
the returned `Generator`, so summarize and benchmark run unchanged on either backend. Both generators check
requests against the engine's `Limits` and raise `LimitError` in the same words.
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
    # Wall time the call spent on a run made only to measure (trtllm's separate one-token run for the time to
    # first token): a caller timing the call for throughput leaves it out.
    probe_ms: float = 0.0


class LimitError(ValueError):
    """A request outside the limits the engine was built with (one-line message with the fix)."""


@dataclass(frozen=True)
class Limits:
    """The build limits every backend's generator enforces before any device work, so a request too large
    fails with the same one-line `LimitError` on either backend (the evaluate step prints it without a traceback)."""

    max_batch_size: int
    max_input_len: int
    max_seq_len: int

    def check(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, queue: bool = False) -> None:
        if max_new_tokens < 1:
            raise LimitError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.check_prompts(prompts, queue)
        for i, p in enumerate(prompts):
            if len(p) + max_new_tokens > self.max_seq_len:
                raise LimitError(f"prompt {i} ({len(p)} tokens) + max_new_tokens={max_new_tokens} exceeds "
                                 f"max_seq_len={self.max_seq_len}; ask for fewer tokens or rebuild larger")

    def check_prompts(self, prompts: Sequence[Sequence[int]], queue: bool = False) -> None:
        """What a prefill needs: some prompts, at most max_batch_size (unless they queue), none empty or too long."""
        if not prompts:  # nothing to generate, and the trtllm adapter's timing needs at least one sequence
            raise LimitError("no prompts given; give at least one")
        if not queue and len(prompts) > self.max_batch_size:
            raise LimitError(f"batch of {len(prompts)} prompts exceeds max_batch_size={self.max_batch_size}; "
                             f"send smaller batches or rebuild with a larger build.max_batch_size")
        for i, p in enumerate(prompts):
            if not p:
                raise LimitError(f"prompt {i} is empty; give at least one token")
            if len(p) > self.max_input_len:
                raise LimitError(f"prompt {i} has {len(p)} tokens > max_input_len={self.max_input_len}; "
                                 f"truncate it or rebuild with a larger build.max_input_len")


class Generator(Protocol):
    spec: ModelSpec
    dtype: str
    device: str
    limits: Limits  # the build limits `generate` enforces

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                 sampling: SamplingConfig = SamplingConfig(), eos_id: Optional[int] = None,
                 stop_at_eos: bool = True) -> GenerationOutput: ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    def unavailable_reason(self, device: str) -> Optional[str]:
        """None when this backend can build and run here; else a one-line reason with the fix."""

    def build(self, checkpoint_dir: Path, out_dir: Path, settings: BuildSettings,
              show_progress: bool = True) -> dict[str, Any]:
        """Turn a TensorRT-LLM checkpoint into an engine directory; return manifest facts. `show_progress` is the
        step context's, which the download and convert steps honour too."""

    def load(self, engine_dir: Path, device: str) -> Generator: ...
