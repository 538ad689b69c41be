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


def make_optimizer(section: OptimizerSection, *, total_steps: int, stage_factors: list[tuple[int, float]] = ()):
    """A Keras optimizer from the recipe's ``optimizer`` section.

    ``stage_factors``: ``(first step, learning-rate factor)`` of each later
    training stage (see :class:`StagedLearningRate`).
    """
    cls = registry.optimizers.get(section.type, field="optimizer.type")
    rate = make_schedule(section, total_steps=total_steps)
    if any(factor != 1.0 for _, factor in stage_factors):
        rate = StagedLearningRate(
            inner=rate, boundaries=[start for start, _ in stage_factors], factors=[1.0, *(f for _, f in stage_factors)]
        )
    kwargs = {"learning_rate": rate, **section.kwargs}
    return instantiate(cls, kwargs, field="optimizer", label=cls.__name__)


@keras.saving.register_keras_serializable(package="trainkit")
class StagedLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """The learning rate of a staged run: ``inner`` (a rate or a schedule) times the
    factor of the stage a step is in (``trainer.stages[i].learning_rate`` over
    ``optimizer.learning_rate``). A function of the step alone, so a resumed run
    gets the same rates with no state of its own.

    >>> s = StagedLearningRate(inner=0.1, boundaries=[10], factors=[1.0, 0.01])
    >>> [round(float(s(step)), 4) for step in (0, 9, 10, 50)]
    [0.1, 0.1, 0.001, 0.001]
    """

    def __init__(self, *, inner: float | keras.optimizers.schedules.LearningRateSchedule, boundaries: list[int], factors: list[float]):
        self.inner = inner
        self.boundaries = list(boundaries)
        self.factors = list(factors)

    def __call__(self, step):
        rate = self.inner(step) if callable(self.inner) else tf.constant(self.inner, tf.float32)
        index = tf.reduce_sum(tf.cast(tf.cast(step, tf.int64) >= tf.constant(self.boundaries, tf.int64), tf.int32))
        return rate * tf.gather(tf.constant(self.factors, tf.float32), index)

    def get_config(self) -> dict[str, Any]:
        inner = keras.optimizers.schedules.serialize(self.inner) if callable(self.inner) else self.inner
        return {"inner": inner, "boundaries": self.boundaries, "factors": self.factors}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> StagedLearningRate:
        inner = config["inner"]
        if isinstance(inner, dict):
            inner = keras.optimizers.schedules.deserialize(inner)
        return cls(inner=inner, boundaries=config["boundaries"], factors=config["factors"])


def scale_learning_rates(optimizer, variables: list, multipliers: list[float]) -> None:
    """Give ``variables[i]`` steps ``multipliers[i]`` times the optimizer's (call before ``build``).

    The multiplier scales the learning rate each variable's update is computed
    with, inside the optimizer's own per-variable ``update_step``: for Adam and
    its kin the step size is the learning rate (scaling the gradient instead
    would be divided out by the second moment). Decoupled weight decay, which
    Keras applies with the optimizer's rate, is applied here with the scaled
    rate instead, so a 0 multiplier holds a variable exactly. The optimizer's
    state stays the one Keras checkpoints; variables with multiplier 1 take the
    very same code path as without groups.
    """
    index = {optimizer._var_key(v): i for i, v in enumerate(variables)}
    scaled = {index[optimizer._var_key(v)]: m for v, m in zip(variables, multipliers, strict=True) if m != 1.0}
    if not scaled:
        return
    decayed = set()
    if optimizer.weight_decay is not None:
        decayed = {i for i in scaled if optimizer._use_weight_decay(variables[i])}
        keep_excluded = [v for v in variables if not optimizer._use_weight_decay(v)]
        optimizer.exclude_from_weight_decay(var_list=keep_excluded + [variables[i] for i in decayed])
    keras_update_step = optimizer.update_step

    # Per instance, not a subclass: the optimizer keeps its Keras class, so its
    # config, checkpoints and the exported model.keras are those of a plain one.
    def update_step(gradient, variable, learning_rate):
        i = index[optimizer._var_key(variable)]
        multiplier = scaled.get(i)
        if multiplier is None:
            return keras_update_step(gradient, variable, learning_rate)
        learning_rate = tf.cast(learning_rate, variable.dtype) * multiplier
        if i in decayed:
            variable.assign_sub(variable * tf.cast(optimizer.weight_decay, variable.dtype) * learning_rate)
        return keras_update_step(gradient, variable, learning_rate)

    optimizer.update_step = update_step
