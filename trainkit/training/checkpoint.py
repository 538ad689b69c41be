"""Checkpoints that make a resumed run the same run.

A checkpoint holds the model, the optimizer (built first: DESIGN.md), the step
and epoch counters with the position inside the epoch, the running training
metrics, and the state of every Keras ``SeedGenerator`` in the model (Dropout,
random augmentation) -- which neither ``.weights.h5`` nor ``tf.train.Checkpoint``
track by themselves. The data position needs no saved iterator: the training
stream is a pure function of (seed, epoch), so it is rebuilt at the saved epoch
and the batches already seen are skipped. Resuming restores all of it, so the
continued run draws the same batches and the same random numbers as an
uninterrupted one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import tensorflow as tf

log = logging.getLogger(__name__)


def seed_generator_states(model) -> list:
    """The state variables of every Keras SeedGenerator inside ``model``."""
    states = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for generator in getattr(layer, "_seed_generators", []):
            states.append(generator.state)
    return states


class Checkpointer:
    """Saves and restores a run's full training state in ``directory``."""

    def __init__(self, directory: str | Path, *, model, optimizer, metrics=(), keep: int):
        self.directory = Path(directory)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
        self._checkpoint = tf.train.Checkpoint(
            model=model,
            optimizer=optimizer,
            step=self.step,
            epoch=self.epoch,
            step_in_epoch=self.step_in_epoch,
            rng={str(i): v for i, v in enumerate(seed_generator_states(model))},
            # Running epoch metrics, so an epoch resumed midway reports the whole epoch.
            metrics={f"{i}_{j}": v for i, m in enumerate(metrics) for j, v in enumerate(m.variables)},
        )
        self._manager = tf.train.CheckpointManager(
            self._checkpoint, str(self.directory), max_to_keep=keep, step_counter=self.step
        )

    @property
    def latest(self) -> str | None:
        return self._manager.latest_checkpoint

    def save(self, *, step: int, epoch: int, step_in_epoch: int) -> str:
        self.step.assign(step)
        self.epoch.assign(epoch)
        self.step_in_epoch.assign(step_in_epoch)
        return self._manager.save(checkpoint_number=step)

    @staticmethod
    def counters(path: str) -> tuple[int, int, int]:
        """``(step, epoch, step_in_epoch)`` stored in a checkpoint, read without restoring it."""
        reader = tf.train.load_checkpoint(path)
        read = lambda name: int(reader.get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE"))  # noqa: E731
        return read("step"), read("epoch"), read("step_in_epoch")

    def restore(self, path: str) -> None:
        self._checkpoint.restore(path).assert_existing_objects_matched()


def restore_model_weights(model, path: str) -> None:
    """Only the model's weights from a training checkpoint (for evaluation)."""
    tf.train.Checkpoint(model=model).restore(path).expect_partial()
