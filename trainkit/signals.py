"""SIGINT and SIGTERM recorded instead of acted on at once.

The training loop checks the record at each chunk boundary (save, then stop);
the launcher passes it on to its worker processes. Outside the main thread
(where Python cannot install handlers) nothing is recorded.
"""

from __future__ import annotations

import signal
import threading
from typing import Any


class SignalRecorder:
    """A context manager recording SIGINT/SIGTERM in ``signum``.

    With ``second_interrupt_stops=True`` a second Ctrl-C raises
    ``KeyboardInterrupt`` at once: the way out when the first one's orderly
    stop takes too long.
    """

    def __init__(self, *, second_interrupt_stops: bool = False):
        self.signum: int | None = None
        self._second_interrupt_stops = second_interrupt_stops
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SignalRecorder:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._record)
        return self

    def _record(self, signum, frame) -> None:
        if self._second_interrupt_stops and self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
