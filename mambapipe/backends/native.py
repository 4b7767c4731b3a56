"""The native backend: mambapipe's own PyTorch engine (mambapipe/engine), on CPU or CUDA."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from mambapipe import interrupts
from mambapipe.backends.base import BuildSettings, Generator
from mambapipe.engine.checks import ENGINE_FORMAT
from mambapipe.pipeline.step import StepError


class NativeBackend:
    name = "native"

    def unavailable_reason(self, device: str) -> Optional[str]:
        return None  # runs wherever torch does; whether torch sees the device is dtype_problem's question

    def environment(self) -> dict[str, Any]:
        return {"engine_format": ENGINE_FORMAT}

    def describe_build(self, checkpoint_dir: Path, output_dir: Path, settings: BuildSettings) -> list[str]:
        return [f"native build: {checkpoint_dir} -> {output_dir} (max_batch_size={settings.max_batch_size}, "
                f"max_input_len={settings.max_input_len}, max_seq_len={settings.max_seq_len}, "
                f"device={settings.device})"]

    def build(self, checkpoint_dir: Path, out_dir: Path, settings: BuildSettings,
              show_progress: bool = True) -> dict[str, Any]:
        with interrupts.deferred():  # the engine's build brings torch: imported whole or not at all
            from mambapipe.engine.build import build_engine

        try:
            return build_engine(Path(checkpoint_dir), Path(out_dir), settings, show_progress)
        except (ValueError, FileNotFoundError, KeyError) as err:
            raise StepError(f"native build failed: {err}") from err

    def load(self, engine_dir: Path, device: str) -> Generator:
        from mambapipe.engine.api import load_engine

        return load_engine(Path(engine_dir), device)


BACKEND = NativeBackend()
