"""trainkit's training loop: Keras objects driven through ``tf.distribute``.

:class:`Trainer` owns the compiled step functions. One call of
:meth:`Trainer.train` runs ``num_steps`` optimizer steps inside a single
``tf.function`` (a ``tf.range`` loop around ``strategy.run``), which removes the
per-step Python overhead that dominates small models, while checkpoints,
validation and logging stay exact: the caller decides how many steps each call
runs, so every event falls on a call boundary.

The loss of a batch is the sum of per-example losses divided by the number of
examples in the *global* batch (summed across replicas), plus the model's
regularisation losses divided by the replica count. The optimizer all-reduces
(sums) gradients across replicas, so one replica or eight give the same update
for the same global batch, short last batches included.

Override points, as in Keras's ``Model``: :meth:`compute_loss`,
:meth:`train_step` and :meth:`test_step` run in replica context; subclass and
pass your class to :func:`trainkit.train` to change them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

# Iterating a distributed dataset inside tf.function reads its options in graph
# mode, which TensorFlow warns about on every trace; the options are set in eager.
warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")


class Trainer:
    """Runs training and evaluation steps of a Keras model under a strategy.

    Build it inside ``strategy.scope()`` so that the optimizer's and metrics'
    variables are mirrored. Example (one device)::

        strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
        with strategy.scope():
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
            trainer = Trainer(
                strategy=strategy, model=model,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                optimizer=keras.optimizers.Adam(),
                metrics=[keras.metrics.SparseCategoricalAccuracy()],
            )
        iterator = iter(strategy.experimental_distribute_dataset(dataset))
        trainer.train(iterator, num_steps=100)
        trainer.result()  # {'loss': ..., 'sparse_categorical_accuracy': ...}
    """

    def __init__(
        self,
        *,
        strategy: tf.distribute.Strategy,
        model: keras.Model,
        loss: keras.losses.Loss,
        optimizer: keras.optimizers.Optimizer,
        metrics: Sequence[keras.metrics.Metric] = (),
        eval_metrics: Sequence[keras.metrics.Metric] | None = None,
        jit_compile: bool = False,
    ):
        if not isinstance(model, keras.Model):
            raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
        self.strategy = strategy
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.jit_compile = jit_compile
        self.train_metrics = [keras.metrics.Mean(name="loss"), *metrics]
        self.eval_metrics = [keras.metrics.Mean(name="loss"), *(eval_metrics or [])]
        # Build the optimizer now: restoring a checkpoint into an unbuilt
        # optimizer silently skips its state.
        self.optimizer.build(self.model.trainable_variables)
        self._train_fn = None
        self._eval_fn = None

    # -- override points (replica context) ---------------------------------------

    def compute_loss(self, x: Any, y: Any, y_pred: Any) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns ``(loss to differentiate, per-example losses)`` for one replica."""
        per_example = self.loss(y, y_pred)
        per_example = tf.reshape(tf.cast(per_example, tf.float32), [-1])
        local_count = tf.cast(tf.shape(per_example)[0], tf.float32)
        context = tf.distribute.get_replica_context()
        global_count = context.all_reduce(tf.distribute.ReduceOp.SUM, local_count)
        loss = tf.math.divide_no_nan(tf.reduce_sum(per_example), global_count)
        if self.model.losses:
            loss += tf.add_n(self.model.losses) / tf.cast(context.num_replicas_in_sync, tf.float32)
        return loss, per_example

    def train_step(self, batch: Any) -> None:
        x, y = batch
        with tf.GradientTape() as tape:
            y_pred = self.model(x, training=True)
            loss, per_example = self.compute_loss(x, y, y_pred)
            scaled = self.optimizer.scale_loss(loss)
        variables = self.model.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        self._update_metrics(self.train_metrics, y, y_pred, per_example)

    def test_step(self, batch: Any) -> None:
        x, y = batch
        y_pred = self.model(x, training=False)
        _, per_example = self.compute_loss(x, y, y_pred)
        self._update_metrics(self.eval_metrics, y, y_pred, per_example)

    @staticmethod
    def _update_metrics(metrics, y, y_pred, per_example) -> None:
        metrics[0].update_state(per_example)
        for metric in metrics[1:]:
            metric.update_state(y, y_pred)

    # -- compiled loops (cross-replica context) ----------------------------------

    def train(self, iterator, num_steps: int) -> None:
        """Run ``num_steps`` training steps from a distributed iterator in one call."""
        if self._train_fn is None:
            self._train_fn = self._make_train_fn()
        self._train_fn(iterator, tf.constant(num_steps, tf.int32))

    def _make_train_fn(self):
        step = tf.function(self.train_step, jit_compile=self.jit_compile) if self.jit_compile else self.train_step

        @tf.function
        def train_steps(iterator, num_steps):
            for _ in tf.range(num_steps):
                self.strategy.run(step, args=(next(iterator),))

        return train_steps

    def evaluate(self, distributed_dataset) -> dict[str, float]:
        """Evaluate on every batch of a distributed dataset; returns the metrics."""
        for metric in self.eval_metrics:
            metric.reset_state()
        if self._eval_fn is None:

            @tf.function
            def test_steps(dataset):
                for batch in dataset:
                    self.strategy.run(self.test_step, args=(batch,))

            self._eval_fn = test_steps
        self._eval_fn(distributed_dataset)
        return _results(self.eval_metrics)

    def reset_train_metrics(self) -> None:
        for metric in self.train_metrics:
            metric.reset_state()

    def result(self) -> dict[str, float]:
        """The training metrics accumulated since the last reset."""
        return _results(self.train_metrics)


def _results(metrics) -> dict[str, float]:
    out = {}
    for metric in metrics:
        value = metric.result()
        if isinstance(value, dict):
            out.update({k: float(v) for k, v in value.items()})
        else:
            out[metric.name] = float(value)
    return out
