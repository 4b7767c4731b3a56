"""CUDA C kernels compiled at run time by NVRTC through torch (`torch.cuda._compile_kernel`, torch 2.8 and later):
what scan_cuda.py and ssd_cuda.py share. Each kernel file is compiled with cuda_common.cuh's helpers ahead of it,
once per process and macro set; a failed compile logs one warning and leaves that kernel's work to Triton.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
from typing import Callable, Optional

import torch
from torch import Tensor

from mambapipe.engine.kernels import fastmath

log = logging.getLogger(__name__)


@functools.cache
def compiler_available() -> bool:
    """Whether this process can compile CUDA C at run time: a CUDA device, NVRTC through torch, and not under
    TRITON_INTERPRET=1 (where the kernels run as the interpreter's twins)."""
    return torch.cuda.is_available() and hasattr(torch.cuda, "_compile_kernel") and bool(fastmath.COMPILED)


def takes_half(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the CUDA C kernels can run half-precision (fp16 or bf16) work on this device."""
    return device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and compiler_available()


def aligned(t: Tensor) -> bool:
    """16-byte copies of t's rows: a 16-byte aligned start, row strides of whole 16-byte pieces, unit inner stride."""
    pieces = 16 // t.element_size()
    return t.stride(-1) == 1 and t.data_ptr() % 16 == 0 and all(s % pieces == 0 for s in t.stride()[:-1])


def compile_kernels(file: str, names: tuple[str, ...], macros: dict[str, int], fallback: str,
                    shared_bytes: int = 0, arch: Optional[str] = None) -> Optional[tuple[Callable, ...]]:
    """The kernels `names` of `file` (next to this module) with these macros defined, each allowed `shared_bytes`
    of dynamic shared memory, for the current device or the compute capability `arch` ("90a": Hopper's
    architecture-specific instructions); None, with one warning naming `fallback` (what runs instead), where NVRTC
    or that setting fails (a torch build without NVRTC or the setting, say)."""
    package = importlib.resources.files(__package__)
    source = package.joinpath("cuda_common.cuh").read_text() + package.joinpath(file).read_text()
    options = [f"-D{name}={value}" for name, value in macros.items()] + ["--std=c++17"]
    try:
        kernels = tuple(torch.cuda._compile_kernel(source, name, compute_capability=arch, nvcc_options=list(options))
                        for name in names)
        for kernel in kernels if shared_bytes else ():
            kernel.set_shared_memory_config(shared_bytes)
        return kernels
    except Exception as err:  # noqa: BLE001 - any failure to compile or load leaves the Triton kernels in charge
        log.warning("%s did not compile (%s); %s runs instead", file, err, fallback)
        return None
