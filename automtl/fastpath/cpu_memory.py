"""Keep freed CPU memory in the process, so that large tensors do not cost page faults.

glibc's ``malloc`` serves every block above its mmap threshold (at most 32 MiB on 64-bit) with
a fresh ``mmap`` and returns it to the system on ``free``; torch's CPU allocator caches
nothing, so every such tensor is new memory, and its first write faults in every page. The
fast path holds all T tasks in one tensor, so on the CPU its activations cross that threshold
T times sooner than the reference path's; measured on MobileNetV2 (T = 5, batch 8, 128x128),
zeroing and first writes of these fresh blocks took most of the fast path's lead away
(``bench/supermodel_step.py --allocator both`` shows it). :func:`keep_freed_memory` tells
glibc to serve large blocks from the heap and to keep what is freed, as a long training run
wants. It changes the whole process, so nothing calls it behind a user's back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Optional

from automtl.errors import ConfigError

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4


def _libc() -> Optional[ctypes.CDLL]:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def keep_freed_memory(pad_bytes: int = 1 << 30) -> bool:
    """Serve large allocations from the heap and keep freed memory for reuse (glibc): no
    ``mmap`` for large blocks, no trimming of the heap, and ``pad_bytes`` of extra room each
    time it grows. The process's resident memory then stays near its peak. Returns False where
    the C library has no ``mallopt`` (not glibc), changing nothing."""
    if isinstance(pad_bytes, bool) or not isinstance(pad_bytes, int) or not 0 <= pad_bytes < 2**31:
        raise ConfigError(f"keep_freed_memory: pad_bytes must be an int in [0, 2**31) bytes, got {pad_bytes!r}")
    libc = _libc()
    if libc is None:
        return False
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, pad_bytes))
    return all(libc.mallopt(param, value) == 1 for param, value in settings)
