"""Where the seconds of one job went: the ``phases`` of ``run.json``.

A user pays for the whole job, not for the training loop alone. Each phase is
wall time in this process: ``start_up`` (the process start, or the call of
:func:`trainkit.train`, until TensorFlow and trainkit are imported), ``build``
(data, model, optimizer, the shape check), ``checks`` (what only the built run
shows, before anything is written: one rehearsal training step, which traces
the training function, and one evaluation step; the callbacks made; the sources
compared), ``first_step`` (the first training call: the pipeline's start, and
the tracing where no rehearsal ran, as on a cluster), ``training`` (the other training
calls and their bookkeeping), ``validation``, ``checkpoint_saves``,
``final_evaluation`` and ``export``. ``total`` is their sum.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

ORDER = ("start_up", "build", "checks", "first_step", "training", "validation", "checkpoint_saves", "final_evaluation", "export")


class Phases:
    """Seconds per phase, added up as the job runs."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        if name not in ORDER:
            raise ValueError(f"unknown phase {name!r}; phases are: {', '.join(ORDER)}")
        self.seconds[name] = self.seconds.get(name, 0.0) + max(0.0, seconds)

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def as_dict(self) -> dict[str, float]:
        """The phases measured, in job order, and their ``total`` (seconds, 3 decimals)."""
        out = {name: round(self.seconds[name], 3) for name in ORDER if name in self.seconds}
        out["total"] = round(sum(self.seconds.values()), 3)
        return out
