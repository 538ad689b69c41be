"""Fine-tuning stages (``trainer.stages``): which stage a step is in, and what
changes where one begins.

Each stage trains ``epochs`` epochs. Stage 1 trains what ``model.freeze``
leaves trainable; a later stage may ``unfreeze`` layers (``all`` or regexes)
and set a new ``learning_rate``. Everything here is a function of the global
step: the learning rate is a schedule over the step
(:class:`trainkit.optim.StagedLearningRate`), and the layers a stage unfroze
are unfrozen again by :meth:`Stages.enter` when a run resumes, so a run killed
in any stage resumes exactly. The optimizer is built with every variable a
stage may unfreeze from the start, so its checkpointed state has one shape in
every stage.

A stage boundary is an interval event of the controller
(:mod:`trainkit.training.events`): :meth:`Stages.steps_to_next` says when the
next one is due, so a training call never runs across it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from trainkit.models import finetune

if TYPE_CHECKING:
    from trainkit.training.events import Position


class Stages:
    """The stage boundaries of a run and what each changes."""

    def __init__(self, stages: Sequence[Any], *, steps_per_epoch: int):
        self.stages = list(stages)
        self.starts: list[int] = []
        start = 0
        for stage in self.stages:
            self.starts.append(start)
            start += stage.epochs * steps_per_epoch
        self.entered = 0  # stages whose changes are applied (stage 1's: model.freeze, at build)

    @classmethod
    def of(cls, recipe, *, steps_per_epoch: int) -> Stages | None:
        stages = recipe.trainer.stages
        return cls(stages, steps_per_epoch=steps_per_epoch) if stages else None

    @property
    def epochs(self) -> int:
        return sum(stage.epochs for stage in self.stages)

    def learning_rate_factors(self, base_learning_rate: float) -> list[tuple[int, float]]:
        """``(first step, factor of optimizer.learning_rate)`` of each stage after the first."""
        out, factor = [], 1.0
        for start, stage in zip(self.starts[1:], self.stages[1:], strict=True):
            if stage.learning_rate is not None:
                factor = stage.learning_rate / base_learning_rate
            out.append((start, factor))
        return out

    def check(self, model) -> None:
        """Every ``unfreeze`` pattern matches a layer (raises before training)."""
        for i, stage in enumerate(self.stages):
            if isinstance(stage.unfreeze, list):
                finetune.check_patterns(model, stage.unfreeze, field=f"trainer.stages.{i}.unfreeze")

    def index_at(self, step: int) -> int:
        return max(i for i, start in enumerate(self.starts) if start <= step)

    def steps_to_next(self, position: Position) -> float:
        later = [start - position.step for start in self.starts if start > position.step]
        return min(later) if later else math.inf

    def due(self, position: Position) -> bool:
        """A stage begins at ``position`` (its changes are not applied yet)."""
        return self.entered < self.index_at(position.step)

    def enter(self, step: int, model) -> bool:
        """Apply what every stage begun by ``step`` changes, once; True if the
        trainable variables changed (the training step must be traced again)."""
        changed = False
        while self.entered < self.index_at(step):
            self.entered += 1
            stage = self.stages[self.entered]
            if stage.unfreeze is not None:
                finetune.unfreeze(model, stage.unfreeze, field=f"trainer.stages.{self.entered}.unfreeze")
                changed = True
        return changed

    def fire(self, controller) -> None:
        """At a boundary (or where a run resumes): enter the stage, say so."""
        step = controller.position.step
        if self.enter(step, controller.model):
            controller.trainable_variables_changed()
        count = int(sum(math.prod(v.shape) for v in controller.model.trainable_variables))
        controller.sink.notice(f"{self.describe(step)}: {count:,} trainable parameters")

    def describe(self, step: int) -> str:
        i = self.index_at(step)
        stage = self.stages[i]
        what = f", unfrozen: {stage.unfreeze if isinstance(stage.unfreeze, str) else ', '.join(stage.unfreeze)}" if stage.unfreeze else ""
        rate = f", learning rate {stage.learning_rate:g}" if stage.learning_rate is not None else ""
        return f"stage {i + 1}/{len(self.stages)} from step {self.starts[i]} ({stage.epochs} epochs{what}{rate})"
