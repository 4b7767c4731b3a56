"""The streaming writer produces files the safetensors library reads back exactly."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mambapipe.checkpoint import safetensors_io
from mambapipe.checkpoint.safetensors_io import PlannedTensor, StreamingSafetensorsWriter, read_header, read_tensor


def test_written_file_loads_with_safetensors(tmp_path):
    gen = torch.Generator().manual_seed(0)
    tensors = {"a": torch.randn(3, 5, generator=gen), "b.weight": torch.randn(7, generator=gen).half(),
               "c": torch.randn(2, 1, 3, 1, generator=gen).bfloat16(), "d": torch.randn(5, 3, generator=gen).t()}
    path = tmp_path / "x.safetensors"
    writer = StreamingSafetensorsWriter(path, [PlannedTensor(k, tuple(v.shape), v.dtype) for k, v in tensors.items()])
    for name, tensor in tensors.items():
        writer.write(name, tensor)
    digest = writer.close()
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = load_file(str(path))
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[k], v) and loaded[k].dtype == v.dtype for k, v in tensors.items())
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"format": "pt"}


def test_reader_matches_library(tmp_path):
    tensors = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "h": torch.ones(5, dtype=torch.float16)}
    save_file(tensors, str(tmp_path / "y.safetensors"))
    records = read_header(tmp_path / "y.safetensors")
    assert {k: (r.shape, r.dtype) for k, r in records.items()} == {"w": ((3, 4), torch.float32),
                                                                   "h": ((5,), torch.float16)}
    for key, record in records.items():
        assert torch.equal(read_tensor(tmp_path / "y.safetensors", record), tensors[key])


def test_writer_refuses_off_plan_tensors(tmp_path):
    writer = StreamingSafetensorsWriter(tmp_path / "z.safetensors", [PlannedTensor("a", (2,), torch.float16)])
    with pytest.raises(ValueError, match=r"got a \[3\] torch.float16, planned a \[2\]"):
        writer.write("a", torch.zeros(3, dtype=torch.float16))
    with pytest.raises(ValueError, match="1 planned tensors never written"):
        writer.close()
    writer.abort()
    assert not (tmp_path / "z.safetensors").exists()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_save_file_leaves_the_mode_the_umask_gives(tmp_path, umask, mode):
    """safetensors' own save_file leaves 0600 whatever the umask: a cache shared between users could not be read."""
    path = tmp_path / "w.safetensors"
    previous = os.umask(umask)
    try:
        safetensors_io.save_file({"w": torch.ones(2)}, path, metadata={"format": "pt"})
        assert os.umask(umask) == umask  # the umask is put back
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == mode
    assert torch.equal(load_file(str(path))["w"], torch.ones(2))
