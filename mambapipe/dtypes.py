"""The dtype names configs and checkpoint configs use, and the torch dtype each one means."""

from __future__ import annotations

import torch

TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
