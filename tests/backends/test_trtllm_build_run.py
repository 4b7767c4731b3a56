"""Running trtllm-build: a fake `trtllm-build` script on PATH stands in for NVIDIA's (boundary test).
It checks that output is streamed line by line into the log while the build runs, that a failure
becomes a one-line StepError with the exit code and last error line, and the whole build() path."""

from __future__ import annotations

import json
import logging
import os
import stat
import sys

import pytest

import mambapipe.backends.trtllm as trtllm
from mambapipe.backends.base import BuildSettings
from mambapipe.backends.trtllm_build import last_error_line, run_build_command
from mambapipe.backends.trtllm_engine import read_engine_config
from mambapipe.models import ModelSpec
from mambapipe.pipeline.step import StepError

SETTINGS = BuildSettings(max_batch_size=8, max_input_len=924, max_seq_len=1024, device="cuda")
BENCH_SETTINGS = BuildSettings(max_batch_size=64, max_input_len=2048, max_seq_len=2176, device="cuda")

# Writes what trtllm-build writes: config.json {version, pretrained_config, build_config} + rank{r}.engine.
FAKE_BUILD = """
import argparse, json, pathlib, sys, time
parser = argparse.ArgumentParser()
for flag in ("checkpoint_dir", "output_dir", "paged_kv_cache", "gemm_plugin", "max_batch_size",
             "max_input_len", "max_seq_len", "paged_state", "mamba_conv1d_plugin", "remove_input_padding"):
    parser.add_argument("--" + flag)
parser.add_argument("--max_num_tokens", default="8192")
args = parser.parse_args()
print("[TRT-LLM] [I] Set mamba_conv1d_plugin to auto.", flush=True)
{behaviour}
ckpt = json.loads(pathlib.Path(args.checkpoint_dir, "config.json").read_text())
ckpt["dtype"] = globals().get("ckpt_dtype", ckpt["dtype"])  # a behaviour may build another dtype than asked
out = pathlib.Path(args.output_dir)
plugins = {{"mamba_conv1d_plugin": "auto", "remove_input_padding": True, "paged_state": True}}
build = {{"max_batch_size": int(args.max_batch_size), "max_input_len": int(args.max_input_len),
         "max_seq_len": int(args.max_seq_len), "max_num_tokens": int(args.max_num_tokens), "max_beam_width": 1,
         "plugin_config": plugins}}
(out / "config.json").write_text(json.dumps({{"version": "0.18.0", "pretrained_config": ckpt, "build_config": build}}))
for rank in range(ckpt["mapping"]["world_size"]):
    (out / f"rank{{rank}}.engine").write_bytes(b"engine")
pathlib.Path("model.cache").write_bytes(b"timing cache")  # trtllm-build writes it to the cwd
print("[TRT-LLM] [I] Total time of building all engines: 00:00:01", flush=True)
"""

# Prints one line, then waits for the test's log handler to acknowledge it: passes only if streamed.
WAIT_FOR_ACK = """
ack = pathlib.Path(args.output_dir, "ack")
for _ in range(200):
    if ack.exists():
        break
    time.sleep(0.025)
else:
    sys.exit("ERROR: nobody read the first line before the build finished")
"""

FAIL = """
print("[TRT-LLM] [W] Found pynvml==11.5.0", flush=True)
print("Traceback (most recent call last):", file=sys.stderr, flush=True)
print('  File "trtllm-build", line 8, in <module>', file=sys.stderr, flush=True)
print("AssertionError: paged_state requires the mamba conv1d plugin", file=sys.stderr, flush=True)
print("   ", flush=True)
sys.exit(3)
"""


def install_fake_build(tmp_path, monkeypatch, behaviour: str = "") -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "trtllm-build"
    script.write_text(f"#!{sys.executable}\n" + FAKE_BUILD.format(behaviour=behaviour))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def write_checkpoint(path, tp_size=1):
    path.mkdir()
    spec = ModelSpec("Mamba2", 64, 2, 512, 16, head_dim=16, n_groups=2, chunk_size=16)
    (path / "config.json").write_text(json.dumps(spec.to_trtllm_config("float16", tp_size)))
    for rank in range(tp_size):
        (path / f"rank{rank}.safetensors").write_bytes(b"")
    return path


