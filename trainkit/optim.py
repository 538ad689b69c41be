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
from trainkit.distribution.cluster import num_workers
from trainkit.distribution.strategies import describe
from trainkit.errors import ConfigError
from trainkit.recipe import OptimizerSection, Recipe


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


def group_learning_rates(optimizer, variables: list, multipliers: list[float]):
    """``optimizer``, with ``variables[i]`` stepping ``multipliers[i]`` times its rate (unbuilt).

    One optimizer per multiplier, as optax's ``multi_transform`` and big_vision
    do: each group's optimizer is ``optimizer``'s kind and arguments with its
    learning rate (a schedule too) scaled, so Adam's step, decoupled weight
    decay and the optimizer state are each group's own, and a 0 multiplier
    holds a variable exactly. Without a multiplier other than 1 it is
    ``optimizer`` itself, unchanged.
    """
    scaled = sorted({m for m in multipliers if m != 1.0})
    if not scaled:
        return optimizer
    config = optimizer.get_config()
    rate = config["learning_rate"]
    if isinstance(rate, dict):
        rate = keras.optimizers.schedules.deserialize(rate)
    clip = config.get("global_clipnorm")
    if clip is not None:
        # One norm over every group's gradients, as without groups (see GroupedOptimizer.apply).
        if config.get("gradient_accumulation_steps"):
            raise ConfigError(
                "optimizer.global_clipnorm: not available with gradient_accumulation_steps and learning-rate "
                "groups together (the norm would be taken per micro-batch); use clipnorm, or one of the two"
            )
        optimizer.global_clipnorm = None
        config["global_clipnorm"] = None
    groups = []
    for multiplier in scaled:
        group_rate = StagedLearningRate(inner=rate, boundaries=[], factors=[multiplier]) if callable(rate) else rate * multiplier
        group = type(optimizer).from_config({**config, "learning_rate": group_rate, "name": _group_name(optimizer.name, multiplier)})
        paths = [v.path for v, m in zip(variables, multipliers, strict=True) if m == multiplier]
        groups.append((group, multiplier, paths))
    return GroupedOptimizer(optimizer, groups, global_clipnorm=clip)


def _group_name(base: str, multiplier: float) -> str:
    """``adam_x0.1``: a valid scope name for every multiplier (``1e+30`` is not one), and
    one name per multiplier (``:g`` gave 0.1234567 and 0.1234568 the same)."""
    return f"{base}_x{repr(float(multiplier)).replace('+', '')}"


class _GroupMap:
    """Which optimizer steps a variable (by its path): the map ``MultiOptimizer`` asks."""

    def __init__(self, default, groups: list[tuple[Any, float, list[str]]]):
        self.default_optimizer = default
        self.groups = groups
        self.by_path = {path: group for group, _, paths in groups for path in paths}

    def values(self) -> list:
        return [group for group, _, _ in self.groups]

    def __call__(self, variable):
        return self.by_path.get(variable.path, self.default_optimizer)


