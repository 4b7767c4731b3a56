"""Seeded random Mamba checkpoints in the real Hugging Face layout, at any size.

`write_synthetic_checkpoint` lets every step run without the model hub: it writes what
`MambaForCausalLM.save_pretrained` / `Mamba2ForCausalLM.save_pretrained` would write (config.json and
safetensors shards with an index), but generates and saves one shard at a time (up to 2 GB by default), so
a 7B model fits on a small machine. `write_synthetic_tokenizer` trains a real byte-level BPE tokenizer on
the bundled sample data.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from tqdm import tqdm

from mambapipe.checkpoint.safetensors_io import save_file
from mambapipe.dtypes import TORCH_DTYPES
from mambapipe.models import ModelSpec

EOS_TOKEN = "<|endoftext|>"
MAX_SHARD_BYTES = 2_000_000_000  # decimal GB, as save_pretrained counts max_shard_size
WEIGHT_STD = 0.02
DT_MIN, DT_MAX, DT_FLOOR = 1e-3, 1e-1, 1e-4


def hf_config(spec: ModelSpec, dtype: str):
    """The transformers MambaConfig / Mamba2Config for `spec` (token ids match the synthetic tokenizer)."""
    from transformers import Mamba2Config, MambaConfig

    common = dict(vocab_size=spec.vocab_size, hidden_size=spec.hidden_size, state_size=spec.state_size,
                  num_hidden_layers=spec.num_layers, expand=spec.expand, conv_kernel=spec.conv_kernel,
                  use_bias=spec.use_bias, use_conv_bias=spec.use_conv_bias,
                  residual_in_fp32=spec.residual_in_fp32, tie_word_embeddings=spec.tie_embeddings,
                  bos_token_id=0, eos_token_id=0, pad_token_id=0, dtype=dtype)
    if spec.is_mamba2:
        config = Mamba2Config(num_heads=spec.num_heads, head_dim=spec.head_dim, n_groups=spec.n_groups,
                              chunk_size=spec.chunk_size, **common)
        config.architectures = ["Mamba2ForCausalLM"]
    else:
        config = MambaConfig(time_step_rank=spec.dt_rank, **common)
        config.architectures = ["MambaForCausalLM"]
    # Not a transformers field, but the state-spaces -hf configs carry it and converters read it.
    config.pad_vocab_size_multiple = spec.pad_vocab_size_multiple
    return config


def tensor_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the HF state dict, read off a model built on the meta device (no memory)."""
    from transformers import Mamba2ForCausalLM, MambaForCausalLM

    model_cls = Mamba2ForCausalLM if spec.is_mamba2 else MambaForCausalLM
    with torch.device("meta"):
        model = model_cls(hf_config(spec, "float32"))
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if spec.tie_embeddings:
        shapes.pop("lm_head.weight", None)  # tied: save_pretrained drops it as well
    return shapes


