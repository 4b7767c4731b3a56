"""The benchmark scripts refuse what they cannot run in one line, before any work: a GPU script on a machine
without the GPUs it needs, and cpu_generate.py's or convert_memory.py's arguments that would only fail later
(a NaN row, a traceback from deep inside)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import convert_memory  # noqa: E402
import cpu_generate  # noqa: E402
import gpu_common  # noqa: E402
import gpu_tp  # noqa: E402


@pytest.mark.parametrize("seen, gpus, line", [(0, 1, "needs a CUDA GPU; torch sees 0"),
                                               (1, 2, "needs 2 CUDA GPUs; torch sees 1")])
def test_require_cuda_exits_with_one_line(monkeypatch, capsys, seen, gpus, line):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: seen)
    with pytest.raises(SystemExit) as exit_info:
        gpu_common.require_cuda(gpus)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and line in err


def test_require_cuda_passes_with_enough_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    gpu_common.require_cuda(2)


@pytest.mark.parametrize("flag", ["--repeats", "--batches", "--new-tokens", "--prompt-len"])
def test_cpu_generate_refuses_zero(capsys, flag):
    with pytest.raises(SystemExit) as exit_info:
        cpu_generate.parse_args([flag, "0"])
    assert exit_info.value.code == 2
    assert "'0': expected a positive integer" in capsys.readouterr().err


def test_cpu_generate_refuses_cuda_without_a_gpu(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(SystemExit) as exit_info:
        cpu_generate.parse_args(["--device", "cuda"])
    assert exit_info.value.code == 2
    assert "needs a CUDA GPU; torch sees 0" in capsys.readouterr().err


def test_cpu_generate_refuses_negative_threads(capsys):
    """torch.set_num_threads(-1) is a RuntimeError traceback after the header is printed."""
    with pytest.raises(SystemExit) as exit_info:
        cpu_generate.parse_args(["--threads", "-1"])
    assert exit_info.value.code == 2
    assert "'-1': expected 0 (torch's default) or a positive integer" in capsys.readouterr().err
    assert cpu_generate.parse_args(["--threads", "0"]).threads == 0


def test_cpu_generate_defaults_parse():
    args = cpu_generate.parse_args([])
    assert (args.batches, args.repeats, args.device) == ([1, 8], 3, "cpu")


@pytest.mark.parametrize("run", ["nosuch:1", "tiny_mamba2", "tiny_mamba2:0"])
def test_convert_memory_refuses_a_malformed_run(capsys, run):
    with pytest.raises(SystemExit) as exit_info:
        convert_memory.parse_args(["--runs", run])
    assert exit_info.value.code == 2
    assert "expected MODEL:TP" in capsys.readouterr().err


def test_convert_memory_refuses_a_split_the_model_cannot_take(capsys):
    """mamba2_130m has one group: converting it 2 ways fails, but only after its 247 MB source is written."""
    with pytest.raises(SystemExit) as exit_info:
        convert_memory.parse_args(["--runs", "mamba2_130m:2"])
    assert exit_info.value.code == 2
    assert ("'mamba2_130m:2': cannot split mamba2_130m 2 ways: n_groups=1 is not divisible by tp_size=2; "
            "pick a TP that divides them") in capsys.readouterr().err


def test_convert_memory_a_failed_child_exits_with_its_last_error_line():
    with pytest.raises(SystemExit) as exit_info:
        convert_memory.child("raise ValueError('first line\\nlast line')")
    assert exit_info.value.code == "a measuring child failed: last line"


def test_convert_memory_runs_parse():
    assert convert_memory.parse_args(["--runs", "tiny_mamba2:2"]).runs == [("tiny_mamba2", 2)]
    assert convert_memory.parse_args([]).runs[0] == ("mamba_2p8b", 1)


def test_convert_memory_refuses_an_unknown_dtype(capsys):
    """Writing the source would refuse it, with a ValueError traceback."""
    with pytest.raises(SystemExit) as exit_info:
        convert_memory.parse_args(["--dtype", "fp8"])
    assert exit_info.value.code == 2
    assert "argument --dtype: invalid choice: 'fp8'" in capsys.readouterr().err


def test_convert_memory_a_workdir_it_cannot_create_is_one_line(monkeypatch, tmp_path):
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(sys, "argv", ["convert_memory.py", "--workdir", str(tmp_path / "file" / "bench")])
    with pytest.raises(SystemExit) as exit_info:
        convert_memory.main()
    assert exit_info.value.code == (f"cannot create --workdir {tmp_path}/file/bench: Not a directory; "
                                    "pick a directory you can write")


@pytest.mark.parametrize("tp", ["0", "-1"])
def test_gpu_tp_refuses_a_size_below_one(monkeypatch, capsys, tp):
    """--tp 0 needs no GPU, so it passed require_cuda and ran the recipe, which failed in a traceback."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(SystemExit) as exit_info:
        gpu_tp.parse_args(["--tp", tp])
    assert exit_info.value.code == 2
    assert f"argument --tp: {tp!r}: expected a positive integer" in capsys.readouterr().err


def test_gpu_tp_a_failed_recipe_is_one_line(monkeypatch, tmp_path):
    """The pipeline says why on standard error; the script adds a line, not a CalledProcessError traceback."""
    monkeypatch.setattr(sys, "executable", "false")  # the recipe's command: `false -m mambapipe ...`, exit 1
    with pytest.raises(SystemExit) as exit_info:
        gpu_tp.run_recipe(tmp_path, 2, "codestral_7b")
    assert exit_info.value.code == "the recipe at tp 2 failed (exit 1): its reason is above"


@pytest.mark.parametrize("script, args, line", [
    ("gpu_step_sweep.py", ["--device", "cpu", "--models", "tiny_mamba2,nosuch"],
     "argument --models: 'nosuch' not in configs/model; pick from codestral_7b,"),
    ("gpu_hf_check.py", ["--device", "cpu", "--models", "tiny_mamba2", "--prompt-length", "0"],
     "argument --prompt-length: '0': expected a positive integer"),
    ("gpu_decode_bound.py", ["--device", "cpu", "--models", "tiny_mamba2", "--no-engine"],
     "--device cpu runs the read kernels in Triton's interpreter: set TRITON_INTERPRET=1"),
])
def test_gpu_script_refuses_on_the_cpu_in_one_line(script, args, line):
    """Each ran (on the CPU, and on a GPU past the device check) until a FileNotFoundError, an IndexError or
    Triton's "0 active drivers" traceback."""
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, str(root / "benchmarks" / script), *args], env=env,
                          capture_output=True, text=True, timeout=300)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and "Traceback" not in done.stderr and line in last, done.stderr
