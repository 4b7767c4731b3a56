"""The summarize task, as TensorRT-LLM's summarize.py runs it: shuffled articles, `max_ite` batches of
`batch_size` prompts, greedy decoding of `output_len` tokens that stops at end-of-sequence, ROUGE."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from tqdm import tqdm

from mambapipe.backends.base import Generator, SamplingConfig
from mambapipe.evaluate import SUMMARIZE_TASK
from mambapipe.evaluate.data import INPUT_FIELD, REFERENCE_FIELD
from mambapipe.evaluate.prompts import TokenizerBundle, encode_prompt
from mambapipe.evaluate.rouge import ROUGE_VARIANT, rouge_scores
from mambapipe.peak_memory import reset_peak_memory


@dataclass(frozen=True)
class SummarizeSettings:
    batch_size: int
    max_ite: int
    max_input_length: int
    output_len: int


@dataclass(frozen=True)
class Sample:
    id: str
    input_ids: list[int]
    reference: str


@dataclass
class GenerationRun:
    """Every sample's new tokens plus the timing of the timed batches."""
    output_ids: list[list[int]] = field(default_factory=list)
    seconds: float = 0.0
    prefill_ms: list[float] = field(default_factory=list)
    decode_ms: list[tuple[float, int]] = field(default_factory=list)  # (ms per step, steps) per batch
    peak_memory_mb: float = 0.0

    @property
    def output_tokens(self) -> int:
        return sum(len(ids) for ids in self.output_ids)

    def speed(self) -> dict[str, Optional[float]]:
        steps = sum(n for _, n in self.decode_ms)  # none when every sample stopped at its first token
        return {"tokens_per_s": self.output_tokens / self.seconds if self.seconds else 0.0,
                "ttft_ms": sum(self.prefill_ms) / len(self.prefill_ms) if self.prefill_ms else 0.0,
                "decode_ms_per_step": sum(ms * n for ms, n in self.decode_ms) / steps if steps else None,
                "peak_memory_mb": self.peak_memory_mb, "generate_s": self.seconds}


def prepare_samples(articles, bundle: TokenizerBundle, settings: SummarizeSettings) -> list[list[Sample]]:
    """The first `max_ite` batches of the (already shuffled) dataset, tokenised as summarize.py does."""
    count = min(len(articles), settings.max_ite * settings.batch_size)  # as summarize.py does (task.py says so)
    rows = articles.select(range(count))
    samples = [Sample(str(row["id"]), encode_prompt(bundle.tokenizer, row[INPUT_FIELD], settings.max_input_length),
                      row[REFERENCE_FIELD]) for row in rows]
    return [samples[i:i + settings.batch_size] for i in range(0, len(samples), settings.batch_size)]


def generate_batches(generator: Generator, batches: list[list[Sample]], output_len: int,
                     eos_id: Optional[int], label: str, show_progress: bool) -> GenerationRun:
    """Greedy generation over all batches after one untimed warm-up prompt (summarize.py's dataset[0:1]),
    with a progress bar showing the running tokens/s."""
    reset_peak_memory(generator.device)  # this generator's peak: the HF reference runs after the engine
    generator.generate([batches[0][0].input_ids], output_len, SamplingConfig(greedy=True), eos_id)
    run = GenerationRun()
    bar = tqdm(batches, desc=f"summarize ({label})", unit="batch", disable=not show_progress)
    for batch in bar:
        start = time.perf_counter()
        out = generator.generate([s.input_ids for s in batch], output_len, SamplingConfig(greedy=True), eos_id)
        run.seconds += time.perf_counter() - start - out.probe_ms / 1e3
        run.output_ids.extend(out.output_ids)
        run.prefill_ms.append(out.prefill_ms)
        run.decode_ms.append((out.decode_ms_per_step, max(len(ids) for ids in out.output_ids) - 1))
        run.peak_memory_mb = max(run.peak_memory_mb, out.peak_memory_mb)
        bar.set_postfix(tok_s=f"{run.output_tokens / run.seconds:.1f}")
    return run


def decode_outputs(bundle: TokenizerBundle, output_ids: Sequence[Sequence[int]]) -> list[str]:
    return bundle.tokenizer.batch_decode([list(ids) for ids in output_ids], skip_special_tokens=True)


def token_agreement(ours: Sequence[Sequence[int]], reference: Sequence[Sequence[int]]) -> float:
    """Share of output positions where both produced the same token; a position only one of them
    produced (one stopped earlier) counts as a mismatch."""
    same = sum(a == b for x, y in zip(ours, reference) for a, b in zip(x, y))
    total = sum(max(len(x), len(y)) for x, y in zip(ours, reference))
    return same / total if total else 1.0


def summarize_metrics(samples: list[Sample], texts: list[str], run: GenerationRun) -> dict[str, Any]:
    scores = rouge_scores(texts, [s.reference for s in samples])
    return {"task": SUMMARIZE_TASK, **scores, "rouge_variant": ROUGE_VARIANT, "samples": len(samples),
            "input_tokens": sum(len(s.input_ids) for s in samples), "output_tokens": run.output_tokens,
            **run.speed()}


def prediction_records(samples: list[Sample], texts: list[str], run: GenerationRun) -> list[dict[str, Any]]:
    return [{"id": s.id, "input_len": len(s.input_ids), "output_ids": list(ids), "output_text": text,
             "reference": s.reference} for s, ids, text in zip(samples, run.output_ids, texts)]
