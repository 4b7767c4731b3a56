"""Architecture of a Mamba1/Mamba2 language model, independent of any file format.

`ModelSpec` is the one description every part of mambapipe shares: the synthetic source builds HF
models from it, the convert step writes it into the TensorRT-LLM `config.json`, the native engine
reads it back from there, and the benchmark derives its memory-bandwidth floor from it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional

MAMBA1 = "Mamba1"
MAMBA2 = "Mamba2"
# TensorRT-LLM ignores the source's layer_norm_epsilon and always uses PretrainedConfig's default.
TRTLLM_NORM_EPSILON = 1e-5
# The dtype names configs, checkpoints and engines use (mambapipe.dtypes maps them to torch's, which the plan's checks
# of a name need not import).
DTYPE_NAMES = ("float16", "bfloat16", "float32")
# Sizes that must be at least 1: a 0 divides by zero in the engine or builds a model that computes nothing.
_POSITIVE = ("hidden_size", "num_layers", "vocab_size", "state_size", "conv_kernel", "expand",
             "pad_vocab_size_multiple")
_POSITIVE_MAMBA2 = ("head_dim", "n_groups", "chunk_size")


@dataclass(frozen=True)
class ModelSpec:
    mamba_version: str  # "Mamba1" | "Mamba2"
    hidden_size: int  # d_model
    num_layers: int
    vocab_size: int  # rows of the embedding as stored (already padded where the source pads)
    state_size: int  # d_state (N)
    conv_kernel: int = 4  # d_conv (K)
    expand: int = 2
    head_dim: int = 64  # Mamba2 only
    n_groups: int = 1  # Mamba2 only
    chunk_size: int = 256  # Mamba2 only
    time_step_rank: int = 0  # Mamba1 only; 0 means ceil(hidden_size / 16)
    use_bias: bool = False  # in_proj / out_proj bias
    use_conv_bias: bool = True
    tie_embeddings: bool = True
    rms_norm: bool = True
    residual_in_fp32: bool = True
    pad_vocab_size_multiple: int = 1

    def __post_init__(self) -> None:
        if self.mamba_version not in (MAMBA1, MAMBA2):
            raise ValueError(f"mamba_version must be {MAMBA1!r} or {MAMBA2!r}, got {self.mamba_version!r}")
        for name in _POSITIVE + (_POSITIVE_MAMBA2 if self.is_mamba2 else ()):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.conv_kernel < 2:
            raise ValueError(f"conv_kernel must be >= 2 (a width-1 conv keeps no state to decode with), got "
                             f"{self.conv_kernel}")
        if self.time_step_rank < 0:
            raise ValueError(f"time_step_rank must be >= 0 (0: ceil(hidden_size / 16)), got {self.time_step_rank}")
        if self.is_mamba2:
            if self.intermediate_size % self.head_dim:
                raise ValueError(f"d_inner {self.intermediate_size} is not a multiple of head_dim {self.head_dim}")
            if self.num_heads % self.n_groups:
                raise ValueError(f"{self.num_heads} heads cannot be split into {self.n_groups} groups")

    @property
    def is_mamba2(self) -> bool:
        return self.mamba_version == MAMBA2

    @property
    def intermediate_size(self) -> int:  # d_inner (Di)
        return self.expand * self.hidden_size

    @property
    def dt_rank(self) -> int:
        return self.time_step_rank or math.ceil(self.hidden_size / 16)

    @property
    def num_heads(self) -> int:  # Mamba2 nheads (Hh)
        return self.intermediate_size // self.head_dim if self.is_mamba2 else 0

    @property
    def conv_dim(self) -> int:
        """Channels of the causal conv: x for Mamba1, x|B|C for Mamba2 (always derived, never trusted)."""
        if self.is_mamba2:
            return self.intermediate_size + 2 * self.n_groups * self.state_size
        return self.intermediate_size

    @property
    def in_proj_rows(self) -> int:
        if self.is_mamba2:  # z | x | B | C | dt
            return 2 * self.intermediate_size + 2 * self.n_groups * self.state_size + self.num_heads
        return 2 * self.intermediate_size  # x | z

    # ---- tensor parallelism -------------------------------------------------------------------

    def tp_problems(self, tp_size: int) -> list[str]:
        """Why this model cannot be split `tp_size` ways (empty when it can)."""
        if tp_size < 1:
            return [f"tp_size must be >= 1, got {tp_size}"]
        return [f"{size} is not divisible by tp_size={tp_size}" for size in self.tp_misfits(tp_size)]

    def tp_misfits(self, tp_size: int) -> list[str]:
        """The sizes a split `tp_size` ways (>= 1) must divide and does not, each as `name=value`: a derived size
        such as d_inner is followed by the config fields it comes from, since no field of that name exists to
        change (found by QA: 'd_inner=194' alone sent the user looking for one)."""
        # lm_head is split by vocab rows on every rank (Mamba1 too), so the vocab must divide as well.
        sizes = [(f"d_inner={self.intermediate_size} (expand × hidden_size)", self.intermediate_size),
                 (f"vocab_size={self.vocab_size}", self.vocab_size)]
        if self.is_mamba2:
            sizes += [(f"n_groups={self.n_groups}", self.n_groups),
                      (f"heads={self.num_heads} (d_inner / head_dim)", self.num_heads)]
        return [what for what, n in sizes if n % tp_size]

    # ---- sizes, for the benchmark's bandwidth floor ------------------------------------------

    def layer_param_count(self) -> int:
        H, Di, N, K = self.hidden_size, self.intermediate_size, self.state_size, self.conv_kernel
        conv = self.conv_dim * K + (self.conv_dim if self.use_conv_bias else 0)
        bias = (self.in_proj_rows + H) if self.use_bias else 0
        if self.is_mamba2:
            ssm = 3 * self.num_heads + Di  # A, D, dt_bias, gated-norm weight
        else:
            ssm = Di * (self.dt_rank + 2 * N) + self.dt_rank * Di + Di + Di * N + Di  # x_proj, dt_proj(+b), A, D
        return H + self.in_proj_rows * H + conv + ssm + H * Di + bias  # norm, in_proj, ..., out_proj

    def state_elements_per_sequence(self) -> tuple[int, int]:
        """(conv, ssm) state elements one sequence carries across all layers."""
        conv = (self.conv_kernel - 1) * self.conv_dim
        channels = self.num_heads * self.head_dim if self.is_mamba2 else self.intermediate_size
        ssm = channels * self.state_size
        return conv * self.num_layers, ssm * self.num_layers

    # ---- TensorRT-LLM checkpoint config.json --------------------------------------------------

    def to_trtllm_config(self, dtype: str, tp_size: int) -> dict[str, Any]:
        """The `config.json` TensorRT-LLM's MambaConfig writes (reference §1.3), with correct values
        where its converter has bugs (conv dim, ssm_cfg, world size)."""
        # TensorRT-LLM's MambaModel pads vocab_size up to this multiple and expects the embedding and lm_head padded
        # alike; ours hold vocab_size rows (the source's own count), so a vocab off the multiple is written as 1.
        pad_multiple = self.pad_vocab_size_multiple if self.vocab_size % self.pad_vocab_size_multiple == 0 else 1
        cfg: dict[str, Any] = {
            "architecture": "MambaForCausalLM",
            "dtype": dtype,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": tp_size,  # dummy: TensorRT-LLM sets it to world_size
            "num_key_value_heads": tp_size,
            "head_size": self.hidden_size // tp_size,
            "hidden_act": "silu",
            "logits_dtype": "float32",
            "norm_epsilon": TRTLLM_NORM_EPSILON,
            "position_embedding_type": "learned_absolute",
            "max_position_embeddings": None,
            "use_parallel_embedding": False,
            "embedding_sharding_dim": 0,
            "qk_layernorm": False,
            "rotary_embedding_dim": 0,
            "runtime_defaults": None,
            "residual_in_fp32": self.residual_in_fp32,
            "pad_vocab_size_multiple": pad_multiple,
            "layer_types": ["recurrent"],
            "intermediate_size": self.intermediate_size,
            "mamba_version": self.mamba_version,
            "rms_norm": self.rms_norm,
            "rnn_hidden_size": self.intermediate_size,
            "rnn_conv_dim_size": self.conv_dim,
            "state_size": self.state_size,
            "conv_kernel": self.conv_kernel,
            "use_bias": self.use_bias,
            "mapping": {"world_size": tp_size, "gpus_per_node": 8, "cp_size": 1, "tp_size": tp_size,
                        "pp_size": 1, "moe_tp_size": tp_size, "moe_ep_size": 1, "moe_cluster_size": 1,
                        "attn_tp_size": tp_size, "attn_cp_size": 1, "auto_parallel": False},
            "quantization": {"quant_algo": None, "kv_cache_quant_algo": None, "group_size": 128,
                             "smoothquant_val": 0.5, "clamp_val": None, "use_meta_recipe": False,
                             "has_zero_point": False, "pre_quant_scale": False, "exclude_modules": None},
        }
        if self.is_mamba2:
            cfg.update(rnn_head_size=self.head_dim, ngroups=self.n_groups, chunk_size=self.chunk_size,
                       ssm_rmsnorm=self.rms_norm)
        # Not TensorRT-LLM keys, but harmless there (PretrainedConfig keeps unknown keys) and needed to
        # rebuild the spec exactly: Mamba1's dt_rank and the conv bias are otherwise implicit.
        cfg["mambapipe"] = {"time_step_rank": self.dt_rank, "use_conv_bias": self.use_conv_bias,
                            "tie_embeddings": self.tie_embeddings, "expand": self.expand}
        return cfg

    @classmethod
    def from_trtllm_config(cls, cfg: dict[str, Any]) -> "ModelSpec":
        """Read a TensorRT-LLM Mamba checkpoint or engine `pretrained_config` (ours or NVIDIA's).
        conv_dim is re-derived, never read from `rnn_conv_dim_size` (Codestral's converter writes 18432)."""
        extra = cfg.get("mambapipe", {})
        hidden = int(cfg["hidden_size"])
        version = cfg.get("mamba_version", MAMBA1)
        expand = int(extra.get("expand", int(cfg.get("rnn_hidden_size", cfg["intermediate_size"])) // hidden))
        kwargs: dict[str, Any] = dict(
            mamba_version=version, hidden_size=hidden, num_layers=int(cfg["num_hidden_layers"]),
            vocab_size=int(cfg["vocab_size"]), state_size=int(cfg["state_size"]),
            conv_kernel=int(cfg["conv_kernel"]), expand=expand, use_bias=bool(cfg.get("use_bias", False)),
            use_conv_bias=bool(extra.get("use_conv_bias", True)),
            tie_embeddings=bool(extra.get("tie_embeddings", False)),
            rms_norm=bool(cfg.get("rms_norm", True)), residual_in_fp32=bool(cfg.get("residual_in_fp32", True)),
            pad_vocab_size_multiple=int(cfg.get("pad_vocab_size_multiple", 1)),
            time_step_rank=_explicit_dt_rank(int(extra.get("time_step_rank", 0)), hidden, version),
        )
        if version == MAMBA2:
            kwargs.update(head_dim=int(cfg["rnn_head_size"]), n_groups=int(cfg["ngroups"]),
                          chunk_size=int(cfg.get("chunk_size", 256)))
        return cls(**kwargs)

    def replace(self, **changes: Any) -> "ModelSpec":
        return dataclasses.replace(self, **changes)


def _explicit_dt_rank(rank: int, hidden: int, version: str) -> int:
    """0 (= ceil(H/16)) when the written rank is the default or unused, so specs round-trip through config.json."""
    return 0 if version == MAMBA2 or rank == math.ceil(hidden / 16) else rank


def unknown_dtype(dtype: str) -> Optional[str]:
    """The one line for a dtype name that is none of DTYPE_NAMES (None for one that is)."""
    return None if dtype in DTYPE_NAMES else f"unknown dtype {dtype!r}; use one of {', '.join(DTYPE_NAMES)}"
