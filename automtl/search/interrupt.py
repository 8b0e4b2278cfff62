"""SIGTERM and SIGINT during training: finish the step, write a checkpoint, stop cleanly.

A cluster scheduler ends a job with SIGTERM (then SIGKILL after a grace period); a user
presses Ctrl-C (SIGINT). Inside a stage, :class:`StopRequests` turns either into a request
that the training loop acts on after the current step: it writes a checkpoint of that step
and raises :class:`automtl.errors.RunInterrupted`, from which the run resumes exactly. A
second signal of the same kind acts at once, as it would without automtl (Ctrl-C twice
raises ``KeyboardInterrupt``).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, Dict, Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequests:
    """Context manager: while inside, SIGTERM/SIGINT are recorded in :attr:`received` instead
    of ending the process. Outside the main thread (where Python cannot install handlers) it
    does nothing."""

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                previous = signal.signal(sig, self._handle)
                # None: a handler installed outside Python, which cannot be put back; use the default
                self._previous[sig] = previous if previous is not None else signal.SIG_DFL
        return self

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        self.received = signum
        signal.signal(signum, self._previous[signum])  # a second one acts at once

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""
