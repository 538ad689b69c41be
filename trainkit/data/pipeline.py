"""Arrays per split to ``tf.data`` pipelines.

:func:`prepare` loads a source, splits it deterministically (``data.split_seed``),
fits feature scaling on the training split alone, and describes the result
(:class:`DataInfo`: feature shape, task, classes, sizes). :class:`PreparedData`
then hands out the pipeline of any split.

Training reads one stream over all epochs (:meth:`PreparedData.training_stream`).
Each epoch is shuffled with a seed derived from the recipe seed and the epoch
number, so each epoch sees a new order, the same recipe always sees the same
orders, and an epoch never bleeds into the next one inside a batch. The data
position is therefore reproducible rather than saved: a run resumed at (epoch,
batch) rebuilds the stream from that epoch and skips the batches already seen.
(TensorFlow 2.21 cannot checkpoint the iterators of distributed datasets.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from trainkit.data import sources
from trainkit.errors import ConfigError
from trainkit.recipe import DataSection

SPLITS = ("train", "validation", "test")
Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class DataInfo:
    """What the model and the loss need to know about the data."""

    feature_shape: tuple[int, ...]
    task: Task
    num_classes: int | None
    """Number of classes for classification (labels are ``0..num_classes-1``)."""
    target_shape: tuple[int, ...]
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def num_outputs(self) -> int:
        if self.task == "classification":
            return int(self.num_classes)
        return int(np.prod(self.target_shape)) if self.target_shape else 1


@dataclass
class Scaler:
    """Feature scaling whose statistics come from the training split only."""

    offset: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, kind: str, x: np.ndarray) -> Scaler | None:
        if kind == "none":
            return None
        if kind == "standard":
            offset, spread = x.mean(axis=0), x.std(axis=0)
        else:  # minmax
            offset, spread = x.min(axis=0), x.max(axis=0) - x.min(axis=0)
        spread = np.where(spread > 0, spread, 1.0)  # constant features stay constant
        return cls(offset.astype(np.float32), spread.astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.offset) / self.scale


class PreparedData:
    """The splits of one recipe's data, ready to become ``tf.data`` pipelines."""

    def __init__(self, section: DataSection, arrays: dict[str, tuple[np.ndarray, np.ndarray]], *, seed: int):
        self.section = section
        self.arrays = arrays
        self.seed = seed
        self.info = _describe(section, arrays)
        self._bases: dict = {}

    # -- pipelines -------------------------------------------------------------

    def steps_per_epoch(self, split: str = "train") -> int:
        n, batch = self.info.sizes[split], self.section.batch_size
        return n // batch if self.section.drop_remainder else -(-n // batch)

    def dataset(self, split: str, *, training: bool = False, epoch: int = 0, batch_size: int | None = None):
        """One epoch of ``split`` as a batched ``tf.data.Dataset``.

        ``training=True`` shuffles with the order of epoch ``epoch``; evaluation
        keeps the split's order. ``batch_size`` defaults to the global batch size
        (``data.eval_batch_size`` for evaluation).
        """
        import tensorflow as tf

        return self._finish(self._epoch(split, tf.constant(epoch, tf.int64), training=training, batch_size=batch_size))

    def training_stream(self, *, start_epoch: int = 0, skip_batches: int = 0):
        """Every training epoch from ``start_epoch`` on, back to back, batched.

        Batching happens inside each epoch, so a short last batch stays in its epoch.
        """
        import tensorflow as tf

        self._check_split("train")
        epochs = tf.data.Dataset.range(start_epoch, 2**62)  # as good as endless
        stream = epochs.flat_map(lambda e: self._epoch("train", e, training=True, batch_size=None))
        if skip_batches:
            stream = stream.skip(skip_batches)
        return self._finish(stream)

    def distributed(self, strategy, split: str, *, take: int | None = None):
        """One epoch of an evaluation split, spread over the strategy's replicas.

        Each global batch is divided among the replicas (a short last batch too),
        so every example is counted once whatever the replica count.
        """
        ds = self.dataset(split)
        if take is not None:
            ds = ds.take(take)
        return strategy.experimental_distribute_dataset(ds)

    def distributed_training(self, strategy, *, start_epoch: int = 0, skip_batches: int = 0):
        stream = self.training_stream(start_epoch=start_epoch, skip_batches=skip_batches)
        return strategy.experimental_distribute_dataset(stream)

    def _base(self, split: str):
        import tensorflow as tf

        if split not in self._bases:
            self._check_split(split)
            ds = tf.data.Dataset.from_tensor_slices(self.arrays[split])
            self._bases[split] = ds.cache() if self.section.cache else ds
        return self._bases[split]

    def _epoch(self, split: str, epoch, *, training: bool, batch_size: int | None):
        """One epoch of ``split``; ``epoch`` may be a tensor (inside ``flat_map``).

        In-memory data is shuffled fully by a stateless permutation of the
        indices seeded with (recipe seed, epoch): no buffer, no hidden state.
        """
        import tensorflow as tf

        section = self.section
        if batch_size is None:
            batch_size = section.batch_size if training else (section.eval_batch_size or section.batch_size)
        drop = section.drop_remainder and training
        if not (training and section.shuffle_buffer):
            return self._base(split).batch(batch_size, drop_remainder=drop)
        x, y = self._tensors(split)
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(epoch, tf.int64)])
        order = tf.random.experimental.stateless_shuffle(tf.range(self.info.sizes[split], dtype=tf.int64), seed=seed)
        indices = tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=drop)
        return indices.map(lambda i: (tf.gather(x, i), tf.gather(y, i)))

    def _tensors(self, split: str):
        import tensorflow as tf

        key = f"{split}/tensors"
        if key not in self._bases:
            x, y = self.arrays[split]
            self._bases[key] = (tf.constant(x), tf.constant(y))
        return self._bases[key]

    def _finish(self, ds):
        import tensorflow as tf

        if self.section.prefetch:
            ds = ds.prefetch(tf.data.AUTOTUNE)
        options = tf.data.Options()
        options.deterministic = True
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return ds.with_options(options)

    def _check_split(self, split: str) -> None:
        if split not in self.arrays:
            raise ConfigError(
                f"split '{split}' does not exist; this data has: {', '.join(self.arrays)}"
                + (" (set data.splits.validation/test above 0 to make one)" if split in SPLITS else "")
            )


