"""Where training stands, and the periodic events that cut it into chunks.

The controller runs several steps per compiled call. Every periodic event (a
log line, a validation, a checkpoint, a profile window, and later a stage
change) is an object that says how many steps remain until it is next due; the
controller runs the smallest of those counts (and its own steps-per-call
limit) in one call, so no event ever moves when more steps run per call.

A new kind of event needs only ``steps_to_next`` and ``due``; the controller's
``events`` argument takes any object that has them, and calls its
``fire(controller)`` (if it has one) at the end of each chunk it is due at,
before that chunk's log, validation and checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Position:
    """A point of training: global step, epoch (0-based) and steps done in that epoch."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0

    def advanced(self, steps: int) -> Position:
        return Position(self.step + steps, self.epoch, self.step_in_epoch + steps)

    def next_epoch(self) -> Position:
        return Position(self.step, self.epoch + 1, 0)

    def as_counters(self) -> dict[str, int]:
        """The keyword arguments the checkpointer's ``save`` methods take."""
        return {"step": self.step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch}


class IntervalEvent(Protocol):
    def steps_to_next(self, position: Position) -> float:
        """Steps until this event is next due (``math.inf``: never again)."""

    def due(self, position: Position) -> bool:
        """Whether it falls on ``position`` (the end of the chunk just run)."""


class EverySteps:
    """Due every ``every`` global steps (never when ``every`` is None or 0)."""

    def __init__(self, every: int | None):
        self.every = every

    def due(self, position: Position) -> bool:
        return bool(self.every) and position.step % self.every == 0

    def steps_to_next(self, position: Position) -> float:
        return self.every - position.step % self.every if self.every else math.inf


class EpochEnd:
    """Due when an epoch of ``steps_per_epoch`` steps is complete."""

    def __init__(self, steps_per_epoch: int):
        self.steps_per_epoch = steps_per_epoch

    def due(self, position: Position) -> bool:
        return position.step_in_epoch >= self.steps_per_epoch

    def steps_to_next(self, position: Position) -> float:
        return self.steps_per_epoch - position.step_in_epoch


class BudgetEnd:
    """Due when the step budget is spent."""

    def __init__(self, total_steps: int):
        self.total_steps = total_steps

    def due(self, position: Position) -> bool:
        return position.step >= self.total_steps

    def steps_to_next(self, position: Position) -> float:
        return self.total_steps - position.step


class ProfileWindow:
    """A TensorBoard profile of steps ``[first, last)``; chunks are cut at both ends."""

    def __init__(self, steps: list[int] | None, directory):
        self.first, self.last = steps if steps else (None, None)
        self.directory = str(directory)
        self.running = False

    def steps_to_next(self, position: Position) -> float:
        for boundary in (self.first, self.last):
            if boundary is not None and position.step < boundary:
                return boundary - position.step
        return math.inf

    def due(self, position: Position) -> bool:
        return position.step in (self.first, self.last)

    def at(self, position: Position) -> None:
        """Start or stop the profiler if ``position`` is one of the window's ends."""
        import tensorflow as tf

        if position.step == self.first and not self.running:
            tf.profiler.experimental.start(self.directory)
            self.running = True
        elif position.step == self.last and self.running:
            self.stop()

    def stop(self) -> None:
        import tensorflow as tf

        if self.running:
            tf.profiler.experimental.stop()
            self.running = False


def steps_until_next(events, position: Position, limit: int) -> int:
    """The chunk to run from ``position``: ``limit`` steps, cut at the first event due."""
    nearest = min((event.steps_to_next(position) for event in events), default=math.inf)
    return int(max(1, min(limit, nearest)))
