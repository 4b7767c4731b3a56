"""One canonical naming for every source layout, and the tensors a spec implies.

Canonical names drop the layout-specific prefixes: Mistral's `model.`, everyone's `backbone.`, and HF's
`embeddings` (mamba_ssm says `embedding`). What remains is the mamba_ssm module path:
`embedding.weight`, `layers.{i}.norm.weight`, `layers.{i}.mixer.<param>`, `norm_f.weight`, `lm_head.weight`.
"""

from __future__ import annotations

from mambapipe.models import ModelSpec

LM_HEAD = "lm_head.weight"
EMBEDDING = "embedding.weight"


def canonical_name(key: str) -> str:
    name = key.removeprefix("model.").removeprefix("backbone.")
    if name.startswith("embeddings."):
        name = "embedding." + name.removeprefix("embeddings.")
    return name


def source_key(name: str, backbone_prefix: str, hf_layout: bool) -> str:
    """canonical_name undone: the key under which a source stores canonical tensor `name`, given the prefix before
    its backbone's tensors (`backbone.`, mistral-inference's `model.backbone.`) and whether it names the
    embedding HF's way (`embeddings`). The lm_head sits beside the backbone, under the prefix's outer part."""
    if name == LM_HEAD:
        return backbone_prefix.removesuffix("backbone.") + name
    if name == EMBEDDING and hf_layout:
        return backbone_prefix + "embeddings.weight"
    return backbone_prefix + name


def expected_source_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Every tensor the source must hold, with its shape. A tied lm_head is optional (handled by the caller)."""
    H, V = spec.hidden_size, spec.vocab_size
    shapes: dict[str, tuple[int, ...]] = {EMBEDDING: (V, H), "norm_f.weight": (H,), LM_HEAD: (V, H)}
    mixer = _mamba2_mixer_shapes(spec) if spec.is_mamba2 else _mamba1_mixer_shapes(spec)
    for i in range(spec.num_layers):
        shapes[f"layers.{i}.norm.weight"] = (H,)
        shapes.update({f"layers.{i}.mixer.{name}": shape for name, shape in mixer.items()})
    return shapes


def _mamba1_mixer_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    H, Di, N, K, R = spec.hidden_size, spec.intermediate_size, spec.state_size, spec.conv_kernel, spec.dt_rank
    shapes = {"in_proj.weight": (2 * Di, H), "conv1d.weight": (Di, 1, K), "x_proj.weight": (R + 2 * N, Di),
              "dt_proj.weight": (Di, R), "dt_proj.bias": (Di,), "A_log": (Di, N), "D": (Di,),
              "out_proj.weight": (H, Di)}
    return shapes | _bias_shapes(spec, in_rows=2 * Di)


def _mamba2_mixer_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    H, Di, K, Hh = spec.hidden_size, spec.intermediate_size, spec.conv_kernel, spec.num_heads
    shapes = {"in_proj.weight": (spec.in_proj_rows, H), "conv1d.weight": (spec.conv_dim, 1, K),
              "dt_bias": (Hh,), "A_log": (Hh,), "D": (Hh,), "norm.weight": (Di,), "out_proj.weight": (H, Di)}
    return shapes | _bias_shapes(spec, in_rows=spec.in_proj_rows)


def _bias_shapes(spec: ModelSpec, in_rows: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    if spec.use_conv_bias:
        shapes["conv1d.bias"] = (spec.conv_dim,)
    if spec.use_bias:
        shapes["in_proj.bias"] = (in_rows,)
        shapes["out_proj.bias"] = (spec.hidden_size,)
    return shapes
