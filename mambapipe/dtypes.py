"""The torch dtype each dtype name of configs and checkpoint configs (models.DTYPE_NAMES) means."""

from __future__ import annotations

import torch

from mambapipe.models import DTYPE_NAMES

TORCH_DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}