def prepare(section: DataSection, *, seed: int) -> PreparedData:
    """Load, split and scale the data a recipe names."""
    raw = sources.load(section.source)
    arrays = raw if "all" not in raw else _split(raw["all"], section)
    arrays = {k: _as_model_arrays(x, y, section, k) for k, (x, y) in arrays.items()}
    scaler = Scaler.fit(section.scale, arrays["train"][0])
    if scaler is not None:
        arrays = {k: (scaler(x).astype(np.float32), y) for k, (x, y) in arrays.items()}
    if section.feature_shape:
        arrays = {k: (_reshape(x, section.feature_shape), y) for k, (x, y) in arrays.items()}
    return PreparedData(section, arrays, seed=seed)


def _split(xy: tuple[np.ndarray, np.ndarray], section: DataSection) -> dict:
    x, y = xy
    if len(x) != len(y):
        raise ConfigError(f"data.source: features have {len(x)} rows but labels have {len(y)}")
    if len(x) == 0:
        raise ConfigError("data.source: the dataset is empty")
    order = np.random.default_rng(section.split_seed).permutation(len(x))
    fractions = section.splits
    n_val = int(round(fractions.validation * len(x)))
    n_test = int(round(fractions.test * len(x)))
    n_train = len(x) - n_val - n_test
    if n_train <= 0:
        raise ConfigError(f"data.splits: no examples left for training out of {len(x)}")
    cuts = {"train": order[:n_train], "validation": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
    return {k: (x[idx], y[idx]) for k, idx in cuts.items() if len(idx)}


def _as_model_arrays(x: np.ndarray, y: np.ndarray, section: DataSection, split: str):
    if len(x) == 0:
        raise ConfigError(f"data: split '{split}' is empty")
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        y = y.astype(np.int32)
    else:
        y = y.astype(np.float32)
    return x, y


def _reshape(x: np.ndarray, shape: list[int]) -> np.ndarray:
    per_example = int(np.prod(x.shape[1:]))
    if per_example != int(np.prod(shape)):
        raise ConfigError(
            f"data.feature_shape: {shape} holds {int(np.prod(shape))} values but each example "
            f"has {per_example} (shape {list(x.shape[1:])})"
        )
    return x.reshape((len(x), *shape))


def _describe(section: DataSection, arrays: dict) -> DataInfo:
    x, y = arrays["train"]
    all_y = np.concatenate([arrays[k][1] for k in arrays])
    if all_y.dtype == np.int32:
        if all_y.min() < 0:
            raise ConfigError(f"data: labels must be 0 or more for classification, found {int(all_y.min())}")
        return DataInfo(
            feature_shape=tuple(x.shape[1:]),
            task="classification",
            num_classes=int(all_y.max()) + 1,
            target_shape=tuple(y.shape[1:]),
            sizes={k: len(v[0]) for k, v in arrays.items()},
        )
    return DataInfo(
        feature_shape=tuple(x.shape[1:]),
        task="regression",
        num_classes=None,
        target_shape=tuple(y.shape[1:]),
        sizes={k: len(v[0]) for k, v in arrays.items()},
    )
