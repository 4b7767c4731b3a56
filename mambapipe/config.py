"""Typed schema of every config key a user can type.

Registered with Hydra's ConfigStore as the schema of `config.yaml` and of the `model/` group, so a
mistyped key or a wrongly typed value fails when the config is composed, never as a silent new key.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Optional, get_args, get_origin, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

STEP_NAMES = ("download", "convert", "build", "evaluate")
DEFAULT_CACHE_DIR = "~/.cache/mambapipe"  # where artifacts go when neither cache_dir nor $MAMBAPIPE_CACHE is set
# configs/ sits beside the package in the source tree (the editable install is the supported one). An
# absolute path, because under `python -m` Hydra would read a relative one as a module path.
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


class Source(str, Enum):
    hub = "hub"
    local = "local"
    synthetic = "synthetic"


class DType(str, Enum):
    float16 = "float16"
    bfloat16 = "bfloat16"
    float32 = "float32"


# The SSM state's dtype: one of the model dtypes, or auto (the engine's choice for the device).
StateDType = Enum("StateDType", {"auto": "auto", **{d.name: d.value for d in DType}}, type=str)


class BackendName(str, Enum):
    auto = "auto"
    native = "native"
    trtllm = "trtllm"


class DeviceName(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


StepName = Enum("StepName", {name: name for name in STEP_NAMES}, type=str)


class EvalTask(str, Enum):
    summarize = "summarize"
    benchmark = "benchmark"


@dataclass
class ArchConfig:
    """Architecture, mirroring `mambapipe.models.ModelSpec` (what `synthetic` builds, what plans check)."""
    mamba_version: str = MISSING
    hidden_size: int = MISSING
    num_layers: int = MISSING
    vocab_size: int = MISSING
    state_size: int = MISSING
    conv_kernel: int = 4
    expand: int = 2
    head_dim: int = 64
    n_groups: int = 1
    chunk_size: int = 256
    time_step_rank: int = 0
    use_bias: bool = False
    use_conv_bias: bool = True
    tie_embeddings: bool = True
    rms_norm: bool = True
    residual_in_fp32: bool = True
    pad_vocab_size_multiple: int = 1


@dataclass
class ModelConfig:
    name: str = MISSING
    source: Source = Source.synthetic
    repo_id: Optional[str] = None
    revision: Optional[str] = None  # branch, tag or commit; hub downloads pin the resolved commit
    path: Optional[str] = None  # for source=local
    tokenizer: Optional[str] = None  # hub id or local directory; synthetic models make their own
    source_dtype: DType = DType.float32  # dtype the source checkpoint is saved in (synthetic writes it)
    seed: int = 0  # synthetic weights
    # source=hub: which repo files to fetch (None = all); e.g. codestral ships both a Mistral and an
    # HF copy of its 14.6 GB of weights and we need only one.
    allow_patterns: Optional[list[str]] = None
    arch: ArchConfig = field(default_factory=ArchConfig)


@dataclass
class BuildConfig:
    max_batch_size: int = 8
    max_input_len: int = 924
    max_seq_len: int = 1024
    # Native engine only. The dtype the SSM state is kept in between tokens (updates compute in fp32 and
    # round once per step). auto = the model dtype on CUDA (the Triton kernels: half the state traffic, as
    # mamba_ssm), float32 on the CPU torch path; the engine config records the resolved choice.
    ssm_state_dtype: StateDType = StateDType.auto
    # TensorRT-LLM backend only (trtllm-build flags); a native build neither reads them nor has them in its key.
    paged_state: bool = True
    mamba_conv1d_plugin: str = "auto"
    remove_input_padding: bool = True
    gemm_plugin: str = "auto"


@dataclass
class BenchmarkScenario:
    batch: int = 1
    input_len: int = 100
    output_len: int = 100


@dataclass
class EvalConfig:
    task: EvalTask = EvalTask.summarize
    dataset: str = "sample"  # sample | cnn_dailymail | path to .jsonl/.json (JSON Lines or an array)/.parquet
    # summarize.py loads ccdv/cnn_dailymail, a loading-script repo that datasets>=4 refuses to run; abisee's
    # is the parquet copy of the same splits (3.0.0 test: 11,490 articles), built from the same URL lists.
    dataset_hub_id: str = "abisee/cnn_dailymail"
    dataset_config: str = "3.0.0"
    dataset_split: str = "test"
    max_ite: int = 20  # batches, as summarize.py counts: batch_size x max_ite articles are scored
    batch_size: int = 1
    max_input_length: int = 923
    output_len: int = 100
    check_accuracy: bool = False
    rouge1_threshold: float = 15.0
    compare_hf: bool = False
    random_seed: int = 0
    scenarios: list[BenchmarkScenario] = field(default_factory=list)
    warmup: int = 1
    repeats: int = 3
    # Device memory bandwidth for the benchmark's floor_pct, in GB/s. None: 4300 on an H200 (measured
    # there), else a quick copy-bandwidth measurement on the device.
    bandwidth_gbps: Optional[float] = None


@dataclass
class MambapipeConfig:
    model: ModelConfig = MISSING
    dtype: DType = DType.float16
    tp_size: int = 1
    backend: BackendName = BackendName.auto
    device: DeviceName = DeviceName.auto
    build: BuildConfig = field(default_factory=BuildConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cache_dir: str = f"${{oc.env:MAMBAPIPE_CACHE,'{DEFAULT_CACHE_DIR}'}}"
    # Steps to run (enums, so a mistyped name fails at compose time). Upstream steps they read from
    # must already be cached: a missing one stops the run before any work, naming the step to add.
    steps: list[StepName] = field(default_factory=lambda: [StepName(s) for s in STEP_NAMES])
    force: list[StepName] = field(default_factory=list)  # re-run even when cached (implies "in steps")
    plan_only: bool = False  # print the plan and stop; exit 0 unless the plan has problems
    # Progress bars on standard error. null: only when it is a terminal, as a log file or a CI log would collect
    # every carriage-return update of a bar as text.
    progress: Optional[bool] = None


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="mambapipe_schema", node=MambapipeConfig)
    # Outside the model group (the files of configs/model/ extend it as /model_schema@_here_): a schema in the
    # group would be offered by --help and tab completion as a model, one whose mandatory keys are all unset.
    cs.store(name="model_schema", node=ModelConfig)


def unknown_keys(config: dict[str, Any], schema: type = MambapipeConfig, prefix: str = "") -> list[str]:
    """Dotted keys of a composed config (as plain dicts) that its schema lacks. Hydra's `+key=value` adds
    them (its own error for a mistyped key suggests the `+`), and no step would read them."""
    hints = get_type_hints(schema)
    found = []
    for key, value in config.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in hints:
            found.append(dotted)
        elif (inner := _dataclass_in(hints[key])) is not None:
            items = enumerate(value) if isinstance(value, list) else [(None, value)]
            found += [k for i, item in items if isinstance(item, dict)
                      for k in unknown_keys(item, inner, dotted if i is None else f"{dotted}[{i}]")]
    return found


def _dataclass_in(annotation: Any) -> Optional[type]:
    """The schema class a field holds: itself, or inside Optional[...] / list[...]."""
    if is_dataclass(annotation):
        return annotation
    return next((c for c in map(_dataclass_in, get_args(annotation)) if c is not None), None)


def schema_key(dotted: str, schema: Optional[type] = MambapipeConfig, listed: bool = False) -> Optional[str]:
    """The schema's key `dotted` most likely means: itself when the schema has it, else with each part the schema
    lacks replaced by the closest field there (and a list's missing index put in as 0); None when some part is
    close to none. Below a field that holds no schema class (a dict, a list of plain values) any key is taken as
    is. `listed`: `dotted` starts inside a list of `schema` items, where an index comes first."""
    if schema is None or not dotted:
        return dotted
    part, dot, rest = dotted.partition(".")
    if listed:  # eval.scenarios.0.batch; Hydra reads eval.scenarios.batch as a bad index
        fixed = schema_key(rest, schema) if part.isdigit() else schema_key(dotted, schema)
        return None if fixed is None else (part + dot if part.isdigit() else "0.") + fixed
    hints = get_type_hints(schema)
    part = part if part in hints else close_key(part, hints)
    if part is None:
        return None
    fixed = schema_key(rest, _dataclass_in(hints[part]), _is_list(hints[part]))
    return None if fixed is None else part + dot + fixed


def key_shape(dotted: str, schema: type = MambapipeConfig) -> tuple[Optional[type], bool]:
    """The shape the schema gives the key `dotted`: the schema class it holds, None for plain values (build:
    BuildConfig, dtype: None), and whether it holds a list of them (eval.scenarios: BenchmarkScenario, True; steps:
    None, True). (None, False) for a key the schema lacks, or one inside a list."""
    part, _, rest = dotted.partition(".")
    hints = get_type_hints(schema)
    if part not in hints:
        return None, False
    inner, listed = _dataclass_in(hints[part]), _is_list(hints[part])
    if not rest:
        return inner, listed
    return key_shape(rest, inner) if inner is not None and not listed else (None, False)


def _is_list(annotation: Any) -> bool:
    """Whether a field holds a list (also inside Optional[...])."""
    return get_origin(annotation) is list or any(map(_is_list, get_args(annotation)))


def close_key(name: str, keys: Iterable[str]) -> Optional[str]:
    """The one of `keys` a mistyped `name` most likely meant (difflib's closest), None when none is close."""
    close = difflib.get_close_matches(name, [k for k in keys if k != name], n=1)
    return close[0] if close else None


def key_hint(meant: Optional[str]) -> str:
    """How an unknown key's error ends: the key it likely meant, else where the keys are listed."""
    return f"did you mean {meant}?" if meant else "see python -m mambapipe --help"
