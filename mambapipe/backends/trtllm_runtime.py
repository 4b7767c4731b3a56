"""A `Generator` over TensorRT-LLM's runtime, driven the way examples/summarize.py drives it.

`ModelRunnerCpp` (the C++ executor) is used when the engine supports in-flight batching (conv1d plugin,
packed input, paged state); otherwise the Python `ModelRunner`, exactly as summarize.py decides.
`tensorrt_llm` is imported only in `load_generator`, so this module imports on machines without it.

Output contract of `runner.generate(..., return_dict=True, output_sequence_lengths=True)`:
`output_ids` (B, beams, L) holding prompt + new tokens per sequence (padded with end_id), and
`sequence_lengths` (B, beams) counting prompt + new tokens; new tokens are `[input_len : seq_len]`.
With tensor parallelism only rank 0 of ModelRunnerCpp gets outputs; we broadcast them so every rank
returns the same `GenerationOutput`, as the native engine does.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from time import perf_counter
from typing import Any, Callable, Optional, Sequence

import torch

from mambapipe.backends.base import GenerationOutput, Limits, SamplingConfig
from mambapipe.backends.trtllm_engine import EngineInfo, read_engine_config
from mambapipe.pipeline.step import StepError

NO_END_ID = -1  # an id no token has: TensorRT-LLM then never stops early (benchmarks need fixed lengths)


def sampling_kwargs(sampling: SamplingConfig) -> dict[str, Any]:
    """TensorRT-LLM's sampling arguments. Greedy is summarize.py's default: top_k=1, top_p=0, temp 1."""
    if sampling.greedy:
        return {"temperature": 1.0, "top_k": 1, "top_p": 0.0, "random_seed": sampling.seed}
    return {"temperature": sampling.temperature, "top_k": sampling.top_k, "top_p": sampling.top_p,
            "random_seed": sampling.seed}


def new_tokens(outputs: dict[str, torch.Tensor], input_lengths: Sequence[int]) -> list[list[int]]:
    """Beam 0's generated tokens per sequence, sliced out of TensorRT-LLM's (B, beams, L) output_ids."""
    output_ids = outputs["output_ids"].cpu()  # (B, beams, L)
    seq_lengths = outputs["sequence_lengths"].cpu()  # (B, beams)
    return [output_ids[b, 0, start:int(seq_lengths[b, 0])].tolist() for b, start in enumerate(input_lengths)]


def finish_at_eos(tokens: list[int], eos_id: Optional[int], max_new_tokens: int) -> list[int]:
    """Cut after the first EOS (kept, as the native engine and HF keep it). A sequence that TensorRT-LLM
    ended early without returning the EOS itself (its sequence length may exclude it) gets it back."""
    if eos_id is None:
        return tokens
    if eos_id in tokens:
        return tokens[:tokens.index(eos_id) + 1]
    return tokens + [eos_id] if len(tokens) < max_new_tokens else tokens


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _device_memory_in_use_mb() -> float:
    """TensorRT allocates outside torch's caching allocator, so ask the driver, not torch."""
    if not torch.cuda.is_available():
        return 0.0
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**20


