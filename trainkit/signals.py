"""SIGINT and SIGTERM recorded instead of acted on at once.

The training loop checks the record at each chunk boundary (save, then stop);
the launcher passes it on to its worker processes. Outside the main thread
Python cannot install handlers: a signal reaches only the main thread. A
training running in a background thread is stopped the same orderly way by
:func:`request_stop`, called from any thread (a notebook's own interrupt, a
button, a handler of the main thread's).
"""

from __future__ import annotations

import signal
import threading
from typing import Any

_active: set[SignalRecorder] = set()
_active_lock = threading.Lock()


def request_stop(signum: int = signal.SIGINT) -> int:
    """Ask every training in this process to save a checkpoint and stop, as ``signum`` would.

    Returns how many trainings were asked. Each stops at its next step boundary
    (raising :class:`trainkit.Interrupted` for SIGINT, in its own thread).
    """
    with _active_lock:
        recorders = list(_active)
    for recorder in recorders:
        recorder.signum = recorder.signum or signum
    return len(recorders)


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
        with _active_lock:
            # A stop already asked of an enclosing recorder (a sweep between two
            # trainings) applies to this one from its start.
            self.signum = self.signum or next((r.signum for r in _active if r.signum), None)
            _active.add(self)
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._record)
        return self

    def _record(self, signum, frame) -> None:
        if self._second_interrupt_stops and self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        with _active_lock:
            _active.discard(self)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
