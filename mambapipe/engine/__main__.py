"""Generate with a built engine from the command line; runs alone or as one rank under a launcher.

    python -m mambapipe.engine --engine-dir DIR --prompt-ids '[[1, 2, 3]]' --max-new-tokens 20 --out out.json
    python -m torch.distributed.run --standalone --nproc-per-node 2 -m mambapipe.engine --engine-dir DIR ...

Only rank 0 writes `--out` (JSON: output_ids, prefill_ms, decode_ms_per_step, peak_memory_mb, probe_ms) and
`--logits-out` (torch.save of a list with each prompt's fp32 logits at every position, (len, V):
`EngineGenerator.score`). Only rank 0 says an error that every rank meets alike (a bad argument, an engine built for
another number of ranks); a rank says its own (its weights file damaged).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import NoReturn

import torch

from mambapipe.backends.base import SamplingConfig
from mambapipe.engine.api import EngineLoadError, load_engine
from mambapipe.engine.weights import RankWeightsError
from mambapipe.models import ModelSpec
from mambapipe.parallel import FAILURES_ENV, init_distributed, launcher_rank, record_failure, shutdown_distributed
from mambapipe.pipeline.report import end_quietly_on_broken_pipe
from mambapipe.pipeline.resolve import resolve_device
from mambapipe.pipeline.step import StepError

# What a wrong engine directory, device or prompt raises (json's decode error and LimitError are ValueErrors):
# one line each, not a traceback.
USER_ERRORS = (ValueError, OSError, StepError, EngineLoadError)


# How long a rank other than 0 with a bad command line waits before saying it: rank 0 parses the same line, says it
# and exits, and the launcher then ends this rank. Exiting at once, it could have the launcher end rank 0 unheard.
PEER_SAYS_IT_S = 10.0


class _RankArgumentParser(argparse.ArgumentParser):
    """Says a bad command line once under a launcher, on rank 0: every rank parses the same one, so under `torchrun
    --nproc-per-node N` the usage and error came N times. A rank other than 0 says it only if still running after
    PEER_SAYS_IT_S (an error of its own: a directory its host lacks). Each rank records it for
    mambapipe.parallel.launch, whose one line then quotes it instead of an exit code."""

    def error(self, message: str) -> NoReturn:
        record_failure(StepError(message), known=True)
        if _rank_zero_says_it():
            time.sleep(PEER_SAYS_IT_S)
        super().error(message)


def _rank_zero_says_it() -> bool:
    """Whether this rank leaves a bad command line to rank 0: under torchrun, Open MPI's mpirun (which sets
    OMPI_COMM_WORLD_SIZE) or mambapipe.parallel.launch, which end every rank once one fails. A process a scheduler
    gave a rank (RANK or PMI_RANK set, no such launcher) says it at once."""
    under_a_launcher = any(name in os.environ for name in ("TORCHELASTIC_RUN_ID", "OMPI_COMM_WORLD_SIZE", FAILURES_ENV))
    return under_a_launcher and launcher_rank() != 0


def main() -> int:
    parser = _RankArgumentParser(prog="python -m mambapipe.engine", description=__doc__.split("\n")[0])
    parser.add_argument("--engine-dir", required=True,
                        help="a built engine: the build step's artifact, as a run's run.json names it")
    parser.add_argument("--device", default="cpu", type=_device,
                        help="cpu (default), cuda, cuda:N, or auto (cuda where torch sees a GPU, else cpu)")
    parser.add_argument("--prompt-ids", required=True, help="JSON list of token-id lists")
    parser.add_argument("--max-new-tokens", type=int, default=20, help="per prompt (default 20)")
    parser.add_argument("--eos-id", type=_token_id, default=None,
                        help="stop a prompt's generation at this token id (within the engine's vocabulary)")
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    # Defaults None, SamplingConfig's own (temperature 1, top-k 0, top-p 1, seed 0) standing in: a value given without
    # --sample can then be told from no value and refused, instead of being ignored by the greedy decode.
    parser.add_argument("--temperature", type=_temperature, help=">= 0 (default 1); 0 decodes greedily; needs --sample")
    parser.add_argument("--top-k", type=_top_k, help=">= 0 (default 0, off); 1 decodes greedily; needs --sample")
    parser.add_argument("--top-p", type=_top_p, help="in [0, 1] (default 1, off); 0 decodes greedily; needs --sample")
    parser.add_argument("--seed", type=_seed,
                        help=f"the sampling's random seed, an integer in [0, {MAX_SEED}] (default 0); needs --sample. "
                             "One random stream serves the whole batch, so a prompt's sampled tokens depend on the "
                             "other prompts given with it")
    parser.add_argument("--out", default=None, type=_output_file,
                        help="write the JSON (output_ids, prefill_ms, decode_ms_per_step, peak_memory_mb, probe_ms) "
                             "here instead of standard output")
    parser.add_argument("--logits-out", default=None, type=_output_file,
                        help="also save every prompt position's logits here")
    args = parser.parse_args()
    _refuse_sampling_options_without_sample(parser, args)
    try:
        _generate(args)
    except BrokenPipeError:  # the JSON's reader went away (`| head -1`): not the user's error an OSError is
        end_quietly_on_broken_pipe()
    except USER_ERRORS as err:
        record_failure(err, known=True)  # for mambapipe.parallel.launch, which quotes it
        if launcher_rank() == 0 or isinstance(err, RankWeightsError):
            print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 1
    except Exception as err:
        record_failure(err, known=False)
        raise
    return 0


def _device(text: str) -> str:
    """The --device value as torch names it; `auto` is decided here, as the pipeline's device=auto is."""
    if text == "auto":
        return resolve_device("auto")[0]
    if text == "cpu":
        return text
    if text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        if not torch.cuda.is_available():  # said here: load_engine's message names the pipeline's device=cpu
            raise argparse.ArgumentTypeError(f"{text!r}: torch sees no CUDA device; use --device cpu or --device auto")
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not cpu, cuda, cuda:N or auto")


