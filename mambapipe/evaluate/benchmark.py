"""The benchmark task: random-token prompts over a (batch, input_len, output_len) grid, timing prefill
and decode, and comparing each decode step with the memory-bandwidth floor of the engine's own shape."""

from __future__ import annotations

import statistics
import time
from typing import Any, Optional

import torch
from tqdm import tqdm

from mambapipe.backends.base import Generator, SamplingConfig
from mambapipe.evaluate.floor import decode_step_traffic
from mambapipe.evaluate.scenarios import Scenario, limit_problem, scenario_label
from mambapipe.peak_memory import reset_peak_memory

PROMPT_TOKEN_HIGH = 1000  # prompts are randint(1, 1000), as mamba_ssm's benchmark script draws them


def random_prompts(scenario: Scenario, vocab_size: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    high = min(PROMPT_TOKEN_HIGH, vocab_size)
    return torch.randint(1, high, (scenario.batch, scenario.input_len), generator=gen).tolist()  # (B, L)


def time_scenario(generator: Generator, scenario: Scenario, warmup: int, repeats: int, seed: int,
                  bar: tqdm) -> dict[str, Optional[float]]:
    """Median prefill, decode-step and end-to-end times over `repeats` runs after `warmup` runs.
    End-of-sequence is ignored so every run decodes exactly `output_len` tokens; with one token there is no
    decode step, so no decode time (None, not the 0.0 the generators report)."""
    prompts = random_prompts(scenario, generator.spec.vocab_size, seed)
    prefill, decode, total, peak = [], [], [], 0.0
    reset_peak_memory(generator.device)  # this scenario's peak, not an earlier one's
    for i in range(warmup + repeats):
        start = time.perf_counter()
        out = generator.generate(prompts, scenario.output_len, SamplingConfig(greedy=True), eos_id=None,
                                 stop_at_eos=False)
        elapsed_ms = (time.perf_counter() - start) * 1e3 - out.probe_ms
        bar.update(1)
        if i < warmup:
            continue
        prefill.append(out.prefill_ms)
        decode.append(out.decode_ms_per_step)
        total.append(elapsed_ms)
        peak = max(peak, out.peak_memory_mb)
        bar.set_postfix(tok_s=f"{scenario.batch * scenario.output_len / (elapsed_ms / 1e3):.1f}")
    decode_ms = statistics.median(decode) if scenario.output_len > 1 else None  # token 1 comes from the prefill
    return {"prefill_ms": statistics.median(prefill), "decode_ms_per_step": decode_ms,
            "total_ms": statistics.median(total), "peak_memory_mb": peak}


def benchmark_row(generator: Generator, scenario: Scenario, timing: dict[str, Optional[float]], tp_size: int,
                  bytes_per_s: float) -> dict[str, Any]:
    # The native engine says which dtype its SSM state is in; a backend that does not keeps it in the model's.
    state_dtype = getattr(generator, "runtime_path", {}).get("ssm_state_dtype")
    traffic = decode_step_traffic(generator.spec, generator.dtype, scenario.batch, tp_size, state_dtype)
    floor_ms = traffic.floor_ms(bytes_per_s)
    decode_ms = timing["decode_ms_per_step"]
    return {"batch": scenario.batch, "input_len": scenario.input_len, "output_len": scenario.output_len,
            "prefill_ms": timing["prefill_ms"], "decode_ms_per_step": decode_ms,
            "tokens_per_s": scenario.batch * scenario.output_len / (timing["total_ms"] / 1e3),
            "floor_pct": floor_ms / decode_ms * 100 if decode_ms else None,
            "floor_ms_per_step": floor_ms, "decode_bytes_per_step": traffic.total_bytes,
            "total_ms": timing["total_ms"], "peak_memory_mb": timing["peak_memory_mb"]}


def skipped_row(scenario: Scenario, reason: str) -> dict[str, Any]:
    return {"batch": scenario.batch, "input_len": scenario.input_len, "output_len": scenario.output_len,
            "prefill_ms": None, "decode_ms_per_step": None, "tokens_per_s": None, "floor_pct": None,
            "skipped": reason}


def run_benchmark(generator: Generator, scenarios: list[Scenario], *, warmup: int, repeats: int, seed: int,
                  tp_size: int, bytes_per_s: float, show_progress: bool) -> list[dict[str, Any]]:
    """One row per scenario, in order; scenarios beyond the engine's limits get a `skipped` note."""
    problems = [limit_problem(generator.limits, s) for s in scenarios]
    bar = tqdm(total=problems.count(None) * (warmup + repeats), desc="benchmark", unit="run",
               disable=not show_progress)
    rows = []
    for scenario, problem in zip(scenarios, problems):
        if problem is not None:
            rows.append(skipped_row(scenario, problem))
            continue
        bar.set_description(f"benchmark {scenario_label(scenario)}")
        timing = time_scenario(generator, scenario, warmup, repeats, seed, bar)
        rows.append(benchmark_row(generator, scenario, timing, tp_size, bytes_per_s))
    bar.close()
    return rows
