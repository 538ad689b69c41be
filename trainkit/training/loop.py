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
pass your class to :func:`trainkit.train` to change them. As in Keras 3's own
``fit``, the training and evaluation steps are traced without AutoGraph
(converting them cost a quarter of a second of start-up for nothing): branch on
tensors with ``tf.cond`` / ``tf.where``, not Python ``if``.

The metric values are computed inside the same compiled call and returned
with it, so reading them after a call costs no extra device round trips. The
call also times, with ``tf.timestamp``, how long each step waited for its
batch: :attr:`Trainer.input_seconds` over :attr:`Trainer.loop_seconds` is the
share of training spent waiting for input, measured on the run itself.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from trainkit.runtime import op_determinism_enabled

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
        measure_input: bool = True,
    ):
        if not isinstance(model, keras.Model):
            raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
        self.strategy = strategy
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.jit_compile = jit_compile
        self.measure_input = measure_input
        self.train_metrics = [keras.metrics.Mean(name="loss"), *metrics]
        self.eval_metrics = [keras.metrics.Mean(name="loss"), *(eval_metrics or [])]
        # Build the optimizer now: restoring a checkpoint into an unbuilt
        # optimizer silently skips its state.
        self.optimizer.build(self.model.trainable_variables)
        self._train_fn = None
        self._eval_fn = None
        self._eval_steps_fn = None
        #: Seconds the training calls spent inside their loops, and of those,
        #: waiting for the next batch; and the steps they ran.
        self.loop_seconds = 0.0
        self.input_seconds = 0.0
        self.steps_run = 0
        #: Whether every trainable weight was finite after the last training call.
        self.weights_finite = True

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

    def train(self, iterator, num_steps: int) -> dict[str, float]:
        """Run ``num_steps`` training steps from a distributed iterator in one call.

        Returns the training metrics accumulated since the last reset, as
        :meth:`result` would, read from the call's own outputs.
        """
        if self._train_fn is None:
            self._train_fn = self._make_train_fn()
        metrics, finite, waited, seconds = self._train_fn(iterator, tf.constant(num_steps, tf.int32))
        self.weights_finite = bool(finite)
        self.input_seconds += float(waited)
        self.loop_seconds += float(seconds)
        self.steps_run += num_steps
        return _floats(metrics)

    def _make_train_fn(self):
        step = self.train_step
        if self.jit_compile:
            step = tf.function(step, jit_compile=True, autograph=False)

        # Op determinism forbids tf.timestamp: then the wait is not measured.
        timed = self.measure_input and not op_determinism_enabled()

        def clock(after=()):
            with tf.control_dependencies(tf.nest.flatten(after, expand_composites=True)):
                return tf.timestamp() if timed else tf.constant(0.0, tf.float64)

        @_one_trainers_function
        def train_steps(iterator, num_steps):
            def one_step(i, waited):
                before = clock()
                with tf.control_dependencies([before]):
                    batch = next(iterator)
                after = clock(after=batch)
                self.strategy.run(step, args=(batch,))
                return i + 1, waited + (after - before)

            started = clock()
            _, waited = tf.while_loop(
                lambda i, _: i < num_steps, one_step, [tf.constant(0, tf.int32), tf.constant(0.0, tf.float64)]
            )
            # Automatic control dependencies order these reads after the loop's updates.
            metrics = _metric_values(self.train_metrics)
            # The loss alone can miss a divergence: a ReLU that grappler fuses into
            # the matmul before it (oneDNN) maps NaN to 0, so NaN inputs give a
            # finite loss while their gradients turn every weight into NaN.
            finite = all_finite(self.model.trainable_variables)
            return metrics, finite, waited, clock(after=[metrics, finite]) - started

        return train_steps

    def trainable_variables_changed(self) -> None:
        """Trace the training step again: the variables it trains were traced into it."""
        self._train_fn = None

    def evaluate(self, distributed_dataset) -> dict[str, float]:
        """Evaluate on every batch of a distributed dataset; returns the metrics.

        One traced function serves every evaluation of the run (validation and
        the final evaluations alike): it takes an iterator, whose type is the
        same for every split of one data, so it is traced once. Pass the same
        dataset object each time (:meth:`PreparedData.distributed` keeps one per
        split) and the pipeline is not rebuilt either; each call iterates it anew.
        """
        self._reset_eval_metrics()
        if self._eval_fn is None:
            self._eval_fn = self._make_eval_fn()
        self._eval_fn(iter(distributed_dataset))
        return _results(self.eval_metrics)

    def evaluate_split(self, data, split: str, *, take: int | None = None) -> dict[str, float]:
        """Evaluate on a split of ``data`` (a :class:`PreparedData`), its first ``take`` batches if given.

        An in-memory split is read from one iterator kept for the whole run
        (:meth:`PreparedData.evaluation_cycle`), exactly one pass per call;
        any other from its kept dataset, iterated anew.
        """
        cycle = data.evaluation_cycle(self.strategy, split, take=take)
        if cycle is None:
            return self.evaluate(data.distributed(self.strategy, split, take=take))
        self._reset_eval_metrics()
        if self._eval_steps_fn is None:
            self._eval_steps_fn = self._make_eval_steps_fn()
        self._eval_steps_fn(cycle.iterator, tf.constant(cycle.batches, tf.int32))
        return _results(self.eval_metrics)

    def _reset_eval_metrics(self) -> None:
        for metric in self.eval_metrics:
            metric.reset_state()

    def _make_eval_fn(self):
        @_one_trainers_function
        def test_steps(iterator):
            def more(optional):
                return optional.has_value()

            def one_step(optional):
                self.strategy.run(self.test_step, args=(optional.get_value(),))
                return [iterator.get_next_as_optional()]

            tf.while_loop(more, one_step, [iterator.get_next_as_optional()])

        return test_steps

    def _make_eval_steps_fn(self):
        @_one_trainers_function
        def test_steps(iterator, num_steps):
            def one_step(i):
                self.strategy.run(self.test_step, args=(next(iterator),))
                return [i + 1]

            tf.while_loop(lambda i: i < num_steps, one_step, [tf.constant(0, tf.int32)])

        return test_steps

    def trial(self, train_iterator, eval_dataset) -> None:
        """One training step and one evaluation pass through the compiled functions
        the run will use, outside its accounting (no steps, times or calls counted).

        For the checks before a run: the caller restores the variables afterwards.
        """
        if self._train_fn is None:
            self._train_fn = self._make_train_fn()
        self._train_fn(train_iterator, tf.constant(1, tf.int32))
        # The evaluation step runs eagerly on the rehearsal's batch: the run's own
        # functions are traced once each, for the run's datasets (eval_traces), and a
        # function traced for this one call was a trace per training that TensorFlow,
        # which counts traces by the function's code, reported as "triggered
        # tf.function retracing" once a process had trained five models (a sweep, a
        # notebook). TPUStrategy runs steps only inside a tf.function.
        self._reset_eval_metrics()
        if isinstance(self.strategy, tf.distribute.TPUStrategy):
            self._make_eval_fn()(iter(eval_dataset))
            return
        with _without_the_eager_run_warning():
            for batch in eval_dataset:
                self.strategy.run(self.test_step, args=(batch,))

    @property
    def eval_traces(self) -> int:
        """How many times the evaluation functions have been traced (at most 2 a run)."""
        return sum(fn.experimental_get_tracing_count() for fn in (self._eval_fn, self._eval_steps_fn) if fn is not None)

    def reset_train_metrics(self) -> None:
        for metric in self.train_metrics:
            metric.reset_state()

    def result(self) -> dict[str, float]:
        """The training metrics accumulated since the last reset."""
        return _results(self.train_metrics)