class AckOnFirstLine(logging.Handler):
    def __init__(self, ack_path):
        super().__init__()
        self.ack_path = ack_path

    def emit(self, record):
        if "Set mamba_conv1d_plugin" in record.getMessage():
            self.ack_path.write_text("seen")


def test_output_streams_into_the_log_while_the_build_runs(tmp_path, monkeypatch, caplog):
    install_fake_build(tmp_path, monkeypatch, WAIT_FOR_ACK)
    ckpt, out = write_checkpoint(tmp_path / "ckpt"), tmp_path / "engine"
    out.mkdir()
    handler = AckOnFirstLine(out / "ack")
    logging.getLogger("mambapipe.trtllm").addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="mambapipe.trtllm"):
            run_build_command(trtllm.trtllm_build_command(ckpt, out, SETTINGS), cwd=out)
    finally:
        logging.getLogger("mambapipe.trtllm").removeHandler(handler)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("running: trtllm-build --checkpoint_dir")
    assert "[trtllm-build] [TRT-LLM] [I] Total time of building all engines: 00:00:01" in lines


def test_failure_is_one_line_with_exit_code_and_last_error(tmp_path, monkeypatch, caplog):
    install_fake_build(tmp_path, monkeypatch, FAIL)
    ckpt, out = write_checkpoint(tmp_path / "ckpt"), tmp_path / "engine"
    out.mkdir()
    with caplog.at_level(logging.INFO, logger="mambapipe.trtllm"), pytest.raises(StepError) as err:
        run_build_command(trtllm.trtllm_build_command(ckpt, out, SETTINGS), cwd=out)
    assert str(err.value) == ("trtllm-build exited with code 3: AssertionError: paged_state requires the mamba "
                              "conv1d plugin (full output in the run log)")
    assert "\n" not in str(err.value)
    assert any("Traceback (most recent" in r.getMessage() for r in caplog.records)  # stderr is streamed too


def test_missing_executable_says_how_to_install(tmp_path):
    with pytest.raises(StepError, match=r"no-such-trtllm-build is not on PATH; install TensorRT-LLM .*backend=native"):
        run_build_command(["no-such-trtllm-build"], cwd=tmp_path)


