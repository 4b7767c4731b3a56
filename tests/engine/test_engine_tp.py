"""Tensor parallelism on the CPU (gloo): ranks launched by mambapipe.parallel generate what TP=1 does."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from engine_support import MAMBA1, MAMBA2, build_from_hf, hf_model, write_trtllm_checkpoint

from mambapipe.backends.base import GenerationOutput, SamplingConfig
from mambapipe.engine.api import load_engine, read_native_engine_config
from mambapipe.models import ModelSpec
from mambapipe.parallel import RANK_ENV, failed_rank, launch, launch_command
from mambapipe.pipeline.step import StepError

PROMPTS = [[5, 17, 3, 88, 41, 9, 60], [12], [70, 2, 33, 8]]
NEW_TOKENS = 10
SAMPLED = SamplingConfig(greedy=False, temperature=1.0, top_k=30, seed=11)


def _launched(engine, tp, out, sample=False):
    args = ["--engine-dir", str(engine), "--prompt-ids", json.dumps(PROMPTS),
            "--max-new-tokens", str(NEW_TOKENS), "--out", str(out)]
    if sample:
        args += ["--sample", "--top-k", str(SAMPLED.top_k), "--seed", str(SAMPLED.seed)]
    launch(tp, "mambapipe.engine", args)
    return json.loads(out.read_text())["output_ids"]


@pytest.mark.parametrize("arch,tp_sizes,sample", [
    ("mamba2-g4", (2, 4), False),  # ngroups=4: each rank holds 2 or 1 whole groups
    ("mamba1", (2,), True),  # d_inner split with one all-reduce of the x_proj output; seeded sampling
])
def test_tensor_parallel_generation_equals_tp1(arch, tp_sizes, sample, tmp_path):
    spec = ModelSpec(**(MAMBA2 if arch.startswith("mamba2") else MAMBA1))
    model = hf_model(spec, seed=5)
    sampling = SAMPLED if sample else SamplingConfig()
    reference = load_engine(build_from_hf(model, spec, tmp_path)).generate(PROMPTS, NEW_TOKENS, sampling).output_ids
    for tp in tp_sizes:
        engine = build_from_hf(model, spec, tmp_path, tp=tp)
        assert _launched(engine, tp, tmp_path / f"tp{tp}.json", sample) == reference, f"tp={tp}"


def test_tensor_parallel_logits_match_tp1(tmp_path):
    """`--logits-out`: every position's logits of a tp=2 engine, saved by rank 0, against the tp=1 engine's."""
    spec = ModelSpec(**MAMBA2)
    model = hf_model(spec, seed=6)
    reference = load_engine(build_from_hf(model, spec, tmp_path)).score(PROMPTS)
    engine = build_from_hf(model, spec, tmp_path, tp=2)
    launch(2, "mambapipe.engine", ["--engine-dir", str(engine), "--prompt-ids", json.dumps(PROMPTS),
                                   "--max-new-tokens", "1", "--out", str(tmp_path / "out.json"),
                                   "--logits-out", str(tmp_path / "logits.pt")])
    ours = torch.load(tmp_path / "logits.pt")
    assert [t.shape for t in ours] == [(len(p), spec.vocab_size) for p in PROMPTS]
    for row, ref in zip(ours, reference):
        torch.testing.assert_close(row, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU's check (interpreted kernels, gloo); on GPUs "
                    "benchmarks/gpu_tp.py compares tp=2 with tp=1 (the device's Triton 3.6 interpreter rejects "
                    "the kernels' tensor loop bounds)")
@pytest.mark.parametrize("arch", ["mamba1", "mamba2-g4"])
def test_fused_batch1_decode_under_tensor_parallelism_matches_tp1(arch, tmp_path, monkeypatch):
    """The matrix-vector decode kernels on tp=2 ranks (their x_proj / out_proj partial sums all-reduced before
    use), under Triton's interpreter, against the tp=1 engine's torch decode on the same weights."""
    pytest.importorskip("triton", reason="the fused kernels need Triton (a test dependency)")
    spec = ModelSpec(**(MAMBA2 if arch.startswith("mamba2") else MAMBA1))
    model = hf_model(spec, seed=7)
    prompt, steps = [5, 17, 3, 88], [41, 9, 60]
    generator = load_engine(build_from_hf(model, spec, tmp_path))
    reference = [generator.model.prefill(torch.tensor([prompt]), torch.tensor([len(prompt)]), generator.state,
                                         torch.tensor([0]))]
    reference += [generator.model.decode(torch.tensor([t]), generator.state, 0) for t in steps]
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    launch(2, "tp_fused_rank", [str(build_from_hf(model, spec, tmp_path, tp=2)), json.dumps(prompt),
                                json.dumps(steps), str(tmp_path / "logits.pt")])
    for step, (ours, ref) in enumerate(zip(torch.load(tmp_path / "logits.pt"), reference, strict=True)):
        err = float((ours - ref).norm() / ref.norm())
        assert err < 1e-4, f"step {step}: relative logits error {err:.2e}"


def test_engine_cli_closes_its_generator_before_leaving_the_process_group(tmp_path, monkeypatch, capsys):
    """While CUDA graphs that captured NCCL collectives live, destroy_process_group hangs (pytorch#115388), so
    a rank of `python -m mambapipe.engine` closes its generator (dropping the graphs) before shutting down."""
    from mambapipe.engine import __main__ as cli

    spec = ModelSpec(**MAMBA1)
    engine = build_from_hf(hf_model(spec), spec, tmp_path)
    loaded, closed_at_shutdown = [], []

    def load_and_keep(*args):
        loaded.append(load_engine(*args))
        return loaded[-1]

    monkeypatch.setattr(cli, "load_engine", load_and_keep)
    monkeypatch.setattr(cli, "shutdown_distributed", lambda: closed_at_shutdown.append(loaded[0].model is None))
    monkeypatch.setattr("sys.argv", ["mambapipe.engine", "--engine-dir", str(engine), "--prompt-ids", "[[5, 17]]",
                                     "--max-new-tokens", "3"])
    cli.main()
    assert len(json.loads(capsys.readouterr().out)["output_ids"][0]) == 3
    assert closed_at_shutdown == [True]


@pytest.mark.parametrize("args,message", [
    (["--engine-dir", "missing", "--prompt-ids", "[[1]]"], "StepError: missing does not exist"),
    (["--engine-dir", ".", "--prompt-ids", "[[1]]"], "StepError: . has no config.json"),
    (["--prompt-ids", "[[1, 2"], "ValueError: --prompt-ids is not JSON"),
    (["--prompt-ids", "[1, 2]"], "ValueError: --prompt-ids must be a non-empty list of token-id lists"),
    (["--prompt-ids", "[]"], "ValueError: --prompt-ids must be a non-empty list of token-id lists"),
    (["--prompt-ids", "[[1, 1.9]]"], "ValueError: --prompt-ids must be lists of integer token ids; prompt 0 "
                                     "holds 1.9"),
    (["--prompt-ids", "[[1], [false]]"], "ValueError: --prompt-ids must be lists of integer token ids; prompt 1 "
                                         "holds false"),
    (["--prompt-ids", '[["a"]]'], "ValueError: --prompt-ids must be lists of integer token ids; prompt 0 holds \"a\""),
    (["--prompt-ids", "[[null]]"], "ValueError: --prompt-ids must be lists of integer token ids; prompt 0 holds null"),
    (["--prompt-ids", "[[1, 999]]"], "LimitError: prompt 0 has token id 999 outside the vocabulary"),
    (["--prompt-ids", "[[1]]", "--eos-id", "96"], "ValueError: --eos-id 96 is outside the engine's vocabulary of "
                                                  "96 token ids; give the tokenizer's end-of-sequence id, below 96"),
    (["--prompt-ids", "[[1]]", "--eos-id", "99999"], "ValueError: --eos-id 99999 is outside the engine's vocabulary"),
    (["--engine-dir", "ckpt_float32_tp1", "--prompt-ids", "[[1]]"],  # the convert output build_from_hf made
     "StepError: ckpt_float32_tp1 is not an engine directory"),
])
def test_engine_cli_bad_input_is_one_line(tmp_path, monkeypatch, capsys, args, message):
    from mambapipe.engine import __main__ as cli

    spec = ModelSpec(**MAMBA1)
    engine = build_from_hf(hf_model(spec), spec, tmp_path)
    argv = ["--engine-dir", str(engine), *args] if "--engine-dir" not in args else args
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the device case, on a GPU machine too
    monkeypatch.setattr("sys.argv", ["mambapipe.engine", *argv])
    assert cli.main() == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err, err


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_engine_cli_without_cuda_names_its_own_flag(monkeypatch, capsys, device):
    """Not load_engine's "use device=cpu or device=auto", the pipeline's override, which this command refuses."""
    from mambapipe.engine import __main__ as cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # on a GPU machine too
    monkeypatch.setattr("sys.argv", ["mambapipe.engine", "--engine-dir", "e", "--prompt-ids", "[[1]]",
                                     "--device", device])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith(f"argument --device: {device!r}: torch sees no CUDA device; use --device cpu or --device auto")


def test_engine_cli_whose_reader_went_away_ends_quietly(tmp_path, reader_gone):
    """`python -m mambapipe.engine ... | head -1`: not 'BrokenPipeError: [Errno 32] Broken pipe', the one line of a
    user's error, but exit 1 without a word, as mambapipe-cache ls and rich's other commands end."""
    spec = ModelSpec(**MAMBA1)
    engine = build_from_hf(hf_model(spec), spec, tmp_path)
    this_checkout = os.pathsep.join(filter(None, [str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH")]))
    ended = subprocess.run([sys.executable, "-m", "mambapipe.engine", "--engine-dir", str(engine), "--prompt-ids",
                            "[[1, 2]]", "--max-new-tokens", "2"], env={**os.environ, "PYTHONPATH": this_checkout},
                           stdout=reader_gone, stderr=subprocess.PIPE, text=True, timeout=120)
    assert (ended.returncode, ended.stderr) == (1, "")


def test_engine_cli_names_the_launch_an_engine_needs(tmp_path, monkeypatch, capsys):
    """A CLI user is told the torchrun command (not the pipeline's mambapipe.parallel.launch), and a tp=1 engine
    started under a launcher is told to run without one."""
    from mambapipe.engine import __main__ as cli

    spec = ModelSpec(**MAMBA1)
    model = hf_model(spec)
    for tp, world, command in [(2, 1, "torchrun --standalone --nproc-per-node 2 -m mambapipe.engine"),
                               (1, 2, "python -m mambapipe.engine")]:
        engine = build_from_hf(model, spec, tmp_path, tp=tp)
        # `world` ranks as a launcher's process group shows them to load_engine
        monkeypatch.setattr(cli, "init_distributed", lambda device, world=world: (0, world))
        monkeypatch.setattr(cli, "shutdown_distributed", lambda: None)
        monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.distributed, "get_world_size", lambda world=world: world)
        monkeypatch.setattr("sys.argv", ["mambapipe.engine", "--engine-dir", str(engine), "--prompt-ids", "[[1]]"])
        assert cli.main() == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"EngineLoadError: the engine was built for tp_size={tp} but {world} rank(s) are "
                              f"running; run it as `{command} ...`") and "\n" not in err, err


def test_a_cuda_index_beyond_the_visible_gpus_is_one_line(tmp_path, monkeypatch, capsys):
    from mambapipe.engine import __main__ as cli

    spec = ModelSpec(**MAMBA1)
    engine = build_from_hf(hf_model(spec), spec, tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # one GPU, on a CPU machine too
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr("sys.argv", ["mambapipe.engine", "--engine-dir", str(engine), "--prompt-ids", "[[1]]",
                                     "--device", "cuda:3"])
    assert cli.main() == 1
    assert capsys.readouterr().err.strip() == ("EngineLoadError: device=cuda:3 but torch sees 1 CUDA device(s); "
                                               "use cuda:0, or cuda")


@pytest.mark.parametrize("option,value,message", [
    ("--temperature", "-1", "'-1' is not a number >= 0"),
    ("--temperature", "nan", "'nan' is not a number >= 0"),
    ("--top-k", "-5", "'-5' is not an integer >= 0"),
    ("--top-k", "1.5", "'1.5' is not an integer >= 0"),
    ("--top-p", "1.5", "'1.5' is not a number in [0, 1]"),
    ("--top-p", "-0.1", "'-0.1' is not a number in [0, 1]"),
    ("--seed", "99999999999999999999999", "'99999999999999999999999' is not an integer in [0, 18446744073709551615]"),
    ("--seed", "18446744073709551616", "'18446744073709551616' is not an integer in [0, 18446744073709551615]"),
    ("--seed", "-1", "'-1' is not an integer in [0, 18446744073709551615]"),
    ("--seed", "1.5", "'1.5' is not an integer in [0, 18446744073709551615]"),
    ("--eos-id", "-5", "'-5' is not a token id (an integer >= 0)"),
    ("--eos-id", "x", "'x' is not a token id (an integer >= 0)"),
    ("--out", "/nonexistent/out.json", "directory /nonexistent does not exist"),
    ("--logits-out", "/nonexistent/l.pt", "directory /nonexistent does not exist"),
    ("--out", ".", "'.' is a directory"),
    ("--logits-out", "logits", "'logits' is a directory"),
    ("--logits-out", "afile/l.pt", "afile is not a directory"),
])
def test_engine_cli_rejects_bad_options_before_loading(tmp_path, monkeypatch, capsys, option, value, message):
    from mambapipe.engine import __main__ as cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "logits").mkdir()
    (tmp_path / "afile").write_text("")
    monkeypatch.setattr(cli, "load_engine", lambda *args: pytest.fail("loaded the engine despite a bad option"))
    monkeypatch.setattr("sys.argv", ["mambapipe.engine", "--engine-dir", "unused", "--prompt-ids", "[[1]]",
                                     "--sample", option, value])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert f"argument {option}: {message}" in capsys.readouterr().err


@pytest.mark.parametrize("options,named", [
    (["--temperature", "0.5"], "--temperature"),
    (["--top-k", "5", "--top-p", "0.9"], "--top-k, --top-p"),
    (["--temperature", "1"], "--temperature"),  # the default value, given explicitly: still refused
    (["--seed", "7"], "--seed"),
    (["--seed", "0"], "--seed"),  # its default too
])
def test_engine_cli_refuses_sampling_options_without_sample(monkeypatch, capsys, options, named):
    """Without --sample decoding is greedy, so a temperature or top-k given without it would be silently ignored."""
    from mambapipe.engine import __main__ as cli

    monkeypatch.setattr(cli, "load_engine", lambda *args: pytest.fail("loaded the engine despite a bad option"))
    monkeypatch.setattr("sys.argv", ["mambapipe.engine", "--engine-dir", "unused", "--prompt-ids", "[[1]]", *options])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().endswith(
        f"error: without --sample decoding is greedy and ignores {named}; add --sample, or leave {named} out")


class _LauncherEndsRank(BaseException):
    """What torchrun's SIGTERM does to a rank waiting for rank 0 to say the error: ends it."""


def test_a_bad_command_line_under_a_launcher_is_said_by_rank_0_alone(tmp_path, monkeypatch, capsys):
    """Every rank parses the same command line: under torchrun --nproc-per-node 2 the usage and error came twice.
    Rank 1 waits for the launcher to end it once rank 0 has said it, and says it itself only if not ended; each
    records it for launch's one line."""
    from mambapipe.engine import __main__ as cli
    from mambapipe.parallel import FAILURES_ENV

    def ended_by_the_launcher(seconds):
        assert seconds == cli.PEER_SAYS_IT_S
        raise _LauncherEndsRank

    monkeypatch.setenv(FAILURES_ENV, str(tmp_path))
    monkeypatch.setattr("sys.argv", ["mambapipe.engine", "--engine-dir", "unused", "--prompt-ids", "[[1]]",
                                     "--device", "gpu"])
    said = "error: argument --device: 'gpu' is not cpu, cuda, cuda:N or auto"
    for rank, sleep, outcome in (("1", ended_by_the_launcher, _LauncherEndsRank), ("1", lambda s: None, SystemExit),
                                 ("0", ended_by_the_launcher, SystemExit)):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setattr("time.sleep", sleep)
        with pytest.raises(outcome):
            cli.main()
        err = capsys.readouterr().err
        assert err.count(said) == (0 if outcome is _LauncherEndsRank else 1), (rank, err)
        assert json.loads((tmp_path / f"rank{rank}.json").read_text())["line"] == said.removeprefix("error: ")



def test_a_rank_no_launcher_started_says_its_bad_command_line_at_once(monkeypatch, capsys):
    """A process a scheduler gave a rank (RANK set) outside torchrun and mambapipe's launch, which would end it once
    rank 0 has spoken, says the error itself without waiting."""
    from mambapipe.engine import __main__ as cli
    from mambapipe.parallel import FAILURES_ENV

    for name in (FAILURES_ENV, "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr("time.sleep", lambda seconds: pytest.fail("waited for a rank 0 that no launcher started"))
    monkeypatch.setattr("sys.argv", ["mambapipe.engine", "--engine-dir", "unused", "--device", "gpu"])
    with pytest.raises(SystemExit):
        cli.main()
    assert "error: argument --device: 'gpu' is not cpu, cuda, cuda:N or auto" in capsys.readouterr().err


def test_under_a_users_mpirun_rank_1_leaves_a_bad_command_line_to_rank_0(monkeypatch, capsys):
    """`mpirun -n 2 python -m mambapipe.engine ... --top-k 3` (without --sample) printed the usage and error twice
    (Open MPI 4.1.4): mpirun, as torchrun, ends rank 1 once rank 0 has exited 2 with them."""
    from mambapipe.engine import __main__ as cli
    from mambapipe.parallel import FAILURES_ENV

    def ended_by_mpirun(seconds):
        raise _LauncherEndsRank

    for name in (FAILURES_ENV, "TORCHELASTIC_RUN_ID", "RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "1")
    monkeypatch.setattr("time.sleep", ended_by_mpirun)
    monkeypatch.setattr("sys.argv", ["mambapipe.engine", "--engine-dir", "unused", "--device", "gpu"])
    with pytest.raises(_LauncherEndsRank):
        cli.main()
    assert capsys.readouterr().err == ""

class _SamplingRecorder:
    """Stands in for load_engine and the generator it returns, keeping the SamplingConfig each generate got."""

    def __init__(self):
        self.sampling: list[SamplingConfig] = []
        self.spec = ModelSpec(**MAMBA1)  # as every Generator has: the CLI checks --eos-id against its vocabulary

    def __call__(self, *args):
        return self

    def generate(self, prompts, max_new_tokens, sampling, eos_id):
        self.sampling.append(sampling)
        return GenerationOutput(output_ids=[[1]], prefill_ms=0.0, decode_ms_per_step=0.0)

    def close(self):
        pass


@pytest.mark.parametrize("options,seed", [([], 0), (["--seed", "7"], 7), (["--seed", str(2**64 - 1)], 2**64 - 1)])
def test_engine_cli_samples_with_the_seed_given_else_0(monkeypatch, capsys, options, seed):
    from mambapipe.engine import __main__ as cli

    recorder = _SamplingRecorder()
    monkeypatch.setattr(cli, "load_engine", recorder)
    monkeypatch.setattr("sys.argv", ["mambapipe.engine", "--engine-dir", "unused", "--prompt-ids", "[[1]]",
                                     "--sample", *options])
    assert cli.main() == 0 and json.loads(capsys.readouterr().out)["output_ids"] == [[1]]
    assert recorder.sampling == [SamplingConfig(greedy=False, seed=seed)]


def test_a_checkpoint_given_as_engine_dir_is_named_as_not_an_engine(tmp_path):
    """A model checkpoint or a convert output has a config.json but no engine format: say what it is not and what
    to pass, not "a None engine"; an engine of another format still says to rebuild it."""
    spec = ModelSpec(**MAMBA1)
    model = hf_model(spec)
    model.config.save_pretrained(tmp_path / "hf")
    for directory in (tmp_path / "hf", write_trtllm_checkpoint(model, spec, tmp_path / "converted")):
        not_an_engine = re.escape(f"{directory} is not an engine directory: its config.json names no engine format "
                                  "(a model checkpoint or a convert output?); pass the build step's output")
        with pytest.raises(StepError, match="^" + not_an_engine):
            read_native_engine_config(directory)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps({"version": "mambapipe-native-1"}))
    with pytest.raises(ValueError, match=r"is a 'mambapipe-native-1' engine, not 'mambapipe-native-2'; rebuild it "
                                         r"with backend=native$"):
        read_native_engine_config(tmp_path / "old")


def test_engine_cli_keeps_the_sampling_conventions(tmp_path, monkeypatch, capsys):
    """temperature 0 and top_p 0 mean greedy (sampling.is_greedy), top_k 0 and top_p 1 mean off."""
    from mambapipe.engine import __main__ as cli

    spec = ModelSpec(**MAMBA1)
    engine = build_from_hf(hf_model(spec), spec, tmp_path)
    greedy = load_engine(engine).generate([[5, 17]], 3).output_ids
    for options in (["--temperature", "0"], ["--top-p", "0"], ["--top-k", "1"]):
        monkeypatch.setattr("sys.argv", ["mambapipe.engine", "--engine-dir", str(engine), "--prompt-ids", "[[5, 17]]",
                                         "--max-new-tokens", "3", "--sample", *options])
        assert cli.main() == 0
        assert json.loads(capsys.readouterr().out)["output_ids"] == greedy, options
    monkeypatch.setattr("sys.argv", ["mambapipe.engine", "--engine-dir", str(engine), "--prompt-ids", "[[5, 17]]",
                                     "--max-new-tokens", "3", "--sample", "--top-k", "0", "--top-p", "1"])
    assert cli.main() == 0


def test_damaged_engine_weights_are_one_line_saying_to_rebuild(tmp_path, monkeypatch, capsys):
    """A truncated rank file is a StepError, as a missing one is, so the evaluate step reports it in one line too."""
    from mambapipe.engine import __main__ as cli

    spec = ModelSpec(**MAMBA1)
    engine = build_from_hf(hf_model(spec), spec, tmp_path)
    weights = engine / "rank0.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    rebuild = r"; rebuild the engine \(force=\[build\]\)$"
    with pytest.raises(StepError, match=r"rank0\.safetensors are damaged \(.*\)" + rebuild):
        load_engine(engine)
    monkeypatch.setattr("sys.argv", ["mambapipe.engine", "--engine-dir", str(engine), "--prompt-ids", "[[1]]"])
    assert cli.main() == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"RankWeightsError: engine weights {weights} are damaged") and "\n" not in err, err
    weights.unlink()
    with pytest.raises(StepError, match=r"rank0\.safetensors are missing" + rebuild):
        load_engine(engine)


def test_engine_cli_device_auto_and_bad_device(tmp_path, monkeypatch, capsys):
    from mambapipe.engine import __main__ as cli

    spec = ModelSpec(**MAMBA1)
    engine = build_from_hf(hf_model(spec), spec, tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # auto means the CPU, on a GPU machine too
    monkeypatch.setattr("sys.argv", ["mambapipe.engine", "--engine-dir", str(engine), "--prompt-ids", "[[5, 17]]",
                                     "--max-new-tokens", "2", "--device", "auto"])
    assert cli.main() == 0
    assert len(json.loads(capsys.readouterr().out)["output_ids"][0]) == 2

    monkeypatch.setattr("sys.argv", ["mambapipe.engine", "--engine-dir", str(engine), "--prompt-ids", "[[5]]",
                                     "--device", "gpu"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert "argument --device: 'gpu' is not cpu, cuda, cuda:N or auto" in capsys.readouterr().err


def test_failed_rank_is_named(tmp_path):
    with pytest.raises(StepError, match=r"^rank \d of 2 \(torchrun -m mambapipe.engine\) failed: \S*missing does not "
                                        r"exist"):
        launch(2, "mambapipe.engine", ["--engine-dir", str(tmp_path / "missing"), "--prompt-ids", "[[1]]"])


def test_an_error_every_rank_meets_alike_is_said_once(tmp_path, capsys):
    """A tp=1 engine under 2 ranks: rank 0 says so, rank 1 does not say it again (under torchrun --nproc-per-node 4,
    QA saw it 4 times)."""
    spec = ModelSpec(**MAMBA1)
    engine = build_from_hf(hf_model(spec), spec, tmp_path)
    with pytest.raises(StepError, match=r"^rank \d of 2 .* failed: EngineLoadError: the engine was built for "
                                        r"tp_size=1 but 2 rank\(s\) are running"):
        launch(2, "mambapipe.engine", ["--engine-dir", str(engine), "--prompt-ids", "[[1]]"])
    assert capsys.readouterr().err.count("EngineLoadError: the engine was built for tp_size=1") == 1


def test_a_rank_other_than_0_says_its_own_weights_error_alone(tmp_path, monkeypatch, capsys):
    """Only rank 1 meets its damaged rank1.safetensors, so it says it; an engine built for another number of ranks
    every rank meets, and rank 0 says."""
    from mambapipe.engine import __main__ as cli

    spec = ModelSpec(**MAMBA1)
    engine = build_from_hf(hf_model(spec), spec, tmp_path, tp=2)
    (engine / "rank1.safetensors").write_bytes(b"damaged")
    monkeypatch.setattr(cli, "init_distributed", lambda device: (1, 2))
    monkeypatch.setattr(cli, "shutdown_distributed", lambda: None)
    monkeypatch.setenv("RANK", "1")
    for world, said in ((2, "RankWeightsError: engine weights "), (3, "")):
        monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.distributed, "get_world_size", lambda world=world: world)
        monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
        monkeypatch.setattr("sys.argv", ["mambapipe.engine", "--engine-dir", str(engine), "--prompt-ids", "[[1]]"])
        assert cli.main() == 1
        err = capsys.readouterr().err
        assert err.startswith(said) and (err.count("\n") == 1 if said else err == ""), (world, err)


def test_launch_commands_and_rank_environment():
    torchrun = launch_command(2, "mambapipe.evaluate.worker", ["--x", "1"])
    assert torchrun[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m"]
    mpirun = launch_command(4, "m", [], launcher="mpirun")
    assert mpirun[:4] == ["mpirun", "-n", "4", "--allow-run-as-root"]
    assert all(key in mpirun for key in RANK_ENV)
    assert RANK_ENV == {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
    assert failed_rank(["  rank      : 3 (local_rank: 3)"]) == 3
    assert failed_rank(["  Process name: [[5012,1],2]"]) == 2


@pytest.mark.skipif(shutil.which("mpirun") is not None, reason="mpirun is installed here")
def test_mpirun_missing_is_a_clear_error():
    with pytest.raises(StepError, match="mpirun"):
        launch(2, "mambapipe.engine", [], launcher="mpirun")


def test_rank_environment_reaches_the_ranks(monkeypatch):
    seen = {}

    def fake_run_tree(what, cmd, stream, on_line, env, **popen_kwargs):
        seen.update(env)
        return 0

    monkeypatch.setattr("mambapipe.parallel.run_tree", fake_run_tree)
    monkeypatch.setenv("NCCL_NVLS_ENABLE", "1")  # a user's setting must not switch NVLS back on
    launch(2, "m", [])
    assert {k: seen[k] for k in RANK_ENV} == RANK_ENV


@pytest.mark.parametrize("arch", ["mamba1", "mamba2-g4"])
def test_convert_step_shards_match_the_reference_layout(arch, tmp_path):
    """The convert step's TP shards are exactly what this runtime is tested on (reference §1.6/§1.7)."""
    from safetensors.torch import load_file

    from mambapipe.checkpoint import convert  # imported, not importorskip: a broken converter must fail here

    spec = ModelSpec(**(MAMBA2 if arch.startswith("mamba2") else MAMBA1))
    model = hf_model(spec, seed=5)
    model.save_pretrained(tmp_path / "hf")
    convert.convert_checkpoint(tmp_path / "hf", tmp_path / "theirs", "float32", 2, progress=False)
    write_trtllm_checkpoint(model, spec, tmp_path / "ours", "float32", 2)
    for rank in (0, 1):
        theirs = load_file(str(tmp_path / "theirs" / f"rank{rank}.safetensors"))
        ours = load_file(str(tmp_path / "ours" / f"rank{rank}.safetensors"))
        assert set(ours) <= set(theirs)
        for name, tensor in ours.items():
            torch.testing.assert_close(theirs[name], tensor, rtol=0, atol=0, msg=f"rank {rank} {name}")


def test_a_bare_cuda_device_names_the_ranks_own_gpu(monkeypatch):
    """A rank that set its GPU (init_distributed) loads its weights there: safetensors would read a bare
    "cuda" as cuda:0 while the generator's tensors go to the current device (the x2 run of issue 9 failed so)."""
    from mambapipe.engine.api import explicit_device

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert explicit_device("cuda") == "cuda:1"
    assert explicit_device("cuda:0") == "cuda:0" and explicit_device("cpu") == "cpu"


def test_engine_cli_stops_at_an_eos_id_at_the_top_of_the_vocabulary(tmp_path, monkeypatch, capsys):
    from mambapipe.engine import __main__ as cli

    spec = ModelSpec(**MAMBA1)
    engine = build_from_hf(hf_model(spec), spec, tmp_path)
    monkeypatch.setattr("sys.argv", ["mambapipe.engine", "--engine-dir", str(engine), "--prompt-ids", "[[5, 17]]",
                                     "--max-new-tokens", "3", "--eos-id", str(spec.vocab_size - 1)])
    assert cli.main() == 0
    assert len(json.loads(capsys.readouterr().out)["output_ids"][0]) <= 3


def test_engine_cli_seed_help_says_the_batch_shares_one_random_stream(monkeypatch, capsys):
    from mambapipe.engine import __main__ as cli

    monkeypatch.setattr("sys.argv", ["mambapipe.engine", "--help"])
    monkeypatch.setenv("COLUMNS", "400")  # argparse wraps the help at the terminal's width
    with pytest.raises(SystemExit):
        cli.main()
    assert "One random stream serves the whole batch, so a prompt's sampled tokens depend on the other prompts" \
        in capsys.readouterr().out