@contextlib.contextmanager
def _without_the_eager_run_warning():
    """Without TensorFlow's "Using MirroredStrategy eagerly has significant overhead
    ... wrap ``run`` inside a tf.function" warning: the rehearsal's one evaluation step
    is eager on purpose (see :meth:`Trainer.trial`), and the warning was the first line
    of every run on several devices, telling the user to fix what trainkit does."""
    import logging

    def other_records(record: logging.LogRecord) -> bool:
        return "eagerly has significant overhead" not in record.getMessage()

    logger = logging.getLogger("tensorflow")
    logger.addFilter(other_records)
    try:
        yield
    finally:
        logger.removeFilter(other_records)


def _one_trainers_function(python_function):
    """``tf.function`` (without AutoGraph) of a step closure made for one Trainer.

    Each Trainer traces its functions once, for its own model and variables. But
    TensorFlow's frequent-retracing detector counts traces by the Python code of
    the function, so the closures of every Trainer a process makes (a sweep's
    trials, a notebook's trainings) were counted as one function traced again and
    again: "5 out of the last 5 calls ... triggered tf.function retracing" after
    five short trainings. A ``functools.partial`` gives each Trainer's function an
    identity of its own, so the detector counts what it was made for: one
    function traced again and again (new shapes every call) is still reported.
    """
    import functools

    return tf.function(functools.partial(python_function), autograph=False)


def all_finite(variables) -> tf.Tensor:
    """True when no element of ``variables`` is NaN or infinite (one reduction each)."""
    checks = [tf.reduce_all(tf.math.is_finite(v)) for v in variables if tf.as_dtype(v.dtype).is_floating]
    return tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)


def _metric_values(metrics) -> dict[str, Any]:
    """Each metric's result by name (a metric returning a dict gives its keys)."""
    out = {}
    for metric in metrics:
        value = metric.result()
        if isinstance(value, dict):
            out.update(value)
        else:
            out[metric.name] = value
    return out


def _floats(values: dict[str, Any]) -> dict[str, float]:
    return {name: float(value) for name, value in values.items()}


def _results(metrics) -> dict[str, float]:
    return _floats(_metric_values(metrics))
