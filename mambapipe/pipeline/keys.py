"""Content-addressed cache keys: what a step's output depends on, hashed."""

from __future__ import annotations

import hashlib
import json
from typing import Any

SHORT = 12  # hex digits shown in plans and tables


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def step_key(name: str, version: int, params: dict[str, Any], inputs: dict[str, str],
             environment: dict[str, Any]) -> str:
    """sha256 of the step's name and version, the params it declared, the keys of the artifacts it
    consumes, and the facts outside the config it reported (`environment`)."""
    material = {"step": name, "version": version, "params": params, "inputs": inputs,
                "environment": environment}
    return hashlib.sha256(canonical_json(material).encode()).hexdigest()


def short(key: str) -> str:
    return key[:SHORT]
