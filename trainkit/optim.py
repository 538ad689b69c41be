"""Optimizers and learning-rate schedules.

Any Keras 3 optimizer by name with its own arguments (``weight_decay``,
``clipnorm``, ``global_clipnorm``, ``use_ema``, ``gradient_accumulation_steps``,
...). The schedule multiplies ``optimizer.learning_rate``::

    optimizer:
      type: adamw
      learning_rate: 3.0e-4
      weight_decay: 0.05
      schedule: {type: cosine, warmup_steps: 100, alpha: 0.01}

A cosine schedule without ``decay_steps`` decays over the rest of the training
budget, which trainkit knows before it builds the optimizer.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from trainkit import registry
from trainkit.components import instantiate
from trainkit.recipe import OptimizerSection


@keras.saving.register_keras_serializable(package="trainkit")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup, then constant, cosine, exponential or piecewise decay.

    >>> s = WarmupSchedule(kind="cosine", learning_rate=1.0, warmup_steps=10, decay_steps=90)
    >>> [round(float(s(step)), 3) for step in (0, 5, 10, 55, 100)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """

    def __init__(
        self,
        *,
        kind: str,
        learning_rate: float,
        warmup_steps: int = 0,
        warmup_start: float = 0.0,
        decay_steps: int | None = None,
        alpha: float = 0.0,
        decay_rate: float = 1.0,
        staircase: bool = False,
        boundaries: list[int] | None = None,
        multipliers: list[float] | None = None,
    ):
        self.kind = kind
        self.learning_rate = float(learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.warmup_start = float(warmup_start)
        self.decay_steps = decay_steps
        self.alpha = float(alpha)
        self.decay_rate = float(decay_rate)
        self.staircase = bool(staircase)
        self.boundaries = list(boundaries or [])
        self.multipliers = list(multipliers or [])

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        lr = tf.constant(self.learning_rate, tf.float32)
        after = tf.maximum(step - self.warmup_steps, 0.0)
        if self.kind == "cosine":
            progress = tf.minimum(after / float(max(self.decay_steps or 1, 1)), 1.0)
            cosine = 0.5 * (1.0 + tf.cos(math.pi * progress))
            decayed = lr * ((1.0 - self.alpha) * cosine + self.alpha)
        elif self.kind == "exponential":
            exponent = after / float(self.decay_steps)
            if self.staircase:
                exponent = tf.floor(exponent)
            decayed = lr * tf.pow(self.decay_rate, exponent)
        elif self.kind == "piecewise":
            # Boundaries count from the start of training, like Keras's PiecewiseConstantDecay.
            index = tf.reduce_sum(tf.cast(step >= tf.constant(self.boundaries, tf.float32), tf.int32))
            decayed = lr * tf.gather(tf.constant(self.multipliers, tf.float32), index)
        else:
            decayed = lr
        if self.warmup_steps:
            fraction = self.warmup_start + (1.0 - self.warmup_start) * step / float(self.warmup_steps)
            return tf.where(step < self.warmup_steps, lr * fraction, decayed)
        return decayed

    def get_config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "learning_rate": self.learning_rate,
            "warmup_steps": self.warmup_steps,
            "warmup_start": self.warmup_start,
            "decay_steps": self.decay_steps,
            "alpha": self.alpha,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
            "boundaries": self.boundaries,
            "multipliers": self.multipliers,
        }


def make_schedule(section: OptimizerSection, *, total_steps: int) -> float | WarmupSchedule:
    """The learning rate the optimizer gets: a float, or a schedule."""
    schedule = section.schedule
    if schedule is None:
        return section.learning_rate
    args = schedule.model_dump(exclude={"type"})
    if schedule.type == "cosine" and args.get("decay_steps") is None:
        args["decay_steps"] = max(total_steps - schedule.warmup_steps, 1)
    return WarmupSchedule(kind=schedule.type, learning_rate=section.learning_rate, **args)


def make_optimizer(section: OptimizerSection, *, total_steps: int):
    """A Keras optimizer from the recipe's ``optimizer`` section."""
    cls = registry.optimizers.get(section.type, field="optimizer.type")
    kwargs = {"learning_rate": make_schedule(section, total_steps=total_steps), **section.kwargs}
    return instantiate(cls, kwargs, field="optimizer", label=cls.__name__)


def rate_at(section: OptimizerSection, *, total_steps: int, step: int) -> float:
    """The learning rate at ``step`` of a run with this budget."""
    schedule = make_schedule(section, total_steps=total_steps)
    return float(schedule(step)) if callable(schedule) else float(schedule)


def budget_change_note(
    old: OptimizerSection, new: OptimizerSection, *, old_total: int, new_total: int, step: int
) -> str | None:
    """One line when a changed budget moves the learning-rate schedule (a cosine
    decays over the rest of the budget), else None: so a resume that changes the
    rate says so instead of silently jumping."""
    if new.schedule is None or old_total == new_total:
        return None
    before = make_schedule(old, total_steps=old_total)
    after = make_schedule(new, total_steps=new_total)
    if callable(before) and before.get_config() == after.get_config():
        return None  # e.g. a schedule with its own decay_steps: the budget does not move it
    was, now = rate_at(old, total_steps=old_total, step=step), rate_at(new, total_steps=new_total, step=step)
    return (
        f"the learning-rate schedule follows the budget ({old_total} -> {new_total} steps): "
        f"at step {step} the rate is {now:.3g} (it was {was:.3g})"
    )
