"""SIGTERM/SIGINT during training: finish the current call, checkpoint, stop cleanly."""

from __future__ import annotations

import signal
import threading
from types import FrameType


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving a checkpoint; re-run to resume."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class StopRequests:
    """Catches SIGTERM and SIGINT while training runs, and remembers the first one.

    A preemption notice is a SIGTERM: rather than dying mid-step, the loop
    sees `requested` after the current call, saves a checkpoint and stops.
    Outside the main thread (where Python cannot install handlers) it does
    nothing. A second Ctrl-C falls through to Python's default.

    Example:
        >>> with StopRequests() as stop:
        ...     stop.requested
        >>> # None
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signum

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
