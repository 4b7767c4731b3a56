"""What the native engine can build and run, decided from its settings alone (no weights read): the build step's
plan-time checks, and the engine's own as it builds and loads. torch is imported only for a CUDA device, which
resolving the config has imported it for already (pipeline.resolve.resolve_device): a CPU plan does without it."""

from __future__ import annotations

from typing import Optional

from mambapipe.models import DTYPE_NAMES

# -2: build_config's ssm_state_dtype is the dtype the engine really keeps its state in (-1 wrote "float32"
# while the CUDA path kept it in the model dtype), and build_config gained fused_conv_ssm. That option is
# gone (its kernel made no measured case faster); an older -2 engine that still has the key loads as before
# and the key is ignored, without a bump: it chose only a decode kernel, not what the engine computes.
ENGINE_FORMAT = "mambapipe-native-2"
SSM_STATE_DTYPES = ("auto", *DTYPE_NAMES)


def limits_problem(max_batch_size: int, max_input_len: int, max_seq_len: int) -> Optional[str]:
    """Why these engine limits cannot work (None when they can)."""
    limits = {"max_batch_size": max_batch_size, "max_input_len": max_input_len, "max_seq_len": max_seq_len}
    if below_one := [f"build.{key} must be >= 1, got {value}" for key, value in limits.items() if value < 1]:
        return "; ".join(below_one)
    if max_input_len > max_seq_len:
        return (f"build.max_input_len={max_input_len} exceeds build.max_seq_len={max_seq_len}; "
                f"raise build.max_seq_len or lower build.max_input_len")
    return None


def no_cuda_device(device: str = "cuda") -> str:
    return f"device={device} but torch sees no CUDA device; use device=cpu or device=auto"


def dtype_problem(dtype: str, device: str) -> Optional[str]:
    """Why `device` (cpu, cuda or cuda:N) cannot run `dtype` (None when it can)."""
    if dtype not in DTYPE_NAMES:
        return f"dtype {dtype!r} is not one of {sorted(DTYPE_NAMES)}"
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return no_cuda_device(device)
        index, count = device.partition(":")[2], torch.cuda.device_count()
        if index and int(index) >= count:  # else torch's "invalid device ordinal" at the first allocation
            choices = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
            return f"device={device} but torch sees {count} CUDA device(s); use {choices}, or cuda"
        if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            return "this GPU cannot run bfloat16 (needs compute capability >= 8.0); use dtype=float16"
    return None


def ssm_state_dtype_problem(setting: str, device: str) -> Optional[str]:
    """Why build.ssm_state_dtype=`setting` cannot run on `device` (None when it can)."""
    if setting not in SSM_STATE_DTYPES:
        return f"build.ssm_state_dtype={setting!r} is not one of {list(SSM_STATE_DTYPES)}; pick one of those"
    if setting == "bfloat16" and device == "cuda" and _gpu_lacks_bf16():
        return "this GPU cannot hold a bfloat16 SSM state (needs compute capability >= 8.0); use float16 or float32"
    return None


def _gpu_lacks_bf16() -> bool:
    """Whether torch sees a GPU that cannot hold bfloat16 (False without one: dtype_problem says there is none)."""
    import torch

    return torch.cuda.is_available() and not torch.cuda.is_bf16_supported()


def resolve_ssm_state_dtype(setting: str, dtype: str, device: str) -> str:
    """auto: the model dtype on CUDA (the Triton kernels' choice, as mamba_ssm's: half the state traffic
    of fp32, the dominant decode term of Mamba2 at batch), float32 on the CPU torch path."""
    if setting != "auto":
        return setting
    return dtype if device == "cuda" else "float32"
