"""Per-rank engine weights: renamed and re-laid-out once at build time, memory-mapped at load time.

Engine tensor names (one `rank{r}.safetensors` per rank, already split for that rank):
  embedding [V, H], norm_f [H], lm_head [V/tp, H] (or [V, H] when replicated)
  layers.{i}.norm [H], in_proj [rows/tp, H], conv_weight [C/tp, K], conv_bias [C/tp], A, D, dt_bias (fp32),
  out_proj [H, Di/tp], optional in_proj_bias / out_proj_bias;
  Mamba1 also x_proj [R+2N, Di/tp], dt_proj [Di/tp, R], A [Di/tp, N] (transposed back from TensorRT-LLM's
  [N, Di]); Mamba2 also gate_norm [Di/tp], A [Hh/tp].
Mamba1's in_proj fuses TensorRT-LLM's in_proj_x and in_proj_z (x rows first) so a step runs one GEMM.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from mambapipe.models import ModelSpec
from mambapipe.pipeline.step import StepError

_SSM = "backbone.layers.{i}.ssm."
_REBUILD = "rebuild the engine (force=[build])"


class RankWeightsError(StepError):
    """This rank's weights file is missing or damaged: of the errors loading an engine, the one that is not every
    rank's alike (a StepError, so that the pipeline reports it in one line)."""


def _layer_from_checkpoint(ckpt: dict[str, Tensor], spec: ModelSpec, i: int) -> dict[str, Tensor]:
    """One layer's engine tensors from a TensorRT-LLM checkpoint rank (reference §1.6/§1.7 names)."""
    p = _SSM.format(i=i)
    out = {"norm": ckpt[f"backbone.layers.{i}.input_layernorm.weight"],
           "conv_weight": ckpt[p + "conv1d.weight"].reshape(ckpt[p + "conv1d.weight"].shape[0], -1),  # (C, K)
           "D": ckpt[p + "D"].float(), "dt_bias": ckpt[p + "dt_bias"].float(),
           "out_proj": ckpt[p + "out_proj.weight"]}
    if spec.use_conv_bias:
        out["conv_bias"] = ckpt[p + "conv1d.bias"]
    if spec.use_bias:
        out["out_proj_bias"] = ckpt[p + "out_proj.bias"]
    if spec.is_mamba2:
        out.update(in_proj=ckpt[p + "in_proj.weight"], A=ckpt[p + "A"].float(), gate_norm=ckpt[p + "norm.weight"])
        if spec.use_bias:
            out["in_proj_bias"] = ckpt[p + "in_proj.bias"]
        return out
    out.update(in_proj=torch.cat([ckpt[p + "in_proj_x.weight"], ckpt[p + "in_proj_z.weight"]]),  # (2Di/tp, H)
               x_proj=ckpt[p + "x_proj.weight"], dt_proj=ckpt[p + "dt_proj.weight"],
               A=ckpt[p + "A"].float().t())  # (Di/tp, N)
    if spec.use_bias:
        out["in_proj_bias"] = torch.cat([ckpt[p + "in_proj_x.bias"], ckpt[p + "in_proj_z.bias"]])
    return out


def engine_tensors(ckpt: dict[str, Tensor], spec: ModelSpec) -> dict[str, Tensor]:
    """All engine tensors of one rank, from that rank's checkpoint tensors."""
    embedding = ckpt["backbone.vocab_embedding.weight"]
    # A tied checkpoint may lack lm_head (TensorRT-LLM copies the embedding then); safetensors refuses
    # shared storage, hence the clone.
    lm_head = ckpt["lm_head.weight"] if "lm_head.weight" in ckpt else embedding.clone()
    out = {"embedding": embedding, "norm_f": ckpt["backbone.ln_f.weight"], "lm_head": lm_head}
    for i in range(spec.num_layers):
        for name, t in _layer_from_checkpoint(ckpt, spec, i).items():
            out[f"layers.{i}.{name}"] = t
    return {name: t.contiguous() for name, t in out.items()}


class LayerWeights(dict):
    """The tensors of one layer, by engine name (a plain dict with attribute access for readability)."""

    __getattr__ = dict.get


def load_rank(engine_dir: Path, rank: int, spec: ModelSpec,
              device: str) -> tuple[dict[str, Tensor], list[LayerWeights]]:
    """This rank's tensors, read one at a time from the memory-mapped `rank{rank}.safetensors` straight
    onto `device` (no second host copy of the file): (global tensors, per-layer tensors).
    A missing or damaged file is a RankWeightsError, so the CLI and the evaluate step both report it in one line."""
    path = engine_dir / f"rank{rank}.safetensors"
    if not path.is_file():
        raise RankWeightsError(f"engine weights {path} are missing; {_REBUILD}")
    try:
        return _read_rank(path, spec.num_layers, device)
    except SafetensorError as err:  # e.g. a file truncated by a full disk or an interrupted copy
        raise RankWeightsError(f"engine weights {path} are damaged ({err}); {_REBUILD}") from None


def _read_rank(path: Path, num_layers: int, device: str) -> tuple[dict[str, Tensor], list[LayerWeights]]:
    glob: dict[str, Tensor] = {}
    layers = [LayerWeights() for _ in range(num_layers)]
    with safe_open(str(path), framework="pt", device=device) as f:
        for name in f.keys():
            if name.startswith("layers."):
                _, index, key = name.split(".", 2)
                layers[int(index)][key] = f.get_tensor(name)
            else:
                glob[name] = f.get_tensor(name)
    return glob, layers