def test_a_build_killed_by_a_signal_says_so(tmp_path, monkeypatch):
    """Its last line was an info line, quoted as if it were the error, and -9 said nothing of the OOM killer."""
    install_fake_build(tmp_path, monkeypatch, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    with pytest.raises(StepError) as err:
        run_build_command(trtllm.trtllm_build_command(write_checkpoint(tmp_path / "ckpt"), tmp_path, SETTINGS),
                          cwd=tmp_path)
    assert str(err.value) == ("trtllm-build was killed by SIGKILL, most likely by the out-of-memory killer; its "
                              "output so far is in the run log")


def test_an_executable_that_cannot_start_is_not_called_missing(tmp_path, monkeypatch):
    """A trtllm-build whose interpreter is gone (a moved venv) is on PATH: 'not on PATH' would send the user astray."""
    install_fake_build(tmp_path, monkeypatch)
    script = tmp_path / "bin" / "trtllm-build"
    script.write_text("#!/no/such/venv/bin/python\n" + script.read_text().split("\n", 1)[1])
    with pytest.raises(StepError, match=rf"^{script} cannot be started \(No such file or directory: its interpreter or "
                                        r"a library is missing\); reinstall TensorRT-LLM$"):
        run_build_command(["trtllm-build"], cwd=tmp_path)


def test_last_error_line_prefers_error_lines():
    assert last_error_line(["a", "[E] Error: bad", "done"]) == "[E] Error: bad"
    assert last_error_line(["a", "b"]) == "b"
    assert last_error_line([]) == "(no output)"


@pytest.fixture
def trtllm_available(monkeypatch):
    """Pretend TensorRT-LLM and a GPU are here, so build() reaches the (fake) trtllm-build."""
    monkeypatch.setattr(trtllm, "unavailable_reason", lambda device: None)


def test_backend_build_produces_a_readable_engine(tmp_path, monkeypatch, trtllm_available):
    install_fake_build(tmp_path, monkeypatch)
    ckpt, out = write_checkpoint(tmp_path / "ckpt", tp_size=2), tmp_path / "staging" / "engine"
    facts = trtllm.BACKEND.build(ckpt, out, SETTINGS)
    assert facts["command"] == (f"trtllm-build --checkpoint_dir {ckpt} --paged_kv_cache disable --gemm_plugin auto "
                                f"--max_batch_size 8 --max_input_len 924 --max_seq_len 1024 --output_dir {out}")
    assert (facts["tp_size"], facts["inflight_batching"], facts["engine_version"]) == (2, True, "0.18.0")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.cache", "rank0.engine", "rank1.engine"]


def test_backend_build_asks_for_a_full_packed_batch_of_the_limits(tmp_path, monkeypatch, trtllm_available):
    """The bench recipes' limits (64 prompts of 2048 tokens) need max_num_tokens 131072, not trtllm-build's 8192."""
    install_fake_build(tmp_path, monkeypatch)
    ckpt, out = write_checkpoint(tmp_path / "ckpt"), tmp_path / "engine"
    facts = trtllm.BACKEND.build(ckpt, out, BENCH_SETTINGS)
    assert " --max_seq_len 2176 --max_num_tokens 131072 --output_dir " in facts["command"]
    assert read_engine_config(out).max_num_tokens == 64 * 2048


def test_backend_build_refuses_an_engine_with_fewer_tokens_per_step(tmp_path, monkeypatch, trtllm_available):
    """A release that clamped max_num_tokens would again prefill a full batch a few prompts at a time, under the key
    of an engine that does not."""
    install_fake_build(tmp_path, monkeypatch, "args.max_num_tokens = '16384'")
    with pytest.raises(StepError, match=r"wrote an engine other than the one asked for \(max_num_tokens 16384, "
                                        r"asked 131072\)"):
        trtllm.BACKEND.build(write_checkpoint(tmp_path / "ckpt"), tmp_path / "engine", BENCH_SETTINGS)


@pytest.mark.parametrize("behaviour, message", [
    ("args.max_seq_len = '256'", r"trtllm-build wrote an engine other than the one asked for \(max_seq_len 256, asked "
                                 r"1024\); see its output in the run log"),
    ("ckpt_dtype = 'bfloat16'", r"wrote an engine other than the one asked for \(dtype bfloat16, asked float16\)"),
    ("sys.exit(0)", r"trtllm-build exited 0 without writing a complete engine \(.* has no config\.json"),
])
def test_backend_build_refuses_an_engine_other_than_the_one_asked_for(tmp_path, monkeypatch, trtllm_available,
                                                                       behaviour, message):
    """The build key promises the request's dtype, ranks and limits: an engine that clamped one, cached under that
    key, failed every evaluation that reused it (or labelled its metrics with another dtype)."""
    install_fake_build(tmp_path, monkeypatch, behaviour)
    with pytest.raises(StepError, match=message):
        trtllm.BACKEND.build(write_checkpoint(tmp_path / "ckpt"), tmp_path / "engine", SETTINGS)


def test_backend_build_rejects_a_bad_checkpoint_before_running(tmp_path, monkeypatch, trtllm_available):
    install_fake_build(tmp_path, monkeypatch, "sys.exit('must not run')")
    ckpt = write_checkpoint(tmp_path / "ckpt", tp_size=2)
    (ckpt / "rank1.safetensors").unlink()
    with pytest.raises(StepError, match=r"lacks rank1\.safetensors \(world_size 2\); rerun the convert step"):
        trtllm.BACKEND.build(ckpt, tmp_path / "engine", SETTINGS)
    with pytest.raises(StepError, match="has no config.json"):
        trtllm.BACKEND.build(tmp_path, tmp_path / "engine", SETTINGS)
    (ckpt / "config.json").write_text("{")
    with pytest.raises(StepError, match="is not valid JSON"):
        trtllm.BACKEND.build(ckpt, tmp_path / "engine", SETTINGS)


def test_backend_build_refuses_when_unavailable(tmp_path):
    ckpt = write_checkpoint(tmp_path / "ckpt")
    with pytest.raises(StepError, match="backend=native"):
        trtllm.BACKEND.build(ckpt, tmp_path / "engine", BuildSettings(8, 924, 1024, device="cpu"))
