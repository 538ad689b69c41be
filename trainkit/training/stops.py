"""How training stops early: by a signal (with a checkpoint saved) or by diverging.

Kept free of TensorFlow so that the CLI can catch these without importing it.
"""

from __future__ import annotations

import signal

from trainkit.errors import TrainkitError


class TrainingStopped(BaseException):  # noqa: N818 (a stop, not an error)
    """Training stopped by a signal after saving a checkpoint; train again to resume.

    A ``BaseException``, like ``KeyboardInterrupt``: an ``except Exception`` in a
    sweep loop must not swallow a stop request.
    """

    label = "interrupted"

    def __init__(self, signum: int, checkpoint: str | None, step: int | None = None):
        self.signum = signum
        self.checkpoint = checkpoint
        self.step = step
        #: The run so far (a :class:`trainkit.runs.Run`), set by :func:`trainkit.train`.
        self.run = None
        self.exit_code = 128 + signum
        at = f" at step {step}" if step is not None else ""
        super().__init__(
            f"stopped by {signal.Signals(signum).name}{at}; checkpoint saved at {checkpoint}; train again to resume"
        )


class Interrupted(TrainingStopped, KeyboardInterrupt):
    """SIGINT (Ctrl-C, a notebook's interrupt button): exit code 130."""


class Terminated(TrainingStopped):
    """SIGTERM (preemption, ``kill``): exit code 143."""


def stopped_by(signum: int, checkpoint: str | None, step: int | None) -> TrainingStopped:
    return (Interrupted if signum == signal.SIGINT else Terminated)(signum, checkpoint, step)


class Diverged(TrainkitError):
    """The training loss or the model's weights became NaN or infinite (by ``step``)."""

    exit_code = 3

    def __init__(self, message: str, *, step: int | None = None):
        super().__init__(message)
        self.step = step