class TrtllmGenerator:
    def __init__(self, runner: Any, info: EngineInfo, rank: int, world_size: int, uses_cpp: bool,
                 broadcast: Optional[Callable[[Any, int], Any]] = None) -> None:
        self.runner, self.info, self.rank, self.world_size = runner, info, rank, world_size
        self.uses_cpp = uses_cpp
        self._broadcast = broadcast  # tensorrt_llm._utils.mpi_broadcast when ranks must share rank 0's output
        self.spec, self.dtype, self.device = info.spec, info.dtype, "cuda"
        self.limits = Limits(info.max_batch_size, info.max_input_len, info.max_seq_len)

    def _timed_generate(self, batch: list[torch.Tensor], max_new_tokens: int,
                        kwargs: dict[str, Any]) -> tuple[Any, float]:
        _synchronize()
        start = perf_counter()
        with torch.no_grad():
            outputs = self.runner.generate(batch, max_new_tokens=max_new_tokens, **kwargs)
        _synchronize()
        return outputs, (perf_counter() - start) * 1e3

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                 sampling: SamplingConfig = SamplingConfig(), eos_id: Optional[int] = None,
                 stop_at_eos: bool = True) -> GenerationOutput:
        self.limits.check(prompts, max_new_tokens)  # before any GPU work: what ModelRunnerCpp would refuse
        batch = [torch.tensor(list(p), dtype=torch.int32) for p in prompts]  # each (L_i,)
        stop_id = eos_id if stop_at_eos else None
        kwargs = {"end_id": NO_END_ID if stop_id is None else stop_id, "pad_id": eos_id if eos_id is not None else 0,
                  "num_beams": 1, "return_dict": True, "output_sequence_lengths": True, **sampling_kwargs(sampling)}
        # Time to first token: a separate one-token run (TensorRT-LLM reports no per-phase timing).
        prefill_ms = self._timed_generate(batch, 1, kwargs)[1] if max_new_tokens > 1 else None
        outputs, total_ms = self._timed_generate(batch, max_new_tokens, kwargs)
        result = None
        if self.rank == 0 or not self.uses_cpp:
            result = self._to_output(outputs, [len(p) for p in prompts], prefill_ms, total_ms, stop_id,
                                     max_new_tokens)
        if self._broadcast is not None:
            result = self._broadcast(result, 0)
        return result

    def _to_output(self, outputs: dict[str, torch.Tensor], input_lengths: list[int], prefill_ms: Optional[float],
                   total_ms: float, stop_id: Optional[int], max_new_tokens: int) -> GenerationOutput:
        tokens = [finish_at_eos(t, stop_id, max_new_tokens) for t in new_tokens(outputs, input_lengths)]
        steps = max(len(t) for t in tokens)  # the full run's decode steps end with its longest sequence
        if prefill_ms is None:  # a one-token run is all prefill
            return GenerationOutput(tokens, total_ms, 0.0, _device_memory_in_use_mb())
        decode_ms = max(total_ms - prefill_ms, 0.0) / (steps - 1) if steps > 1 else 0.0
        return GenerationOutput(tokens, prefill_ms, decode_ms, _device_memory_in_use_mb(), probe_ms=prefill_ms)

    def close(self) -> None:
        executor = getattr(self.runner, "executor", None)
        if executor is not None and hasattr(executor, "shutdown"):
            executor.shutdown()
        self.runner = None


def load_generator(engine_dir: Path, device: str) -> TrtllmGenerator:
    """Open a trtllm-build engine dir on this MPI rank (ranks come from mpirun); raises StepError."""
    if device != "cuda":
        raise StepError(f"backend=trtllm runs on a CUDA GPU, not device={device}; use backend=native")
    info = read_engine_config(Path(engine_dir))
    try:
        tensorrt_llm = importlib.import_module("tensorrt_llm")
        runtime = importlib.import_module("tensorrt_llm.runtime")
    except ImportError as err:
        raise StepError(f"cannot import tensorrt_llm ({err}); reinstall it (pip install -e '.[trtllm]' "
                        "--extra-index-url https://pypi.nvidia.com) or use backend=native") from None
    rank, world_size = tensorrt_llm.mpi_rank(), tensorrt_llm.mpi_world_size()
    if world_size != info.tp_size:
        raise StepError(f"engine in {engine_dir} is built for tp_size {info.tp_size} but {world_size} MPI rank(s) "
                        f"are running; launch with mpirun -n {info.tp_size}")
    uses_cpp = info.supports_inflight_batching and bool(getattr(runtime, "PYTHON_BINDINGS", False))
    runner_cls = runtime.ModelRunnerCpp if uses_cpp else runtime.ModelRunner
    runner = runner_cls.from_dir(engine_dir=str(engine_dir), rank=rank)
    broadcast = None
    if uses_cpp and world_size > 1:
        broadcast = importlib.import_module("tensorrt_llm._utils").mpi_broadcast
    return TrtllmGenerator(runner, info, rank, world_size, uses_cpp, broadcast)