def init_tensor(name: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """A float32 tensor initialised the way mamba_ssm initialises that parameter, so generations are
    not degenerate (decaying but non-trivial state, unit norms, small projections)."""
    parent, leaf = name.split(".")[-2:]  # e.g. "conv1d", "weight"
    if leaf == "A_log":
        return _a_log(shape)
    if leaf == "D" or (leaf == "weight" and parent in ("norm", "norm_f")):
        return torch.ones(shape)
    if leaf == "dt_bias" or (parent == "dt_proj" and leaf == "bias"):
        return _dt_bias(shape, gen)
    if leaf == "bias":
        return torch.zeros(shape)
    if parent == "conv1d":
        # Variance of PyTorch's default kaiming-uniform conv init (bound 1/sqrt(K)) as a normal.
        return torch.randn(shape, generator=gen) * (3 * shape[-1]) ** -0.5  # (C, 1, K)
    if parent in ("embeddings", "lm_head"):
        return torch.randn(shape, generator=gen) * WEIGHT_STD  # (V, H)
    # Projections: std 1/sqrt(fan_in) keeps activations at unit scale whatever the width; at the real
    # models' widths (2560-4096) this is the usual 0.02.
    return torch.randn(shape, generator=gen) * shape[-1] ** -0.5  # (out, in)


def _a_log(shape: tuple[int, ...]) -> torch.Tensor:
    if len(shape) == 2:  # Mamba1 S4D-real init: A[c, n] = n + 1 for every channel
        channels, state = shape
        return torch.log(torch.arange(1, state + 1, dtype=torch.float32)).repeat(channels, 1)  # (Di, N)
    # Mamba2: one scalar A per head, spread over mamba_ssm's A_init_range (1, 16)
    return torch.log(torch.linspace(1.0, 16.0, shape[0]))  # (Hh,)


def _dt_bias(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Inverse softplus of dt drawn log-uniform in [DT_MIN, DT_MAX], so softplus(bias) is that dt."""
    u = torch.rand(shape, generator=gen)
    dt = torch.exp(u * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN)).clamp(min=DT_FLOOR)
    return dt + torch.log(-torch.expm1(-dt))


def _seeded(seed: int, name: str) -> torch.Generator:
    # Seed per tensor name so each tensor is the same whatever the shard size or write order.
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))


def write_synthetic_checkpoint(spec: ModelSpec, out_dir: Path | str, dtype: str, seed: int,
                               max_shard_bytes: int = MAX_SHARD_BYTES, progress: bool = True) -> dict[str, Any]:
    """Write a seeded random HF Mamba/Mamba2 checkpoint of shape `spec` into `out_dir` in `dtype`.

    Peak memory is one shard (≤ `max_shard_bytes`) plus one float32 tensor. Returns manifest facts."""
    from huggingface_hub import split_torch_state_dict_into_shards

    if dtype not in TORCH_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(TORCH_DTYPES)}, got {dtype!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch_dtype = TORCH_DTYPES[dtype]
    shapes = tensor_shapes(spec)
    # Meta tensors give the splitter sizes without memory; it groups and names shards as save_pretrained does.
    split = split_torch_state_dict_into_shards(
        {name: torch.empty(shape, dtype=torch_dtype, device="meta") for name, shape in shapes.items()},
        max_shard_size=max_shard_bytes)
    with tqdm(total=split.metadata["total_size"], unit="B", unit_scale=True, desc="synthetic weights",
              disable=not progress) as bar:
        for file, names in split.filename_to_tensors.items():
            _write_shard(out_dir / file, {name: shapes[name] for name in names}, torch_dtype, seed, bar)
    if split.is_sharded:  # a single model.safetensors has no index, as with save_pretrained
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    hf_config(spec, dtype).save_pretrained(out_dir)
    return {"format": "hf_mamba2" if spec.is_mamba2 else "hf_mamba", "dtype": dtype, "seed": seed,
            "num_parameters": sum(math.prod(s) for s in shapes.values()), "files": list(split.filename_to_tensors)}


def _write_shard(path: Path, shapes: dict[str, tuple[int, ...]], dtype: torch.dtype, seed: int, bar: tqdm) -> None:
    # The shard's tensors are freed on return, before the next shard is generated.
    tensors = {}
    for name, shape in shapes.items():
        tensors[name] = init_tensor(name, shape, _seeded(seed, name)).to(dtype).contiguous()
        bar.update(tensors[name].numel() * dtype.itemsize)
    save_file(tensors, path, metadata={"format": "pt"})


# ---- tokenizer ---------------------------------------------------------------------------------

def sample_texts() -> Iterator[str]:
    """Articles and highlights of the bundled sample dataset, in file order."""
    from mambapipe.evaluate.data import sample_path

    with sample_path().open("r", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                yield record["article"]
                yield record["highlights"]


def write_synthetic_tokenizer(out_dir: Path | str, vocab_size: int,
                              texts: Iterable[str] | None = None) -> dict[str, Any]:
    """Train a byte-level BPE tokenizer (at most `vocab_size` tokens, `<|endoftext|>` = id 0) and save
    it as a PreTrainedTokenizerFast that `AutoTokenizer.from_pretrained(out_dir)` loads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 257:  # 256 byte tokens + the special token
        raise ValueError(f"a byte-level tokenizer needs vocab_size >= 257, got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(list(texts if texts is not None else sample_texts()), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN,
                                   unk_token=EOS_TOKEN, pad_token=EOS_TOKEN)
    out_dir = Path(out_dir)
    fast.save_pretrained(out_dir)
    return {"vocab_size": tokenizer.get_vocab_size(), "eos_id": tokenizer.token_to_id(EOS_TOKEN)}
