"""Files written so that a crash never leaves a half-written one behind, and read safely."""

from __future__ import annotations

import io
import os
import re
import tempfile
import time
from typing import Any, Union

import torch

from automtl.errors import CheckpointError

PathLike = Union[str, os.PathLike]

#: Name prefix of the temporary files atomic writes go through (left behind only by a killed
#: process; :meth:`automtl.search.run.RunDir.prepare` removes them).
TEMPORARY_PREFIX = ".tmp-"

#: Testing hook: seconds to pause half-way through writing every file's data, so that a test
#: can kill a process while a write is under way (see tests/hostile/test_crash_safety.py).
_WRITE_PAUSE_ENV = "AUTOMTL_TEST_WRITE_PAUSE"


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync'd, then
    renamed over ``path``: readers see the old file or the new one, never a torn one."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, suffix="-" + os.path.basename(path), dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            pause = float(os.environ.get(_WRITE_PAUSE_ENV) or 0)
            if pause > 0:
                f.write(data[: len(data) // 2])
                f.flush()
                time.sleep(pause)
                f.write(data[len(data) // 2 :])
            else:
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


def load_location(map_location: Any) -> Any:
    """Where the loaders put saved tensors: ``map_location``, the CPU when it is None."""
    return "cpu" if map_location is None else map_location


def safe_torch_load(path: PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only, never code.
    Any failure (missing, truncated, tampered file) becomes a :class:`CheckpointError`."""
    try:
        return torch.load(os.fspath(path), map_location=map_location, weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{os.fspath(path)}: no such file") from exc
    except Exception as exc:  # unpickling errors come in many types
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            raise CheckpointError(f"{os.fspath(path)} is empty (0 bytes): it was never written completely, or it was truncated") from exc
        raise CheckpointError(_refusal(os.fspath(path), exc)) from exc


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _refusal(path: str, exc: BaseException) -> str:
    """Why ``path`` was refused, in a line: torch's messages are pages long, with advice on how
    to turn the safety off, which is not what a user of automtl should do with a stranger's file."""
    text = _ANSI.sub("", str(exc))
    code = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if code is not None:
        return (
            f"{path} cannot be loaded safely: it refers to the Python object {code.group(1)}, and loading it would "
            "run code (automtl reads tensors and plain values only). It was not written by automtl, or it was "
            "changed; do not load it with torch.load(weights_only=False) unless you trust its source"
        )
    detail = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, re.S)
    reason = " ".join(detail.group(1).split()) if detail else (text.strip().splitlines() or [""])[0]
    reason = reason.split(". ")[0]  # torch goes on with advice
    reason = f"{type(exc).__name__}: {reason.rstrip('.')}" if reason.strip() else type(exc).__name__
    return (
        f"{path} cannot be loaded safely ({reason}); it is truncated, from another "
        "program, or holds more than tensors and plain values"
    )
