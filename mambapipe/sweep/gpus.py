"""Which GPUs a sweep job may use: `CUDA_VISIBLE_DEVICES` for its child process.

Hydra assigns no GPUs (a launcher's job, say its maintainers), so each job leases a block of
`tp_size` GPUs from the ones visible to the sweep: it prefers block `job_num % blocks`, takes any free
block when that one is busy (parallel launchers finish jobs out of order), and waits when none is free.
A lease is one file lock per GPU, held while the job's child process runs, so jobs of different
`tp_size` never overlap on one GPU. A job that submitit's SLURM launcher made is a SLURM task whose GPUs are its
own: no leases. Jobs that share one SLURM allocation (a joblib sweep run by sbatch) lease its GPUs as above.
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

from filelock import FileLock, Timeout

POLL_SECONDS = 1.0


def visible_gpus() -> list[str]:
    """GPU ids this process may use: those of `CUDA_VISIBLE_DEVICES` that torch finds (a list copied onto a
    machine without them must not make CPU jobs queue for leases), else every device torch counts."""
    import torch  # only here: the parent of a CPU job never pays for importing torch

    found = torch.cuda.device_count()  # counts the listed devices only, as CUDA enumerates them
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(found)]
    return [gpu.strip() for gpu in listed.split(",") if gpu.strip()][:found]


def gpu_blocks(visible: Sequence[str], tp_size: int) -> list[list[str]]:
    """Disjoint blocks of `tp_size` GPUs; one block of everything when there are too few."""
    size = max(tp_size, 1)
    blocks = [list(visible[i:i + size]) for i in range(0, len(visible) - size + 1, size)]
    return blocks or [list(visible)]


def preference_order(job_num: int, n_blocks: int) -> list[int]:
    """Block `job_num % n_blocks` first, then the others in turn."""
    first = job_num % n_blocks
    return [(first + i) % n_blocks for i in range(n_blocks)]


def _try_lease(lock_dir: Path, block: Sequence[str], stack: ExitStack) -> bool:
    held = ExitStack()
    try:
        for gpu in block:
            lock = FileLock(str(lock_dir / f"gpu{gpu}.lock"))
            lock.acquire(timeout=0)
            held.callback(lock.release)
    except Timeout:
        held.close()
        return False
    stack.enter_context(held)
    return True


@contextmanager
def lease_gpus(job_num: int, tp_size: int, lock_root: Path, visible: Optional[Sequence[str]] = None,
               own_allocation: bool = False) -> Iterator[Optional[str]]:
    """Yield the `CUDA_VISIBLE_DEVICES` value for a job (None: no GPU visible, leave it unset),
    holding the job's GPUs until the block exits. `own_allocation`: the job is a SLURM task of its own, whose
    GPUs no other job sees (SLURM may number them from 0 in every task on a node: leases would only collide)."""
    visible = visible_gpus() if visible is None else list(visible)
    if not visible or own_allocation:
        yield ",".join(visible) if visible else None
        return
    blocks = gpu_blocks(visible, tp_size)
    lock_dir = lock_root / socket.gethostname()  # GPU ids are per host; the sweep dir may be shared
    lock_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        while True:
            chosen = next((blocks[i] for i in preference_order(job_num, len(blocks))
                           if _try_lease(lock_dir, blocks[i], stack)), None)
            if chosen is not None:
                break
            time.sleep(POLL_SECONDS)
        yield ",".join(chosen)
