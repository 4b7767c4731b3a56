"""Shared pieces of the GPU benchmarks: the five models' specs (from configs/model) and engines with
random weights at the real shapes built directly on the GPU (speed does not depend on the values; writing
14 GB through the pipeline for a timing run would waste device minutes), or on the CPU, to check a script
with the tiny models."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from mambapipe.backends.base import Limits
from mambapipe.engine.build import resolve_ssm_state_dtype
from mambapipe.engine.generate import EngineGenerator
from mambapipe.engine.model import Comm, MambaModel
from mambapipe.engine.weights import LayerWeights
from mambapipe.models import ModelSpec

MODELS = ("mamba_130m", "mamba_2p8b", "mamba2_130m", "mamba2_2p7b", "codestral_7b")
CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "model"


def require_cuda(gpus: int = 1) -> None:
    """Exit with one line, before any work, where torch sees fewer than `gpus` CUDA GPUs: the scripts put their
    tensors on "cuda", so on a CPU box they would otherwise end in a traceback (gpu_tp.py: run a 7B model on the
    CPU and write 21 GB)."""
    seen = torch.cuda.device_count()
    if seen < gpus:
        needed = "a CUDA GPU" if gpus == 1 else f"{gpus} CUDA GPUs"
        print(f"{Path(sys.argv[0]).name} needs {needed}; torch sees {seen}", file=sys.stderr)
        raise SystemExit(2)  # as argparse exits on a command line it refuses


def model_names(text: str) -> str:
    """An argparse type for --models: comma-separated names from configs/model, checked before any work (a wrong
    one was a FileNotFoundError traceback once the models before it had run)."""
    unknown = [name for name in text.split(",") if not (CONFIGS / f"{name}.yaml").is_file()]
    if unknown:
        known = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.yaml")))
        raise argparse.ArgumentTypeError(f"{', '.join(map(repr, unknown))} not in configs/model; pick from {known}")
    return text


def positive_int(text: str) -> int:
    """An argparse type for a length or count that must be at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer")
    return int(text)


def model_spec(name: str) -> ModelSpec:
    return ModelSpec(**OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{name}.yaml").arch))


def table_key(text: str) -> object:
    """A table key as given on a command line: '3352,768,1' -> (3352, 768, 1), '768,1536,1,gated' ->
    (768, 1536, 1, 'gated') (gemv.TILES); a key without commas stays a string (scan.SHAPES)."""
    if "," not in text:
        return text
    return tuple(int(part) if part.isdigit() else part for part in text.split(","))


def parse_arch(text: str) -> dict[str, int]:
    """'expand=1,n_groups=4' -> {"expand": 1, "n_groups": 4} (ModelSpec fields, integers)."""
    fields = {f.name for f in dataclasses.fields(ModelSpec)}
    arch = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in fields or not value.isdigit():
            raise argparse.ArgumentTypeError(f"{item!r}: expected FIELD=INTEGER with FIELD one of ModelSpec's")
        arch[key] = int(value)
    return arch


def _normal(shape, std, dtype, gen):
    return (torch.randn(shape, device=gen.device, generator=gen) * std).to(dtype)


def _layer(spec: ModelSpec, dtype: torch.dtype, gen: torch.Generator) -> LayerWeights:
    H, Di, N, K = spec.hidden_size, spec.intermediate_size, spec.state_size, spec.conv_kernel
    C, device = spec.conv_dim, gen.device
    w = LayerWeights(norm=torch.ones(H, dtype=dtype, device=device),
                     in_proj=_normal((spec.in_proj_rows, H), H ** -0.5, dtype, gen),
                     conv_weight=_normal((C, K), K ** -0.5, dtype, gen), conv_bias=_normal((C,), 0.1, dtype, gen),
                     out_proj=_normal((H, Di), Di ** -0.5 / math.sqrt(spec.num_layers), dtype, gen))
    if spec.is_mamba2:
        heads = spec.num_heads
        w.update(A=-torch.arange(1, heads + 1, device=device, dtype=torch.float32) / heads * 16,
                 D=torch.ones(heads, device=device), dt_bias=_normal((heads,), 1.0, torch.float32, gen) - 4,
                 gate_norm=torch.ones(Di, dtype=dtype, device=device))
    else:
        R = spec.dt_rank
        w.update(x_proj=_normal((R + 2 * N, Di), Di ** -0.5, dtype, gen),
                 dt_proj=_normal((Di, R), R ** -0.5, dtype, gen),
                 A=-torch.arange(1, N + 1, device=device, dtype=torch.float32).repeat(Di, 1),
                 D=torch.ones(Di, device=device), dt_bias=_normal((Di,), 1.0, torch.float32, gen) - 4)
    return w


def random_model(spec: ModelSpec, dtype: torch.dtype = torch.float16, seed: int = 0,
                 device: str = "cuda") -> MambaModel:
    gen = torch.Generator(device=device).manual_seed(seed)
    embedding = _normal((spec.vocab_size, spec.hidden_size), 1.0, dtype, gen)
    lm_head = embedding if spec.tie_embeddings else _normal((spec.vocab_size, spec.hidden_size), 0.02, dtype, gen)
    glob = {"embedding": embedding, "norm_f": torch.ones(spec.hidden_size, dtype=dtype, device=device),
            "lm_head": lm_head}
    layers = [_layer(spec, dtype, gen) for _ in range(spec.num_layers)]
    return MambaModel(spec, glob, layers, Comm(1))


def torch_twin(model: MambaModel) -> MambaModel:
    """The same weights on the plain torch ops (kernels="torch"): the baseline and the reference."""
    return MambaModel(model.spec, model.glob, model.layers, model.comm, kernel_choice="torch")


def generator(model: MambaModel, max_batch: int, max_input: int, max_seq: int, ssm_state_dtype: str = "auto",
              cuda_graphs: bool = True) -> EngineGenerator:
    """As `load_engine` would give for an engine of the model's dtype built with
    build.ssm_state_dtype=`ssm_state_dtype`, on the model's device (CUDA graphs only there)."""
    device = model.glob["embedding"].device
    dtype = str(model.dtype).removeprefix("torch.")
    return EngineGenerator(model, Limits(max_batch, max_input, max_seq), device=str(device), dtype=dtype,
                           ssm_state_dtype=resolve_ssm_state_dtype(ssm_state_dtype, dtype, device.type),
                           cuda_graphs=cuda_graphs and device.type == "cuda")


def graph_replay_ms(fn, replays: int = 20, device: str = "cuda") -> float:
    """ms a call of `fn`: median of `replays` replays of its CUDA graph (on the CPU: of plain calls)."""
    fn()  # compile outside the graph
    if device == "cpu":
        times = []
        for _ in range(replays):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return sorted(times)[len(times) // 2]
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    times = []
    for _ in range(replays):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end))
    return sorted(times)[len(times) // 2]
