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

Without it, the fast path keeps its stacked tensors small on the CPU instead: a node whose
tasks' tensors together would exceed :func:`cpu_stack_limit` runs per task, as the reference
path runs it (:func:`set_cpu_stack_limit` changes the limit; :func:`keep_freed_memory` lifts it).
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

#: the default of :func:`cpu_stack_limit`. Per node, the fast path's stacked tensors are T times
#: one task's; glibc maps blocks above 32 MiB afresh at best, and the executor's intermediate
#: tensors (mixing, gradients) come on top of a node's input and output. Measured on MobileNetV2
#: (T = 5, batch 8, 128x128, 2 threads, default malloc), against the reference path: no limit
#: 0.80x, 32 MiB 0.89x, 16 MiB 1.01x, 8 MiB 1.02x, 4 MiB 0.96x (more changes of layout).
DEFAULT_CPU_STACK_LIMIT = 8 << 20

_state = {"limit": DEFAULT_CPU_STACK_LIMIT, "kept": False}


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
    kept = all(libc.mallopt(param, value) == 1 for param, value in settings)
    _state["kept"] = _state["kept"] or kept
    return kept


def set_cpu_stack_limit(nbytes: Optional[int]) -> None:
    """On the CPU, a node whose stacked tensors would exceed ``nbytes`` runs per task on the fast
    path (default :data:`DEFAULT_CPU_STACK_LIMIT`); ``None`` lifts the limit, e.g. where malloc
    keeps freed memory anyway (jemalloc, tcmalloc). Process-wide, like the allocator it is about."""
    if nbytes is not None and (isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0):
        raise ConfigError(f"set_cpu_stack_limit: the limit must be a byte count (an int >= 0) or None, got {nbytes!r}")
    _state["limit"] = nbytes


def format_bytes(nbytes: float) -> str:
    """``"42.0 MiB"``, ``"12.0 KiB"``: sizes as the fast path's reports give them."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{int(nbytes)} B"


def cpu_stack_limit() -> Optional[int]:
    """The largest stacked tensor (bytes) a fast-path node may hold on the CPU before it runs per
    task; None when there is no limit (lifted, or after :func:`keep_freed_memory`)."""
    return None if _state["kept"] else _state["limit"]
