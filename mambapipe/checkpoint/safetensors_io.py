"""Reading and writing the safetensors format one tensor at a time.

The format is an 8-byte little-endian header length, a JSON header mapping each tensor name to
{dtype, shape, data_offsets} (offsets relative to the end of the header), then the raw bytes.

Why not `safetensors.safe_open` / `save_file`: `save_file` needs every tensor in memory at once, and a
`safe_open` memory map keeps each page it touched resident until the handle closes, so a reader that
copies a tensor out of the map holds it twice. Reading each tensor's byte range straight into its own
buffer, and writing a header planned up front followed by tensors as they are produced, keeps peak
memory at about one tensor. The files written here load with `safetensors.safe_open` (tested).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Sequence

import safetensors.torch
import torch

from mambapipe.checkpoint.errors import DamagedFileError, UnreadableError

DTYPE_CODES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}
_HEADER_ALIGN = 8  # safetensors pads the header with spaces so the data starts 8-byte aligned


@dataclass(frozen=True)
class TensorRecord:
    """Where one stored tensor lives: absolute byte range in its file."""
    key: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    begin: int
    end: int


def read_header(path: Path) -> dict[str, TensorRecord]:
    """Parse and validate a safetensors header; a truncated, corrupt or unreadable file raises ConvertError."""
    try:
        return _read_header(path)
    except OSError as err:
        raise UnreadableError(path, err.strerror or str(err)) from None


def _read_header(path: Path) -> dict[str, TensorRecord]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise DamagedFileError(path, "truncated safetensors file (no header)")
        (header_len,) = struct.unpack("<Q", prefix)
        if 8 + header_len > size:
            raise DamagedFileError(path, f"truncated safetensors file (header needs {header_len} bytes, "
                                         f"file has {size - 8})")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DamagedFileError(path, f"corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise DamagedFileError(path, "corrupt safetensors header (not a JSON object)")
    base = 8 + header_len
    return {key: _record(path, key, meta, base, size) for key, meta in header.items() if key != "__metadata__"}


def _record(path: Path, key: str, meta: dict, base: int, size: int) -> TensorRecord:
    try:
        dtype = CODE_DTYPES[meta["dtype"]]
        shape = tuple(int(n) for n in meta["shape"])
        begin, end = (int(n) for n in meta["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise DamagedFileError(path, f"tensor {key!r} has an unreadable header entry {meta!r}") from None
    expected = math.prod(shape) * dtype.itemsize
    if end - begin != expected:
        raise DamagedFileError(path, f"tensor {key!r} spans {end - begin} bytes but shape {list(shape)} "
                                     f"{meta['dtype']} needs {expected}")
    if base + end > size:
        raise DamagedFileError(path, f"truncated safetensors file (tensor {key!r} ends at byte {base + end}, "
                                     f"file has {size})")
    return TensorRecord(key, shape, dtype, base + begin, base + end)


def read_tensor(path: Path, record: TensorRecord) -> torch.Tensor:
    """Read one tensor into a fresh CPU buffer (no memory map left behind)."""
    tensor = torch.empty(record.shape, dtype=record.dtype)
    buffer = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
    with open(path, "rb") as f:
        f.seek(record.begin)
        got = f.readinto(buffer)
    if got != record.end - record.begin:
        raise DamagedFileError(path, f"truncated safetensors file while reading tensor {record.key!r}")
    return tensor


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype


class StreamingSafetensorsWriter:
    """Writes a safetensors file whose layout is fixed up front; tensors then arrive one by one,
    in plan order, and go straight to disk. The sha256 of the file is computed on the way."""

    def __init__(self, path: Path, plan: Sequence[PlannedTensor]):
        self.path = path
        self._plan = list(plan)
        self._next = 0
        self._sha = hashlib.sha256()
        self._file: BinaryIO = open(path, "wb")
        try:
            self._emit(_encode_header(self._plan))
        except BaseException:  # the caller never gets a writer to abort, so clean up here
            self.abort()
            raise

    def write(self, name: str, tensor: torch.Tensor) -> None:
        if self._next >= len(self._plan):
            raise ValueError(f"{self.path.name}: unplanned tensor {name!r}")
        planned = self._plan[self._next]
        if (name, tuple(tensor.shape), tensor.dtype) != (planned.name, planned.shape, planned.dtype):
            raise ValueError(f"{self.path.name}: got {name} {list(tensor.shape)} {tensor.dtype}, planned "
                             f"{planned.name} {list(planned.shape)} {planned.dtype}")
        self._emit(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy())
        self._next += 1

    def close(self) -> str:
        """Finish the file; returns its sha256 hex digest."""
        if self._next != len(self._plan):
            raise ValueError(f"{self.path.name}: {len(self._plan) - self._next} planned tensors never written")
        self._file.close()
        return self._sha.hexdigest()

    def abort(self) -> None:
        """Close and delete a partial file."""
        self._file.close()
        self.path.unlink(missing_ok=True)

    def _emit(self, data) -> None:
        view = memoryview(data)
        self._file.write(view)
        self._sha.update(view)


def save_file(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors' `save_file`, leaving the file as readable as the umask lets any new file be.

    safetensors writes through a temporary file of mode 0600 that it renames into place, so without the chmod
    the weights in a cache shared between users (one SLURM cluster's) would be readable by their writer alone,
    while every other file of the cache follows the umask."""
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)
    path.chmod(0o666 & ~_umask())


def _umask() -> int:
    # Python can read the umask only by setting it: 0o077 for that instant, so that a file another thread
    # creates meanwhile is made private rather than world-writable.
    umask = os.umask(0o077)
    os.umask(umask)
    return umask


def _encode_header(plan: Sequence[PlannedTensor]) -> bytes:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}  # as safetensors.torch's save_file marks it
    offset = 0
    for t in plan:
        nbytes = math.prod(t.shape) * t.dtype.itemsize
        header[t.name] = {"dtype": DTYPE_CODES[t.dtype], "shape": list(t.shape),
                          "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    body = json.dumps(header, separators=(",", ":")).encode()
    body += b" " * (-len(body) % _HEADER_ALIGN)
    return struct.pack("<Q", len(body)) + body
