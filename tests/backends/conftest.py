"""Fixtures for the TensorRT-LLM backend tests: engine dirs from recorded configs and a stand-in
`tensorrt_llm` package that answers like the documented runtime (TensorRT-LLM cannot be installed here)."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

DATA = Path(__file__).parent / "data"


@pytest.fixture
def engine_dir(tmp_path):
    """make(name) -> an engine dir holding data/<name>_engine_config.json and empty rank files."""
    def make(name: str) -> Path:
        out = tmp_path / name
        out.mkdir()
        shutil.copy(DATA / f"{name}_engine_config.json", out / "config.json")
        tp_size = json.loads((out / "config.json").read_text())["pretrained_config"]["mapping"]["tp_size"]
        for rank in range(tp_size):
            (out / f"rank{rank}.engine").write_bytes(b"")
        return out
    return make


class FakeTrtllm:
    """Records how the adapter calls `tensorrt_llm.runtime` and answers in TensorRT-LLM's shapes:
    output_ids (B, beams, max_seq_len) = prompt + new tokens, padded with end_id; sequence_lengths (B, beams).

    `script[b]` is what sequence b would generate; generation stops at end_id, which TensorRT-LLM may or
    may not count in the sequence length (`count_eos`)."""

    def __init__(self) -> None:
        self.rank, self.world_size, self.python_bindings = 0, 1, True
        self.script: list[list[int]] = []
        self.count_eos = True
        self.from_dir_calls: list[tuple[str, dict[str, Any]]] = []
        self.generate_calls: list[dict[str, Any]] = []
        self.broadcast_calls: list[tuple[Any, int]] = []
        self.rank0_result: Any = None  # what rank 0 would broadcast, for runs as another rank
        self.clock_s = 0.0  # a fake perf_counter that generate() advances by cost_s(max_new_tokens)
        self.cost_s = lambda max_new_tokens: 0.0

    def _runner_class(self, name: str) -> type:
        fake = self

        class Runner:
            @classmethod
            def from_dir(cls, **kwargs):
                fake.from_dir_calls.append((name, kwargs))
                runner = cls()
                runner.max_seq_len = 1024
                return runner

            def generate(self, batch_input_ids, **kwargs):
                fake.generate_calls.append({"batch_input_ids": batch_input_ids, "runner": name, **kwargs})
                fake.clock_s += fake.cost_s(kwargs["max_new_tokens"])
                if name == "ModelRunnerCpp" and fake.rank != 0:
                    return []  # ModelRunnerCpp: only the leader rank gets outputs
                return fake.answer(batch_input_ids, kwargs["max_new_tokens"], kwargs["end_id"], self.max_seq_len)

        Runner.__name__ = name
        return Runner

    def answer(self, batch_input_ids, max_new_tokens: int, end_id: int, max_seq_len: int) -> dict[str, torch.Tensor]:
        output_ids = torch.full((len(batch_input_ids), 1, max_seq_len), end_id, dtype=torch.int32)
        lengths = []
        for b, prompt in enumerate(batch_input_ids):
            new = self.script[b][:max_new_tokens]
            if end_id in new:
                stop = new.index(end_id)
                new = new[:stop + 1] if self.count_eos else new[:stop]
            row = prompt.tolist() + new
            output_ids[b, 0, :len(row)] = torch.tensor(row, dtype=torch.int32)
            lengths.append([len(row)])
        return {"output_ids": output_ids, "sequence_lengths": torch.tensor(lengths, dtype=torch.int32)}

    def broadcast(self, obj: Any, root: int = 0) -> Any:
        self.broadcast_calls.append((obj, root))
        return obj if self.rank == root else self.rank0_result

    def modules(self) -> dict[str, types.ModuleType]:
        top = types.ModuleType("tensorrt_llm")
        top.mpi_rank = lambda: self.rank
        top.mpi_world_size = lambda: self.world_size
        runtime = types.ModuleType("tensorrt_llm.runtime")
        runtime.PYTHON_BINDINGS = self.python_bindings
        runtime.ModelRunner = self._runner_class("ModelRunner")
        runtime.ModelRunnerCpp = self._runner_class("ModelRunnerCpp")
        utils = types.ModuleType("tensorrt_llm._utils")
        utils.mpi_broadcast = self.broadcast
        top.runtime, top._utils = runtime, utils
        return {"tensorrt_llm": top, "tensorrt_llm.runtime": runtime, "tensorrt_llm._utils": utils}


@pytest.fixture
def fake_trtllm(monkeypatch):
    """install() puts the stand-in package into sys.modules (call after setting rank, bindings, ...)."""
    fake = FakeTrtllm()

    def install() -> FakeTrtllm:
        for name, module in fake.modules().items():
            monkeypatch.setitem(sys.modules, name, module)
        return fake
    fake.install = install
    return fake