@keras.saving.register_keras_serializable(package="trainkit")
class GroupedOptimizer(keras.optimizers.MultiOptimizer):
    """Keras's ``MultiOptimizer`` with per-group learning-rate multipliers (made by
    :func:`group_learning_rates`).

    Two differences from the plain one. Every group's optimizer counts every
    step, also while a stage keeps all its variables frozen, so its schedule
    stays at the run's step; and ``global_clipnorm`` is one norm over all the
    gradients. ``learning_rate`` is the base rate (the multiplier-1 group's);
    setting it (``ReduceLROnPlateau``) sets every group's, times its multiplier.
    """

    def __init__(self, default, groups: list[tuple[Any, float, list[str]]], *, global_clipnorm: float | None = None, name=None):
        group_map = _GroupMap(default, groups)
        super().__init__(group_map, loss_scale_factor=default.loss_scale_factor, name=name)
        self.group_map = group_map
        self.group_clipnorm = global_clipnorm
        # Checkpointed under these names (MultiOptimizer's own list is not tracked).
        self.base_group = default
        self.scaled_groups = [group for group, _, _ in groups]

    @property
    def default_optimizer(self):
        """The optimizer of the variables in no group (multiplier 1)."""
        return self.group_map.default_optimizer

    @property
    def learning_rate(self):
        return self.default_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        self.default_optimizer.learning_rate = value
        for group, multiplier, _ in self.group_map.groups:
            group.learning_rate = value * multiplier

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None:
            raise ValueError("GroupedOptimizer.apply needs the variables the gradients are for")
        variables = list(trainable_variables)
        if not self.built:
            self.build(variables)
        grads = list(grads)
        if self.group_clipnorm is not None:
            grads, _ = tf.clip_by_global_norm(grads, self.group_clipnorm)
        parts = {id(optimizer): ([], []) for optimizer in self.optimizers}
        for gradient, variable in zip(grads, variables, strict=True):
            part = parts[id(self.group_map(variable))]
            part[0].append(gradient)
            part[1].append(variable)
        for optimizer in self.optimizers:
            part_grads, part_variables = parts[id(optimizer)]
            if part_variables:
                optimizer.apply(part_grads, part_variables)
            else:  # all its variables frozen in this stage: its schedule still moves on
                optimizer.iterations.assign_add(1)
        self.iterations.assign_add(1)

    def get_config(self) -> dict[str, Any]:
        serialize = keras.saving.serialize_keras_object
        return {
            "default": serialize(self.default_optimizer),
            "groups": [
                {"optimizer": serialize(group), "multiplier": multiplier, "paths": list(paths)}
                for group, multiplier, paths in self.group_map.groups
            ],
            "global_clipnorm": self.group_clipnorm,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects=None) -> GroupedOptimizer:
        deserialize = keras.saving.deserialize_keras_object
        groups = [
            (deserialize(g["optimizer"], custom_objects=custom_objects), g["multiplier"], g["paths"])
            for g in config["groups"]
        ]
        default = deserialize(config["default"], custom_objects=custom_objects)
        return cls(default, groups, global_clipnorm=config.get("global_clipnorm"), name=config.get("name"))


def base_optimizer(optimizer):
    """The optimizer proper: without loss scaling, and the base group's of a grouped one."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    if isinstance(optimizer, GroupedOptimizer):
        optimizer = optimizer.default_optimizer
    return optimizer


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


# ------------------------------------------------------- batch and learning-rate rule


def scaled_learning_rate(recipe: Recipe) -> float:
    """``optimizer.learning_rate``, scaled by ``runtime.scale_learning_rate``."""
    base = recipe.optimizer.learning_rate
    if recipe.runtime.scale_learning_rate == "linear":
        return base * recipe.data.batch_size / recipe.runtime.reference_batch_size
    return base


def batch_plan(recipe: Recipe, strategy) -> dict[str, Any]:
    """How the global batch is split: reported in the start header and run.json."""
    replicas = strategy.num_replicas_in_sync
    global_batch = recipe.data.batch_size
    per_replica = global_batch / replicas
    return {
        "strategy": describe(strategy),
        "workers": num_workers(strategy),
        "replicas": replicas,
        "global_batch": global_batch,
        "per_replica_batch": int(per_replica) if per_replica.is_integer() else round(per_replica, 3),
        "learning_rate": scaled_learning_rate(recipe),
        "learning_rate_rule": recipe.runtime.scale_learning_rate,
    }


def batch_text(recipe: Recipe, strategy) -> str:
    """``global batch 64 (32 per replica)`` for the start header, with the lr rule if any."""
    plan = batch_plan(recipe, strategy)
    text = f"global batch {plan['global_batch']} ({plan['per_replica_batch']} per replica)"
    if plan["learning_rate_rule"] == "linear":
        text += (
            f"; learning rate {plan['learning_rate']:g} (linear rule: {recipe.optimizer.learning_rate:g} "
            f"x {recipe.data.batch_size}/{recipe.runtime.reference_batch_size})"
        )
    return text
