"""Lines for the person at the terminal, from any layer: through :mod:`logging`.

Low layers (the run directory, the runtime, data pipelines, distribution) report
notes and warnings here instead of reaching up to the training sinks. The
``trainkit`` logger prints each message bare -- warnings (and worse) on stderr,
the rest on stdout -- and does not propagate, so a notebook's or an
application's logging set-up shows nothing twice. To silence or redirect
trainkit's lines: ``logging.getLogger("trainkit")`` (its level, its handlers).
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

LOGGER_NAME = "trainkit"


class _BareLines(logging.Handler):
    """The message alone on the current ``sys.stderr``/``sys.stdout`` (looked up
    at each line, so captured and redirected streams work)."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
        try:
            print(record.getMessage(), file=stream, flush=True)
        except Exception:  # a closed stream at exit: never raise from a report
            self.handleError(record)


def _logger() -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h, _BareLines) for h in logger.handlers):
        logger.addHandler(_BareLines())
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def warn(text: str) -> None:
    """A warning or note on stderr (never silenced by trainer.progress)."""
    _logger().warning(text)


def say(text: str, stream: TextIO | None = None) -> None:
    """A line on stdout, or on ``stream`` when one is given (a launcher's task output)."""
    if stream is not None:
        print(text, file=stream, flush=True)
    else:
        _logger().info(text)


def size_text(n: float | None) -> str:
    """A number of bytes for people: ``512 bytes``, ``3.2 KiB``, ``1,024.0 MiB``, ``12.0 GiB``."""
    if n is None:
        return "?"
    for unit in ("bytes", "KiB", "MiB"):
        if n < 1024:
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} GiB"
