"""What an artifact was made from: the params of the artifacts upstream of it, up to its download.

The runner records them in each manifest (`upstream`) when it makes the artifact, so that what the artifact is (its
model, its dtype) can be read from its own manifest once the artifacts it was made from are removed: by
`mambapipe-cache ls`, and by the plan, which measures why a step runs against artifacts of the same model alone. A
manifest written before they were recorded has them read along its inputs, from those of its upstream artifacts that
are still cached.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

# (step, key) -> the manifest of that cached artifact, None where it is not cached
Lookup = Callable[[tuple[str, str]], Optional[dict[str, Any]]]


def lineage(manifest: dict[str, Any], lookup: Lookup) -> dict[str, Any]:
    """The artifact's params, and those of the artifacts it was made from that its own lack: as its manifest records
    them, else as the cached upstream manifests have them (the nearest's, where two have one key); where neither
    is there, only the params it has."""
    made_from = dict(manifest.get("params", {}))
    if "upstream" in manifest:
        ancestors = [manifest["upstream"]]
    else:
        inputs = [lookup(ref) for ref in manifest.get("inputs", {}).items()]
        ancestors = [lineage(upstream, lookup) for upstream in inputs if upstream is not None]
    for params in ancestors:
        for key, value in params.items():
            made_from.setdefault(key, value)
    return made_from
