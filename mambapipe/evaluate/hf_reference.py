"""A `Generator` over HF transformers' AutoModelForCausalLM: summarize.py's --test_hf reference.

It runs one prompt at a time: batching would left-pad, and padding changes what HF's Mamba computes
(summarize.py warns about the same thing), so the reference stays exact at any eval.batch_size.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch

from mambapipe import hub
from mambapipe.backends.base import GenerationOutput, Limits, SamplingConfig
from mambapipe.dtypes import TORCH_DTYPES
from mambapipe.models import MAMBA1, MAMBA2, ModelSpec
from mambapipe.peak_memory import peak_memory_mb

HF_MODEL_TYPES = {"mamba": MAMBA1, "mamba2": MAMBA2}
# transformers' warning, one per kernel, that a Mamba kernel runs its PyTorch reference; the logger that says it.
_FALLBACK_WARNING = re.compile(r"is falling back to its reference PyTorch implementation because `([\w-]+)` is not "
                               "installed")
_KERNELS_LOGGER = "transformers.integrations.hub_kernels"

log = logging.getLogger(__name__)


def hf_norms_groups() -> bool:
    """Whether the installed transformers norms Mamba2's gated RMSNorm in groups of d_inner / n_groups, as
    mamba_ssm and TensorRT-LLM do. Older releases (5.17 among them; 5.24 groups) norm all of d_inner at once,
    which is another model wherever n_groups > 1, as in Mamba-Codestral (huggingface/transformers#40861)."""
    from transformers.models.mamba2.modeling_mamba2 import MambaRMSNormGated

    return "group_size" in inspect.signature(MambaRMSNormGated).parameters


def grouped_norm_problem(n_groups: int) -> Optional[str]:
    """Why this transformers is no reference for a Mamba2 of `n_groups` groups, in one line; None if it is."""
    if n_groups == 1 or hf_norms_groups():
        return None
    import transformers

    return (f"transformers {transformers.__version__} norms Mamba2's gated RMSNorm over all {n_groups} groups at "
            "once, unlike mamba_ssm and these engines; upgrade transformers (5.24 norms each group)")


def hf_reference_problem(model_dir: Path) -> Optional[str]:
    """None when transformers can load `model_dir` as the model the engines run; else why not, in one line:
    not a transformers Mamba/Mamba2 checkpoint, or a grouped Mamba2 that this transformers norms ungrouped."""
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        return f"{model_dir} has no config.json (not the HF layout; only HF-layout sources load in transformers)"
    config = json.loads(config_path.read_text())
    model_type = config.get("model_type")
    if model_type not in HF_MODEL_TYPES:
        return (f"{config_path} has model_type={model_type!r}, not one of {sorted(HF_MODEL_TYPES)} (not the HF "
                "layout; only HF-layout sources load in transformers)")
    return grouped_norm_problem(config.get("n_groups", 1)) if model_type == "mamba2" else None


def spec_from_hf_config(config) -> ModelSpec:
    """The ModelSpec of a transformers MambaConfig / Mamba2Config."""
    common = dict(hidden_size=config.hidden_size, num_layers=config.num_hidden_layers,
                  vocab_size=config.vocab_size, state_size=config.state_size, conv_kernel=config.conv_kernel,
                  expand=config.expand, use_bias=config.use_bias, use_conv_bias=config.use_conv_bias,
                  tie_embeddings=config.tie_word_embeddings)
    if config.model_type == "mamba2":
        return ModelSpec(MAMBA2, head_dim=config.head_dim, n_groups=config.n_groups,
                         chunk_size=config.chunk_size, **common)
    return ModelSpec(MAMBA1, time_step_rank=config.time_step_rank, **common)


class _FallbackKernels(logging.Filter):
    """Drops transformers' fallback-kernel warnings, noting the packages they name; any other record passes."""

    def __init__(self) -> None:
        super().__init__()
        self.missing: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        found = _FALLBACK_WARNING.search(record.getMessage())
        if found:
            self.missing.add(found[1])
        return not found


@contextmanager
def quiet_transformers(show_progress: bool) -> Iterator[None]:
    """transformers as the run's `progress` setting wants it: its progress bars (loading weights) only where
    mambapipe's show. Its warnings that Mamba's kernels fall back to PyTorch (four, without mamba_ssm and
    causal_conv1d, as on any CPU machine) are expected, not a fault: they are said once, in one line of the run's log
    (its console and mambapipe.log), rather than as four of transformers' own lines on the console alone. Its other
    messages, errors among them, are untouched."""
    fallbacks = _FallbackKernels()
    kernels_logger = logging.getLogger(_KERNELS_LOGGER)
    kernels_logger.addFilter(fallbacks)
    try:
        with hub.progress_bars(show_progress, hub.transformers_progress_switches()):
            yield
    finally:
        kernels_logger.removeFilter(fallbacks)
    if fallbacks.missing:  # transformers warns once a process, so a second comparison in it says nothing
        log.info("eval.compare_hf: transformers runs Mamba's PyTorch reference kernels, correct but slower than "
                 "the optimized ones of %s (not installed)", " and ".join(sorted(fallbacks.missing)))


class _FirstTokenClock:
    """A generate() streamer noting when the first new token arrives (its first put() is the prompt)."""

    def __init__(self) -> None:
        self.puts = 0
        self.first_token_at: Optional[float] = None

    def put(self, value) -> None:
        self.puts += 1
        if self.puts == 2:
            self.first_token_at = time.perf_counter()

    def end(self) -> None:
        pass


class HFGenerator:
    """Greedy generation with transformers, behind the same interface the engines implement."""

    def __init__(self, model_dir: Path, dtype: str, device: str, max_batch_size: int = 2**31,
                 max_input_len: int = 2**31, max_seq_len: int = 2**31) -> None:
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=TORCH_DTYPES[dtype],
                                                          trust_remote_code=False).to(device).eval()
        self.spec = spec_from_hf_config(self.model.config)
        self.dtype, self.device = dtype, device
        self.limits = Limits(max_batch_size, max_input_len, max_seq_len)

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                 sampling: SamplingConfig = SamplingConfig(), eos_id: Optional[int] = None,
                 stop_at_eos: bool = True) -> GenerationOutput:
        if not sampling.greedy:
            raise ValueError("the HF reference only decodes greedily, as summarize.py's --test_hf")
        outputs, prefill, decode = [], [], []
        for prompt in prompts:
            new_ids, prefill_ms, decode_ms = self._generate_one(prompt, max_new_tokens, eos_id if stop_at_eos else None)
            outputs.append(new_ids)
            prefill.append(prefill_ms)
            decode.extend([decode_ms] if decode_ms is not None else [])
        return GenerationOutput(output_ids=outputs, prefill_ms=sum(prefill) / len(prefill),
                                decode_ms_per_step=sum(decode) / len(decode) if decode else 0.0,
                                peak_memory_mb=peak_memory_mb(self.device))

    def _generate_one(self, prompt: Sequence[int], max_new_tokens: int,
                      eos_id: Optional[int]) -> tuple[list[int], float, Optional[float]]:
        input_ids = torch.tensor([list(prompt)], device=self.device)  # (1, L)
        clock = _FirstTokenClock()
        start = time.perf_counter()
        # An explicit eos_token_id=None overrides the model's generation_config, so eos is then ignored.
        sequences = self.model.generate(
            input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens, do_sample=False,
            eos_token_id=eos_id, pad_token_id=eos_id if eos_id is not None else 0, streamer=clock)  # (1, L + T)
        end = time.perf_counter()
        new_ids = sequences[0, input_ids.shape[1]:].tolist()
        first = clock.first_token_at or end
        decode_ms = (end - first) * 1e3 / (len(new_ids) - 1) if len(new_ids) > 1 else None
        return new_ids, (first - start) * 1e3, decode_ms

    def close(self) -> None:
        del self.model
        if self.device == "cuda":
            torch.cuda.empty_cache()  # hand the reference's memory back before anything else loads
