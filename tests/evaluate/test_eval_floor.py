"""The decode floor against performance-anchors.md §6 (H200, 4.3 TB/s, fp16)."""

from __future__ import annotations

import pytest

from mambapipe.evaluate.floor import H200_BYTES_PER_S, decode_step_traffic, device_bandwidth, measure_copy_bandwidth
from mambapipe.models import ModelSpec

MAMBA_2P8B = ModelSpec("Mamba1", hidden_size=2560, num_layers=64, vocab_size=50280, state_size=16)
MAMBA2_130M = ModelSpec("Mamba2", hidden_size=768, num_layers=24, vocab_size=50288, state_size=128)
CODESTRAL = ModelSpec("Mamba2", hidden_size=4096, num_layers=64, vocab_size=32768, state_size=128, n_groups=8,
                      tie_embeddings=False)


@pytest.mark.parametrize("spec, weights_gb", [(MAMBA_2P8B, 5.54), (MAMBA2_130M, 0.258), (CODESTRAL, 14.30)])
def test_weight_bytes_match_the_anchor_table(spec, weights_gb):
    assert decode_step_traffic(spec, "float16", batch=1).weight_bytes / 1e9 == pytest.approx(weights_gb, rel=0.005)


@pytest.mark.parametrize("spec, batch, floor_ms", [
    (MAMBA_2P8B, 1, 1.29), (MAMBA_2P8B, 8, 1.34), (MAMBA_2P8B, 64, 1.68),
    (MAMBA2_130M, 1, 0.065), (MAMBA2_130M, 64, 0.353), (CODESTRAL, 1, 3.39), (CODESTRAL, 64, 7.48)])
def test_floor_ms_per_step_matches_the_anchor_table(spec, batch, floor_ms):
    # §6 rounds the conv state up to K columns; the engine keeps K-1, hence the 2% tolerance at B=64.
    assert decode_step_traffic(spec, "float16", batch).floor_ms(H200_BYTES_PER_S) == pytest.approx(floor_ms, rel=0.02)


def test_state_and_logits_terms():
    traffic = decode_step_traffic(MAMBA_2P8B, "float16", batch=8)
    # state per sequence: (3 conv + 16 ssm) x 5120 channels x 64 layers, read and written, 2 bytes each
    assert traffic.state_bytes == 8 * 2 * (3 + 16) * 5120 * 64 * 2
    assert traffic.logits_bytes == 8 * 50280 * 2
    # an fp32 SSM state (the CPU default, or build.ssm_state_dtype=float32) moves 4 bytes a state element
    fp32_state = decode_step_traffic(MAMBA_2P8B, "float16", batch=8, ssm_state_dtype="float32")
    assert fp32_state.state_bytes == 8 * 2 * (3 * 2 + 16 * 4) * 5120 * 64
    assert fp32_state.weight_bytes == traffic.weight_bytes and fp32_state.logits_bytes == traffic.logits_bytes


def test_dtype_and_tensor_parallel_scaling():
    fp16 = decode_step_traffic(CODESTRAL, "float16", 8)
    assert decode_step_traffic(CODESTRAL, "float32", 8).total_bytes == pytest.approx(2 * fp16.total_bytes)
    assert decode_step_traffic(CODESTRAL, "bfloat16", 8, tp_size=2).total_bytes == pytest.approx(fp16.total_bytes / 2)
    with pytest.raises(ValueError, match="dtype"):
        decode_step_traffic(CODESTRAL, "int8", 1)


def test_bandwidth_sources():
    assert device_bandwidth("cpu", configured_gbps=100.0) == (100e9, "configured: eval.bandwidth_gbps=100")
    measured, source = device_bandwidth("cpu")
    assert source.startswith("measured") and measured > 1e8
    assert measure_copy_bandwidth("cpu", nbytes=8 << 20, repeats=2) > 1e8


def test_a_benchmark_row_counts_the_state_in_the_dtype_the_generator_keeps_it_in():
    """The native engine reports its SSM state dtype (float32 on the CPU by default); a backend that reports
    none is counted at the model dtype."""
    from types import SimpleNamespace

    from mambapipe.evaluate.benchmark import benchmark_row
    from mambapipe.evaluate.scenarios import Scenario

    timing = {"prefill_ms": 1.0, "decode_ms_per_step": 2.0, "total_ms": 10.0, "peak_memory_mb": 0.0}
    scenario = Scenario(batch=8, input_len=16, output_len=4)
    for runtime_path, state_dtype in (({"ssm_state_dtype": "float32"}, "float32"), ({}, "float16")):
        generator = SimpleNamespace(spec=MAMBA_2P8B, dtype="float16", runtime_path=runtime_path)
        row = benchmark_row(generator, scenario, timing, 1, H200_BYTES_PER_S)
        expected = decode_step_traffic(MAMBA_2P8B, "float16", 8, ssm_state_dtype=state_dtype)
        assert row["decode_bytes_per_step"] == expected.total_bytes
