"""The parameter-server path of trainkit's one loop.

Under ``ParameterServerStrategy`` the variables live on the ps tasks, the
workers run training steps, and the chief's ``ClusterCoordinator`` schedules
them asynchronously. :class:`trainkit.training.controller.Controller` stays the same loop: the
trainer and the data it is given change instead.

- :func:`coordinated_trainer_class` wraps a :class:`~trainkit.training.loop.Trainer`
  (or a user's subclass): ``train(iterator, n)`` splits the ``n`` steps into
  closures of several steps each, schedules them on the workers and waits for
  all of them, so every event of the loop (log, validation, checkpoint) still
  falls exactly after ``n`` steps. ``evaluate`` runs on the chief, over the
  whole split, with metrics of the chief's own: every example counts once.
- :class:`CoordinatedData` hands out per-worker training datasets
  (``coordinator.create_per_worker_dataset``): each worker reads its own shard
  of the batches of the same (seed, epoch) stream that one device would read.

Asynchronous training is not bit-reproducible with several workers (which
worker applies which update first is a race); with one worker it is exact.
"""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf

from trainkit.distribution.cluster import num_workers
from trainkit.distribution.strategies import coordinator
from trainkit.training.loop import Trainer, all_finite

#: Scheduled closures per worker per loop call (keeps every worker busy while
#: the others' closures travel).
CLOSURES_PER_WORKER = 2


class _CoordinatedTrainer:
    """Mixin over a Trainer class: scheduled training, evaluation on the chief."""

    def train(self, iterator, num_steps: int) -> dict[str, float]:
        if self._train_fn is None:
            self._train_fn = self._make_train_fn()
        cluster_coordinator = coordinator(self.strategy)
        workers = num_workers(self.strategy)
        per_closure = max(1, math.ceil(num_steps / (workers * CLOSURES_PER_WORKER)))
        left = num_steps
        while left > 0:
            n = min(per_closure, left)
            cluster_coordinator.schedule(self._train_fn, args=(iterator, tf.constant(n, tf.int32)))
            left -= n
        cluster_coordinator.join()  # raises a worker's error here, on the chief
        self.weights_finite = bool(all_finite(self.model.trainable_variables))
        return self.result()

    def evaluate(self, dataset) -> dict[str, float]:
        """Metrics over a whole (local, undistributed) dataset, computed on the chief."""
        if not isinstance(dataset, tf.data.Dataset):
            return super().evaluate(dataset)
        if getattr(self, "_chief_metrics", None) is None:
            # The chief's own metric objects: the trainer's were made in the
            # strategy's scope, where only scheduled functions may update them.
            self._chief_metrics = [type(m).from_config(m.get_config()) for m in self.eval_metrics]

            @tf.function
            def test_steps(ds):
                for x, y in ds:
                    y_pred = self.model(x, training=False)
                    _, per_example = self.compute_loss(x, y, y_pred)
                    self._update_metrics(self._chief_metrics, y, y_pred, per_example)

            self._chief_eval_fn = test_steps
        for metric in self._chief_metrics:
            metric.reset_state()
        self._chief_eval_fn(dataset)
        from trainkit.training.loop import _results

        return _results(self._chief_metrics)


def coordinated_trainer_class(base: type[Trainer]) -> type[Trainer]:
    """``base`` (a Trainer subclass) made to run under a ClusterCoordinator."""
    return type(f"Coordinated{base.__name__}", (_CoordinatedTrainer, base), {})


class CoordinatedData:
    """A :class:`~trainkit.data.pipeline.PreparedData` seen from a parameter-server chief."""

    def __init__(self, data, strategy):
        self._data = data
        self._strategy = strategy
        self._evaluation_sets: dict = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._data, name)

    def distributed_training(self, strategy, *, start_epoch: int = 0, skip_batches: int = 0) -> Any:
        """A per-worker iterator: worker ``i`` reads batches ``i, i+W, i+2W, ...`` of the stream."""
        data = self._data
        cluster_coordinator = coordinator(strategy)

        def dataset_fn(context: tf.distribute.InputContext):
            stream = data.fresh().training_stream(start_epoch=start_epoch, skip_batches=skip_batches)
            return stream.shard(context.num_input_pipelines, context.input_pipeline_id)

        @tf.function
        def per_worker_dataset():
            return strategy.distribute_datasets_from_function(dataset_fn)

        return cluster_coordinator.create_per_worker_dataset(per_worker_dataset)  # fit calls iter()

    def evaluation_cycle(self, strategy, split: str, *, take: int | None = None) -> None:
        """None: the chief evaluates a plain dataset of its own (see :meth:`distributed`)."""
        return None

    def distributed(self, strategy, split: str, *, take: int | None = None) -> tf.data.Dataset:
        """An evaluation split for the chief: the plain dataset, every example once."""
        kept = self._evaluation_sets.get((split, take))
        if kept is None:  # built once, as PreparedData.distributed does
            ds = self._data.dataset(split)
            kept = self._evaluation_sets[(split, take)] = ds.take(take) if take is not None else ds
        return kept