SAMPLING_OPTIONS = ("temperature", "top_k", "top_p", "seed")


def _refuse_sampling_options_without_sample(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    given = [f"--{name.replace('_', '-')}" for name in SAMPLING_OPTIONS if getattr(args, name) is not None]
    if given and not args.sample:
        names = ", ".join(given)
        parser.error(f"without --sample decoding is greedy and ignores {names}; add --sample, or leave {names} out")


def _sampling(args: argparse.Namespace) -> SamplingConfig:
    given = {name: getattr(args, name) for name in SAMPLING_OPTIONS if getattr(args, name) is not None}
    return SamplingConfig(greedy=not args.sample, **given)


# The greedy and "off" values named below are SamplingConfig's and sampling.is_greedy's conventions.
def _temperature(text: str) -> float:
    return _finite_in(text, 0, math.inf, "a number >= 0 (0 decodes greedily)")


def _top_p(text: str) -> float:
    return _finite_in(text, 0, 1, "a number in [0, 1] (1 is off, 0 decodes greedily)")


def _top_k(text: str) -> int:
    if not text.isdecimal():
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 0 (0 is off, 1 decodes greedily)")
    return int(text)


MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes 64 bits


def _seed(text: str) -> int:
    if not (text.isdecimal() and int(text) <= MAX_SEED):
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer in [0, {MAX_SEED}]")
    return int(text)


def _token_id(text: str) -> int:
    """An integer >= 0; whether the engine's vocabulary holds it is checked once the engine is loaded."""
    if not text.isdecimal():
        raise argparse.ArgumentTypeError(f"{text!r} is not a token id (an integer >= 0)")
    return int(text)


def _finite_in(text: str, low: float, high: float, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan  # then the one message below, not argparse's "invalid _top_p value"
    if not (math.isfinite(value) and low <= value <= high):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def _output_file(text: str) -> str:
    """A path that can be opened as a file in an existing directory, checked before the engine loads rather than
    when writing, after it generated."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; give a file's path, e.g. one inside it")
    if not path.parent.exists():
        raise argparse.ArgumentTypeError(f"directory {path.parent} does not exist; create it or pick another path")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{path.parent} is not a directory; pick another path")
    return text


def _prompts(text: str) -> list[list[int]]:
    try:
        prompts = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--prompt-ids is not JSON ({err}); pass a list of token-id lists, e.g. '[[1, 2, 3]]'") \
            from None
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, list) for p in prompts):
        raise ValueError(f"--prompt-ids must be a non-empty list of token-id lists, e.g. '[[1, 2, 3]]', got {text!r}")
    for index, prompt in enumerate(prompts):
        # `type(...) is int`: JSON's true and false load as bools, an int subclass, and 1.9 would be truncated
        not_ids = [token for token in prompt if type(token) is not int]
        if not_ids:
            raise ValueError(f"--prompt-ids must be lists of integer token ids; prompt {index} holds "
                             f"{json.dumps(not_ids[0])}")
    return prompts


def _check_eos_id(eos_id: int | None, spec: ModelSpec) -> None:
    """An id outside the vocabulary is never generated: the run would silently go on to --max-new-tokens."""
    if eos_id is not None and eos_id >= spec.vocab_size:
        raise ValueError(f"--eos-id {eos_id} is outside the engine's vocabulary of {spec.vocab_size} token ids; "
                         f"give the tokenizer's end-of-sequence id, below {spec.vocab_size}")


def _generate(args: argparse.Namespace) -> None:
    prompts = _prompts(args.prompt_ids)
    engine_dir = Path(args.engine_dir).expanduser()
    rank, _ = init_distributed(args.device)
    try:
        # Closed before the process group goes: while CUDA graphs that captured NCCL collectives live,
        # destroy_process_group hangs (pytorch/pytorch#115388; closing drops the graphs).
        with closing(load_engine(engine_dir, args.device)) as generator:
            _check_eos_id(args.eos_id, generator.spec)
            result = generator.generate(prompts, args.max_new_tokens, _sampling(args), args.eos_id)
            logits = generator.score(prompts) if args.logits_out else None  # every rank: the TP collectives
        if rank == 0:
            if logits is not None:
                with open(args.logits_out, "wb") as file:  # open's OSError is one line; torch.save's RuntimeError not
                    torch.save(logits, file)
            text = json.dumps(dataclasses.asdict(result))
            if args.out:
                Path(args.out).write_text(text)
            else:
                print(text)
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    sys.exit(main())
