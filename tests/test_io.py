"""Atomic writes: readers see the old file or the new one, with the usual permissions."""

import os

import pytest
import torch

from automtl.errors import CheckpointError
from automtl.io import atomic_torch_save, atomic_write_bytes, atomic_write_text, safe_torch_load


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert os.listdir(path.parent) == ["a.txt"]
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.bin"
    atomic_write_bytes(path, b"old")

    class Boom:
        def __len__(self):
            raise RuntimeError("boom")

    with pytest.raises(TypeError):
        atomic_write_bytes(path, Boom())
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.bin"]


def test_torch_round_trip_and_refusals(tmp_path):
    path = tmp_path / "c.pt"
    atomic_torch_save({"w": torch.ones(2), "step": 3}, path)
    loaded = safe_torch_load(path)
    assert loaded["step"] == 3 and torch.equal(loaded["w"], torch.ones(2))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        safe_torch_load(path)
    with pytest.raises(CheckpointError, match="no such file"):
        safe_torch_load(tmp_path / "missing.pt")
