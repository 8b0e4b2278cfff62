"""Files written so that a crash never leaves a half-written one behind, and read safely."""

from __future__ import annotations

import io
import os
import tempfile
from typing import Any, Union

import torch

from automtl.errors import CheckpointError

PathLike = Union[str, os.PathLike]


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync'd, then
    renamed over ``path``: readers see the old file or the new one, never a torn one."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """``torch.save`` through :func:`atomic_write_bytes`."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def safe_torch_load(path: PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only, never code.
    Any failure (missing, truncated, tampered file) becomes a :class:`CheckpointError`."""
    try:
        return torch.load(os.fspath(path), map_location=map_location, weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{os.fspath(path)}: no such file") from exc
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(
            f"{os.fspath(path)} cannot be loaded safely ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "it is truncated, from another program, or holds more than tensors and plain values"
        ) from exc
