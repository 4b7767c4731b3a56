"""Peak memory and wall time of `convert_checkpoint` on full-size synthetic checkpoints.

Each conversion runs in a fresh child process that reports its own peak RSS (VmHWM of /proc/self/status:
getrusage's ru_maxrss would include the parent's peak, which a child inherits across fork+exec), next to
a child that only imports the converter (the interpreter baseline). The target from the convert issue:
peak RSS < 2 x the largest single source tensor + baseline.

    python benchmarks/convert_memory.py                        # mamba_2p8b tp1, codestral_7b tp1 and tp2
    python benchmarks/convert_memory.py --runs mamba_2p8b:1    # one run
Sources (fp16, ~5.5 GB and ~14.6 GB) are written once under --workdir and reused; outputs are deleted.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from mambapipe.dtypes import TORCH_DTYPES

REPO = Path(__file__).resolve().parent.parent
MiB = 1024**2
MODELS = sorted(p.stem for p in (REPO / "configs" / "model").glob("*.yaml"))

_PEAK_RSS = """
def peak_rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
"""
_CHILD_CONVERT = _PEAK_RSS + """
import json, sys, time
from mambapipe.checkpoint import convert_checkpoint
start = time.perf_counter()
convert_checkpoint(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), progress=False)
print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss": peak_rss()}))
"""
_CHILD_BASELINE = _PEAK_RSS + """
import json
import mambapipe.checkpoint, torch, tqdm
torch.ones(8).numpy()  # the writer's path into numpy
print(json.dumps({"peak_rss": peak_rss()}))
"""


def model_spec(name: str):
    from mambapipe.models import ModelSpec
    arch = OmegaConf.load(REPO / "configs" / "model" / f"{name}.yaml").arch
    return ModelSpec(**OmegaConf.to_container(arch))


def largest_tensor_bytes(spec, itemsize: int) -> int:
    from mambapipe.checkpoint.naming import expected_source_shapes
    return max(math.prod(shape) for shape in expected_source_shapes(spec).values()) * itemsize


def ensure_source(name: str, workdir: Path, dtype: str) -> Path:
    from mambapipe.synthetic import write_synthetic_checkpoint
    src = workdir / f"{name}-{dtype}"
    if not (src / "config.json").is_file():  # config.json is written last: its presence means complete
        shutil.rmtree(src, ignore_errors=True)
        write_synthetic_checkpoint(model_spec(name), src, dtype, seed=0)
    return src


def _itemsize(dtype: str) -> int:
    import torch
    return getattr(torch, dtype).itemsize


def child(code: str, *args: str) -> dict:
    """The JSON that `code`, run in a fresh interpreter, prints last. A failed child exits this script with its
    last error line: the child's stderr is captured, so a traceback here would only say that it failed."""
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        sys.exit(f"a measuring child failed: {why}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(name: str, tp: int, workdir: Path, dtype: str, baseline: int) -> dict:
    src, out = ensure_source(name, workdir, dtype), workdir / f"out-{name}-tp{tp}"
    shutil.rmtree(out, ignore_errors=True)
    result = child(_CHILD_CONVERT, str(src), str(out), dtype, str(tp))
    written = sum(f.stat().st_size for f in out.iterdir())
    shutil.rmtree(out)
    largest = largest_tensor_bytes(model_spec(name), _itemsize(dtype))  # source and output share --dtype
    target = 2 * largest + baseline
    return {"run": f"{name} tp{tp}", "largest": largest, "target": target, "written": written, **result,
            "ok": result["peak_rss"] < target}


def print_table(rows: list[dict], baseline: int) -> None:
    print(f"\ninterpreter baseline (import torch + mambapipe.checkpoint): {baseline / MiB:.0f} MiB")
    head = f"{'run':<18}{'largest tensor':>16}{'target 2x+base':>16}{'peak RSS':>12}{'wall s':>9}{'GB/s':>7}  ok"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['run']:<18}{r['largest'] / MiB:>12.0f} MiB{r['target'] / MiB:>12.0f} MiB"
              f"{r['peak_rss'] / MiB:>8.0f} MiB{r['seconds']:>9.1f}{r['written'] / r['seconds'] / 1e9:>7.2f}"
              f"  {'yes' if r['ok'] else 'NO'}")


def model_and_tp(text: str) -> tuple[str, int]:
    """An argparse type: 'codestral_7b:2' -> ("codestral_7b", 2), checked before any source is written (the
    split too, as the pipeline's plan checks tp_size: the converter would refuse it only once the source is)."""
    name, _, tp = text.partition(":")
    if name not in MODELS or not tp.isdigit() or int(tp) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected MODEL:TP, TP a positive integer and MODEL one of "
                                         f"{', '.join(MODELS)}")
    problems = model_spec(name).tp_problems(int(tp))
    if problems:
        raise argparse.ArgumentTypeError(f"{text!r}: cannot split {name} {tp} ways: {'; '.join(problems)}; "
                                         "pick a TP that divides them")
    return name, int(tp)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # argparse runs `type` over a string default only, so the list default is given already parsed
    parser.add_argument("--runs", nargs="+", type=model_and_tp,
                        default=[("mamba_2p8b", 1), ("codestral_7b", 1), ("codestral_7b", 2)],
                        help="model:tp pairs (model = configs/model/<name>.yaml)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mambapipe-convert-bench"))
    # checked here: writing the source is what would refuse a wrong one, with a traceback
    parser.add_argument("--dtype", default="float16", choices=list(TORCH_DTYPES), help="source and output dtype")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    try:
        args.workdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        sys.exit(f"cannot create --workdir {args.workdir}: {error.strerror}; pick a directory you can write")
    baseline = child(_CHILD_BASELINE)["peak_rss"]
    rows = []
    for name, tp in args.runs:
        rows.append(measure(name, tp, args.workdir, args.dtype, baseline))
        print(json.dumps(rows[-1]), flush=True)
    print_table(rows, baseline)


if __name__ == "__main__":
    main()
