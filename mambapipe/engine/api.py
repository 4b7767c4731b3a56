"""Small Python API of the native engine, usable without the pipeline.

    from mambapipe.engine.api import load_engine, generate_text
    gen = load_engine("~/.cache/mambapipe/build/<key>", device="cpu")
    out = gen.generate([[1, 2, 3]], max_new_tokens=20)          # token ids in, new token ids out
    texts = generate_text(gen, "path/to/tokenizer", ["Hello"], max_new_tokens=20)

`gen.generate` takes at most the engine's max_batch_size prompts at once. `gen.serve` takes any number: they
queue for the state slots and join the running batch as earlier sequences finish (continuous batching).

Under tensor parallelism every rank calls `load_engine` after `mambapipe.parallel.init_distributed`;
each rank picks its own weights from torch.distributed's rank.

What the engine computes is fixed by its config (dtype, `ssm_state_dtype`, both in the build step's
cache key). Two load options choose only how, for benchmarks and debugging: `kernels="torch"`
runs the plain torch ops instead of the Triton kernels on CUDA, `cuda_graphs=False` decodes and prefills
eagerly (with it on, small prefills replay a graph per batch and prompt-length bucket, engine/cuda_graphs.py). The
pipeline always loads with the defaults, and `gen.runtime_path` says which path a generator runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch

from mambapipe.backends.base import Limits
from mambapipe.checkpoint.config_json import CONFIG_FILE, read_config_json
from mambapipe.dtypes import TORCH_DTYPES
from mambapipe.engine.checks import ENGINE_FORMAT, dtype_problem
from mambapipe.engine.generate import EngineGenerator
from mambapipe.engine.kernels import kernels_problem
from mambapipe.engine.model import Comm, MambaModel
from mambapipe.engine.weights import load_rank
from mambapipe.models import ModelSpec
from mambapipe.pipeline.step import StepError


class EngineLoadError(RuntimeError):
    """An engine that cannot run here as asked: this device, kernel choice or number of ranks."""


def read_native_engine_config(engine_dir: Path) -> dict:
    """A native engine directory's config.json (a trtllm-build one is read by backends/trtllm_engine.py)."""
    cfg = read_config_json(Path(engine_dir), "an engine directory", "build")
    # A model checkpoint (HF) or a convert output has a config.json too, without the engine's "version"; a
    # StepError, as read_config_json's other "not an engine directory" lines, so the pipeline reports it in one line.
    if "version" not in cfg:
        raise StepError(f"{engine_dir} is not an engine directory: its {CONFIG_FILE} names no engine format (a model "
                        "checkpoint or a convert output?); pass the build step's output, <cache>/build/<key>")
    if cfg["version"] != ENGINE_FORMAT:
        raise ValueError(f"{Path(engine_dir) / CONFIG_FILE} is a {cfg['version']!r} engine, not "
                         f"{ENGINE_FORMAT!r}; rebuild it with backend=native")
    return cfg


def _rank_and_world(tp_size: int) -> tuple[int, int]:
    dist = torch.distributed
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if world != tp_size:
        command = "python -m mambapipe.engine" if tp_size == 1 else \
            f"torchrun --standalone --nproc-per-node {tp_size} -m mambapipe.engine"
        raise EngineLoadError(f"the engine was built for tp_size={tp_size} but {world} rank(s) are running; run it "
                              f"as `{command} ...` with the same arguments (from Python: mambapipe.parallel.launch)")
    return (dist.get_rank() if world > 1 else 0), world


def explicit_device(device: str) -> str:
    """A bare "cuda" as the current CUDA device with its index: torch reads "cuda" as the current device (a
    tensor-parallel rank's own, once `init_distributed` has set it), but safetensors reads it as cuda:0."""
    return f"cuda:{torch.cuda.current_device()}" if device == "cuda" else device


def create_blas_handle(device: str, dtype: torch.dtype) -> None:
    """One tiny product on `device`, so that cuBLAS sets up its handle there before the weights are loaded.
    Measured on the H200 (GPU_NOTES.md v40, device calls 330-334): in a process whose first cuBLAS call came after
    the weights (at the decode graphs' capture), every boundary next to a cuBLAS kernel of mamba-2.8b's batched
    decode graphs idled ~0.5 us longer, the kernels' own times unchanged: 0.35 ms of gaps a batch-64 step against
    0.09, 4.00 against 3.75 ms a step (batch 8: 3.13 against 2.87), in every fresh process either way. Moving the
    weights' addresses (a reserved or a live block first, expandable segments) did not change it; creating the
    handle first did. Why, was not found; the other models' steps were within noise."""
    rows = torch.zeros(64, 256, dtype=dtype, device=device)  # (M, K)
    torch.nn.functional.linear(rows, torch.zeros(512, 256, dtype=dtype, device=device))  # (M, N)


def load_engine(engine_dir: str | Path, device: str = "cpu", kernels: str = "auto",
                cuda_graphs: bool = True) -> EngineGenerator:
    """Memory-map this rank's engine weights onto `device` and return a ready `Generator`.
    kernels: "auto" (Triton kernels on CUDA) or "torch"; cuda_graphs: capture the greedy decode (and small
    prefills) on CUDA."""
    engine_dir = Path(engine_dir).expanduser()
    cfg = read_native_engine_config(engine_dir)
    build = cfg["build_config"]
    for problem in (kernels_problem(kernels), dtype_problem(build["dtype"], device)):
        if problem:
            raise EngineLoadError(problem)
    device = explicit_device(device)
    spec = ModelSpec.from_trtllm_config(cfg["pretrained_config"])
    rank, world = _rank_and_world(int(build["tp_size"]))
    if device.startswith("cuda"):
        create_blas_handle(device, TORCH_DTYPES[build["dtype"]])
    glob, layers = load_rank(engine_dir, rank, spec, device)
    model = MambaModel(spec, glob, layers, Comm(world), kernel_choice=kernels)
    limits = Limits(int(build["max_batch_size"]), int(build["max_input_len"]), int(build["max_seq_len"]))
    return EngineGenerator(model, limits, device=device, dtype=build["dtype"], tp_size=world,
                           ssm_state_dtype=build["ssm_state_dtype"], cuda_graphs=cuda_graphs)


def generate_text(generator: EngineGenerator, tokenizer_dir: str | Path, texts: Sequence[str],
                  max_new_tokens: int, *, eos_id: Optional[int] = None) -> list[str]:
    """Tokenize `texts`, generate greedily, and decode only the new tokens (stopping at the tokenizer's eos)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    prompts = [tokenizer.encode(t, add_special_tokens=True) for t in texts]
    eos = tokenizer.eos_token_id if eos_id is None else eos_id
    out = generator.generate(prompts, max_new_tokens, eos_id=eos)
    return tokenizer.batch_decode(out.output_ids, skip_special_tokens=True)
