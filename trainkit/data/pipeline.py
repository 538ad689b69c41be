"""Sources to ``tf.data`` pipelines.

:func:`prepare` loads a source (:mod:`trainkit.data.sources`), splits it
deterministically (``data.split_seed``), fits what needs the training split
(feature scaling, ``normalize`` statistics) and describes the result
(:class:`DataInfo`: feature shape, task, classes, sizes), all before training.
:class:`PreparedData` then hands out the pipeline of any split::

    training:   source -> [shard] -> load/decode -> transforms -> [cache]
                -> shuffle(seed, epoch) -> augment(seed, epoch, example) -> batch -> prefetch
    evaluation: source -> [shard] -> load/decode -> transforms -> eval_transforms -> [cache]
                -> batch -> prefetch

Training reads one stream over all epochs (:meth:`PreparedData.training_stream`).
Each epoch is shuffled with a seed derived from the recipe seed and the epoch
number, so each epoch sees a new order, the same recipe always sees the same
orders, and an epoch never bleeds into the next one inside a batch. Random
augmentation is seeded by (seed, epoch, example index) with stateless ops. The
data position is therefore reproducible rather than saved: a run resumed at
(epoch, batch) rebuilds the stream from that epoch and skips the batches already
seen. (TensorFlow 2.21 cannot checkpoint the iterators of distributed datasets.)

Sources held in memory or as a file list are shuffled fully by a stateless
permutation of the example indices; streamed (and cached) ones through a buffer
of ``data.shuffle_buffer`` elements whose seed is again a function of (seed, epoch).

Evaluation pipelines are never shuffled or augmented; ``data.eval_transforms``
takes the place of ``data.augment`` there (a centre crop where training crops at
random), for every split read for evaluation, the training split included.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from trainkit.console import size_text, warn
from trainkit.data import preset_text, series, sources, text, transforms
from trainkit.data.sources import Split, plain
from trainkit.errors import ConfigError, TrainkitError, user_code_error
from trainkit.recipe import DataSection, ReshapeTransform

SPLITS = ("train", "validation", "test")
Task = Literal["classification", "regression"]

# The graph-level seed used while building a streamed epoch's shuffle. Dataset.shuffle
# combines the graph seed with its own; pinning it makes the order a function of
# (recipe seed, epoch) alone, and it avoids TF's get_seed comparing a tensor seed
# with 0 (which fails inside flat_map when the global seed is 0).
_SHUFFLE_GRAPH_SEED = 0x7A1C
_AUGMENT_SALT = 0x0A06
_SHUFFLE_SALT = 0x5F1E

# Files of a cache that tf.data was still writing: a writer works on
# PREFIX_<n>.* (with a .lockfile) and renames its work to PREFIX.index/.data
# only when it has read its input to the end.
_PARTIAL_CACHE_FILE = re.compile(r".+_\d+\.(lockfile|index|data-\d+-of-\d+(\.tempstate\d+)?)$")

#: A split that ``data.text`` tokenizes inside the pipeline (a streamed source) is kept
#: in memory after its first pass, with ``data.cache`` unset, while the tokenized splits
#: fit in this share of the memory available when the run starts.
AUTO_CACHE_SHARE = 0.25
# Bytes tf.data's memory cache holds per tensor beside its values (an estimate, on the safe side).
_TENSOR_OVERHEAD = 128
# Records parsed and transformed per call where the examples are then cached one by one,
# or cut into smaller batches: tokenizing or parsing whole batches costs a fraction of
# doing it record by record.
_BASE_BATCH = 256
# The most parsed bytes in one such block (several may be in flight at once).
_BLOCK_BYTES = 4 << 20
# Records whose split is decided per call in a stream cut by ``data.splits`` fractions
# (fewer where they would hold more than _BLOCK_BYTES).
_RANGE_BLOCK = 256


@dataclass(frozen=True)
class DataInfo:
    """What the model and the loss need to know about the data."""

    feature_shape: tuple[int, ...] | dict[str, tuple[int, ...]]
    task: Task
    num_classes: int | None
    """Number of classes for classification (labels are ``0..num_classes-1``)."""
    target_shape: tuple[int, ...]
    sizes: dict[str, int] = field(default_factory=dict)
    class_names: list[str] | None = None
    feature_names: list[str] | None = None
    """Names of the feature columns of a table source (CSV columns, scikit-learn's
    ``feature_names``): what ``trainkit predict`` reads from a CSV header."""
    skipped: tuple[str, ...] = ()
    """Files skipped as unreadable (``skip_bad_images``, ``skip_bad_files``)."""
    vocab_size: int | None = None
    """Size of the token vocabulary of tokenized text (``data.text``), padding and OOV included."""
    target_scale: tuple[list[float], list[float]] | None = None
    """Mean and standard deviation of each regression target over the training split
    (in-memory sources): builders that declare ``target_scale`` predict standardized
    targets and rescale them."""

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

    def step(self) -> transforms.Step:
        """The scaling as a preprocessing step (a ``Normalization`` layer, one statistic per value)."""
        return {"type": "normalize", "field": "data.scale", "mean": self.offset.tolist(), "std": self.scale.tolist(), "per": "element"}


@dataclass(frozen=True)
class EvaluationCycle:
    """An endless iterator over an evaluation split, and how many batches are one pass."""

    iterator: Any
    batches: int


class PreparedData:
    """The splits of one recipe's data, ready to become ``tf.data`` pipelines.

    Build it with :func:`prepare`. ``arrays`` holds the splits of in-memory sources
    (``(x, y)`` NumPy arrays after the transforms); streamed sources have none.
    """

    def __init__(
        self,
        section: DataSection,
        splits: dict[str, Split],
        *,
        seed: int,
        info: DataInfo,
        static: transforms.TransformFn,
        augment: transforms.TransformFn | None,
        evaluation: transforms.TransformFn | None = None,
        ignore_errors: bool = False,
        cache_dir: str | os.PathLike | None = None,
        raw_splits: dict[str, Split] | None = None,
        preprocessing: tuple[list[transforms.Step], str | None] = ([], None),
        on_batches: tuple[transforms.TransformFn | None, transforms.TransformFn | None] = (None, None),
    ):
        self.section = section
        # What the source gave, before data.scale and the transforms: the inputs an
        # exported model takes.
        self._raw = raw_splits if raw_splits is not None else splits
        self.preprocessing, self.not_exportable = preprocessing
        """The steps of the Keras preprocessing layers this pipeline applies for
        evaluation, in order (what trainkit.serving puts in front of the model), and
        why the other transforms keep it from being exported (None: they don't)."""
        self.seed = seed
        self.info = info
        self.text_step: transforms.Step | None = None
        """``data.text``'s preprocessing step (its vocabulary), if the features are text."""
        self._splits = splits
        self._static = static
        self._augment = augment
        self._evaluation = evaluation
        # (static, evaluation) transforms applied to whole batches; None where one
        # of them needs single examples (then records are parsed one at a time).
        self._on_batches = on_batches
        self._ignore_errors = ignore_errors
        self._cache_dir = Path(cache_dir) if cache_dir else None
        # The splits kept in memory with data.cache unset (see choose_cache), and the
        # start header's line that says which and why (None: there is nothing to say).
        self._auto_cached: frozenset[str] = frozenset()
        self.cache_note: str | None = None
        self._bases: dict = {}
        # Evaluation datasets by (split, take), each with the strategy it was made for.
        self._evaluation_sets: dict = {}
        self.threads: int | None = None
        """A thread pool of this size for the pipelines made from here on, one thread per
        op (a sidecar evaluator's: the training beside it keeps the cores); None:
        tf.data's own, one thread per core."""

    def fresh(self) -> PreparedData:
        """The same data with no pipeline built yet: for a parameter-server worker,
        to which datasets already built (and cached) on the chief cannot travel.

        A relative ``data.cache`` path is kept in memory there: several workers
        cannot write one set of cache files, and the run directory is the chief's.
        """
        import copy

        clone = copy.copy(self)
        clone._bases = {}
        clone._evaluation_sets = {}
        clone._cache_dir = None
        return clone

    def explain_read_error(self, err: BaseException) -> ConfigError | None:
        """For an error that reading an image folder raised mid-pipeline, the one
        line naming the file (TensorFlow's decode error names none); else None.

        Only runs when something already failed: it decodes the folder's files
        one by one until one fails.
        """
        import tensorflow as tf

        if not isinstance(err, tf.errors.InvalidArgumentError) or self.section.source.type != "image_folder":
            return None
        channels = self.section.source.channels
        for split in self._splits.values():
            if split.table is None:
                continue
            found = sources.first_unreadable_image(split.table[0], channels=channels)
            if found:
                path, reason = found
                return ConfigError(
                    f"data.source: {path} is not a readable image ({reason}); remove it, or set "
                    "data.source.skip_bad_images: true to skip such files"
                )
        return None

    def write_fitted(self, directory: str | os.PathLike) -> None:
        """Write what was fitted on the training split and a resumed run reuses
        (``data.text``'s vocabulary) into the run directory."""
        if self.text_step is None:
            return
        if self.text_step["type"] == "preset":
            preset_text.write_step(Path(directory), self.text_step)
        elif self.text_step["type"] != "vectorize":
            text.write_tokenizer_file(Path(directory), self.text_step)
        else:
            text.write_vocabulary(Path(directory), self.text_step)

    def use_cache_dir(self, directory: str | os.PathLike) -> None:
        """Keep the files of a relative ``data.cache`` path under ``directory`` (the run
        directory) from now on. Pipelines already built keep their cache.

        Call it only while holding the run directory's lock: cache files that are
        still being written there then belong to a process that died mid-epoch
        (TensorFlow leaves a ``.lockfile`` that would fail every later reader with
        "concurrent caching iterator"), and they are removed. A complete cache is
        reused as it is.
        """
        self._cache_dir = Path(directory)
        self._bases = {k: v for k, v in self._bases.items() if k[0] == "columns"}
        self._evaluation_sets = {}
        folder = self._cache_folder()
        if folder is None or not folder.is_dir():
            return
        partial = [f for f in folder.iterdir() if f.is_file() and _PARTIAL_CACHE_FILE.fullmatch(f.name)]
        for file in partial:
            file.unlink(missing_ok=True)
        if partial:
            warn(f"note: removed {len(partial)} half-written data cache file(s) of an interrupted run from {folder}")

    def _uncached(self) -> PreparedData:
        """The same data read without ``data.cache``: for one-off reads (shapes, a
        sample batch) that must neither write cache files nor start a cache that
        training then finds half-written."""
        import copy

        clone = copy.copy(self)
        clone.section = self.section.model_copy(update={"cache": False})
        clone._auto_cached = frozenset()
        clone._bases = {k: v for k, v in self._bases.items() if k[0] == "columns"}
        clone._evaluation_sets = {}
        return clone

    # -- what there is ----------------------------------------------------------

    @property
    def splits(self) -> list[str]:
        """The names of the splits this data has."""
        return list(self._splits)

    def has_split(self, split: str) -> bool:
        return split in self._splits

    @property
    def arrays(self) -> dict[str, tuple[Any, np.ndarray]]:
        """``(x, y)`` per split of an in-memory source (empty for streamed sources)."""
        return {k: s.arrays for k, s in self._splits.items() if s.arrays is not None}

    def kind(self, split: str = "train") -> str:
        """``arrays``, ``table`` (a file list) or ``stream``."""
        self._check_split(split)
        return self._splits[split].kind

    def batch_size(self, *, training: bool) -> int:
        """The global batch size: ``data.batch_size`` for training, else
        ``data.eval_batch_size`` where it is set."""
        return self.section.batch_size if training else (self.section.eval_batch_size or self.section.batch_size)

    def steps_per_epoch(self, split: str = "train") -> int:
        n, batch = self.info.sizes[split], self.section.batch_size
        return n // batch if self.section.drop_remainder else -(-n // batch)

    # -- pipelines -------------------------------------------------------------

    def dataset(
        self,
        split: str,
        *,
        training: bool = False,
        epoch: int = 0,
        batch_size: int | None = None,
        input_context: Any = None,
    ):
        """One epoch of ``split`` as a batched ``tf.data.Dataset``.

        ``training=True`` shuffles and augments as epoch ``epoch`` of training does;
        evaluation keeps the split's order and applies ``data.eval_transforms``. ``batch_size`` defaults to the global
        batch size (``data.eval_batch_size`` for evaluation); with an
        ``input_context`` (a ``tf.distribute.InputContext``) this pipeline reads its
        own shard and batches per replica.
        """
        import tensorflow as tf

        self._check_split(split)
        shard, batch_size = self._per_pipeline(input_context, batch_size, training)
        epochs = tf.data.Dataset.from_tensors(tf.constant(epoch, tf.int64))
        ds = epochs.flat_map(plain(lambda e: self._epoch(split, e, training=training, batch_size=batch_size, shard=shard)))
        return self._finish(ds, sharded=shard is not None)

    def training_stream(self, *, start_epoch: int = 0, skip_batches: int = 0, input_context: Any = None):
        """Every training epoch from ``start_epoch`` on, back to back, batched.

        Batching happens inside each epoch, so a short last batch stays in its epoch.
        """
        import tensorflow as tf

        self._check_split("train")
        shard, batch_size = self._per_pipeline(input_context, None, True)
        epochs = tf.data.Dataset.range(start_epoch, 2**62)  # as good as endless
        stream = epochs.flat_map(
            plain(lambda e: self._epoch("train", e, training=True, batch_size=batch_size, shard=shard))
        )
        if skip_batches:
            stream = stream.skip(skip_batches)
        return self._finish(stream, sharded=shard is not None)

    def dataset_fn(self, input_context: Any, *, start_epoch: int = 0, skip_batches: int = 0):
        """The training stream of one input pipeline, for
        ``strategy.distribute_datasets_from_function``: this pipeline's shard
        (``input_context.input_pipeline_id`` of ``num_input_pipelines``; together
        the shards cover every example once per epoch), in per-replica batches.

        ``skip_batches`` counts this pipeline's batches.
        """
        return self.training_stream(start_epoch=start_epoch, skip_batches=skip_batches, input_context=input_context)

    def stages(self, split: str, *, training: bool) -> list[tuple[str, Any, bool]]:
        """The pipeline of ``split`` cut after each stage, to time them one by one:
        ``(name, dataset, batched)`` for ``read`` (raw records or rows), ``parse``
        (decoding), ``transform`` (``data.transforms``, and ``eval_transforms`` or
        augmentation) and ``batch`` (the whole pipeline, shuffled and prefetched).
        Each includes the stages before it; ``batched`` says whether its elements are
        batches. Parsing and transforms run per batch where the pipeline does so.

        Where an epoch gathers whole batches from memory (:meth:`_gathers_batches`),
        ``read`` is that gathering and ``parse`` and ``transform`` have no dataset
        (None): they ran once, when the data was prepared."""
        import tensorflow as tf

        self._check_split(split)
        s = self._splits[split]
        _, batch_size = self._per_pipeline(None, None, training)
        whole = self.dataset(split, training=training)
        if self._gathers_batches(split, training=training):
            gathered = self._epoch(split, 0, training=training, batch_size=batch_size)
            return [("read", gathered, True), ("parse", None, True), ("transform", None, True), ("batch", whole, True)]
        read = self._records(split, None) if s.stream is not None else tf.data.Dataset.from_tensor_slices(self._columns(split))
        # Parsed and transformed a batch at a time wherever the pipeline does so, a cached
        # split's first pass included (see _make_base); bad records skipped as it skips them.
        by_batch = self._on_batches_of(split, None, training=training)
        if by_batch is not None:  # (in the blocks the pipeline parses: see _parsed_batches)
            blocks = read.batch(self._parse_block(read, by_batch, batch_size))
            parse, transform = self._map(blocks, s.load_batch), self._map(blocks, by_batch)
        else:
            load = s.load or (lambda x, y: (x, y))
            parse, transform = self._map(read, lambda *raw: load(*raw)), self._map(read, self._loader(split, training=training))
            if self._ignore_errors:
                parse, transform = parse.ignore_errors(), transform.ignore_errors()
        parsed = batched = by_batch is not None
        if training and self._augment is not None:
            augment, examples = self._augment, transform.unbatch() if batched else transform
            transform = self._map(examples.enumerate(), lambda i, e: augment(*e, tf.stack([i, tf.constant(0, tf.int64)])))
            batched = False
        return [("read", read, False), ("parse", parse, parsed), ("transform", transform, batched), ("batch", whole, True)]

    def distributed(self, strategy, split: str, *, take: int | None = None):
        """One epoch of an evaluation split, spread over the strategy's replicas.

        Each global batch is divided among the replicas (a short last batch too),
        so every example is counted once whatever the replica count.

        Built once per split (and ``take``) and strategy, then kept: a dataset is
        a description, so every evaluation iterates the same one anew. Building
        it again cost as much as evaluating a small validation split.
        """
        kept = self._evaluation_sets.get((split, take))
        if kept is not None and kept[0] is strategy:
            return kept[1]
        ds = self.dataset(split)
        if take is not None:
            ds = ds.take(take)
        distributed = strategy.experimental_distribute_dataset(ds)
        self._evaluation_sets[(split, take)] = (strategy, distributed)
        return distributed

    def evaluation_cycle(self, strategy, split: str, *, take: int | None = None) -> EvaluationCycle | None:
        """One iterator that goes round an in-memory evaluation split for the whole run.

        Creating and destroying an iterator per evaluation (tf.data starts and
        stops its pipeline each time) cost ~25 ms against ~3 ms for evaluating
        digits' validation split itself. An in-memory split on one replica has
        an exactly known number of batches, so one endless iterator serves every
        evaluation, each reading exactly one pass. None where that count is not
        known (streamed or file sources) or the batches are split over replicas.
        """
        import tensorflow as tf

        self._check_split(split)
        if self._splits[split].kind != "arrays" or strategy.num_replicas_in_sync != 1:
            return None
        key = ("cycle", split, take)
        kept = self._evaluation_sets.get(key)
        if kept is not None and kept[0] is strategy:
            return kept[1]
        batches = -(-self.info.sizes[split] // self.batch_size(training=False))
        if take is not None:
            batches = min(batches, take)
        if batches == 0:
            return None
        ds = self.dataset(split)
        ds = ds.take(batches).repeat()
        options = tf.data.Options()
        # Without autotuning, destroying this long-lived iterator never waits for
        # the autotuner's sleeping thread (up to a minute, see trainkit.teardown).
        options.autotune.enabled = False
        ds = ds.with_options(options)
        cycle = EvaluationCycle(iter(strategy.experimental_distribute_dataset(ds)), batches)
        self._evaluation_sets[key] = (strategy, cycle)
        return cycle

    def distributed_training(self, strategy, *, start_epoch: int = 0, skip_batches: int = 0):
        stream = self.training_stream(start_epoch=start_epoch, skip_batches=skip_batches)
        return strategy.experimental_distribute_dataset(stream)

    def raw_dataset(self, split: str, *, batch_size: int | None = None):
        """``split`` as the source gives it, batched, in evaluation order: features
        before ``data.scale`` and every transform (what an exported model takes)."""
        import tensorflow as tf

        self._check_split(split)
        s = self._raw[split]
        if s.arrays is not None:
            ds = tf.data.Dataset.from_tensor_slices(s.arrays)
        else:
            ds = s.stream() if s.stream is not None else tf.data.Dataset.from_tensor_slices(s.table)
            ds = self._map(ds, s.load or (lambda x, y: (x, y)))
            if self._ignore_errors:
                ds = ds.ignore_errors()
        return ds.batch(batch_size or self.batch_size(training=False))

    def examples(self, split: str, n: int) -> list[tuple[Any, Any]]:
        """The first ``n`` examples of ``split`` as evaluation sees them (NumPy), unbatched."""
        ds = self.dataset(split, batch_size=1).take(n)
        out = []
        for x, y in ds.as_numpy_iterator():
            out.append((({k: v[0] for k, v in x.items()} if isinstance(x, dict) else x[0]), y[0]))
        return out

    def sample_batch(self, n: int = 4):
        """A small batch of the training split in evaluation order (for shape checks).

        Read around ``data.cache``: it runs before training (before the run
        directory exists), and a partly read cache would be thrown away anyway.
        """
        if self._plain_arrays():  # the first n examples, as the pipeline would give them
            import tensorflow as tf

            x, y = self._splits["train"].arrays
            return tf.nest.map_structure(lambda a: tf.constant(a[:n]), x), tf.constant(y[:n])
        return next(iter(self._uncached().dataset("train", batch_size=n).take(1)))

    def _plain_arrays(self) -> bool:
        """Every split in memory, read as it is: no augmentation, no evaluation transforms."""
        return (
            self._augment is None
            and self._evaluation is None
            and all(s.kind == "arrays" and s.load is None for s in self._splits.values())
        )

    # -- building blocks ----------------------------------------------------------

    def _per_pipeline(self, input_context: Any, batch_size: int | None, training: bool):
        if batch_size is None:
            batch_size = self.batch_size(training=training)
        if input_context is None:
            return None, batch_size
        shard = (input_context.num_input_pipelines, input_context.input_pipeline_id)
        per_replica = input_context.get_per_replica_batch_size(batch_size)
        return (shard if shard[0] > 1 else None), per_replica

    def _map(self, ds, fn: Callable):
        import tensorflow as tf

        calls = tf.data.AUTOTUNE if self.section.parallel_calls == "auto" else self.section.parallel_calls
        return ds.map(plain(fn), num_parallel_calls=calls, deterministic=self.section.deterministic)

    def cached(self, split: str) -> bool:
        """Whether ``split``'s transformed examples are kept after their first pass
        (``data.cache``, or a tokenized split kept in memory): later epochs read them
        from the cache, not through the stages before it."""
        self._check_split(split)
        return self._splits[split].kind != "arrays" and self._cached(split)  # (arrays: see _gathers_batches)

    def _cached(self, split: str | None = None) -> bool:
        """Whether ``data.cache`` asks for a cache; with ``split``: whether that split's
        transformed examples are cached (by ``data.cache``, or kept in memory by
        :func:`choose_cache`)."""
        cache = self.section.cache
        return (cache is not False and cache != "none") or split in self._auto_cached

    def _indexed(self, split: str) -> bool:
        """Shuffled by an index permutation (else through a buffer)."""
        kind = self._splits[split].kind
        return kind == "arrays" or (kind == "table" and not self._cached(split))

    def _evaluates(self, training: bool) -> bool:
        """Whether a pipeline applies ``data.eval_transforms``."""
        return not training and self._evaluation is not None

    def _loader(self, split: str, *, training: bool) -> Callable:
        """Raw record (or table row) to a transformed ``(x, y)``."""
        s = self._splits[split]
        static, evaluation = self._static, self._evaluation if self._evaluates(training) else None
        load = s.load or (lambda x, y: (x, y))
        in_memory = s.kind == "arrays"  # transforms were applied when the data was prepared

        def fn(*raw):
            x, y = load(*raw)
            if not in_memory:
                x, y = static(x, y)
            if evaluation is not None:
                x, y = evaluation(x, y)
            return x, y

        return fn

    def _columns(self, split: str):
        import tensorflow as tf

        key = ("columns", split)
        if key not in self._bases:
            s = self._splits[split]
            data = s.arrays if s.arrays is not None else s.table
            with tf.init_scope():  # built once, eagerly, even when first asked for inside flat_map
                self._bases[key] = tf.nest.map_structure(tf.constant, data)
        return self._bases[key]

    def _base(self, split: str, shard, *, training: bool):
        """The transformed, unshuffled elements of a streamed or cached split (built once)."""
        import tensorflow as tf

        # Training and evaluation share a split's base unless eval_transforms differ.
        key = ("base", split, shard, self._evaluates(training))
        if key not in self._bases:
            with tf.init_scope():  # built once, eagerly, even when first asked for inside flat_map
                self._bases[key] = self._make_base(split, shard, training=training)
        return self._bases[key]

    def _make_base(self, split: str, shard, *, training: bool):
        import tensorflow as tf

        s = self._splits[split]
        by_batch = self._on_batches_of(split, shard, training=training)
        if by_batch is not None:  # parsed and transformed a batch at a time, then cut into examples again
            return self._cache(self._map(self._records(split, shard).batch(_BASE_BATCH), by_batch).unbatch(), split, shard, training)
        if s.stream is not None:
            ds = s.stream()
        else:
            ds = tf.data.Dataset.from_tensor_slices(self._columns(split))
        if shard:
            ds = ds.shard(*shard)
        ds = self._map(ds, self._loader(split, training=training))
        if self._ignore_errors:
            ds = ds.ignore_errors()
        return self._cache(ds, split, shard, training)

    def _cache(self, ds, split: str, shard, training: bool):
        return ds.cache(self._cache_file(split, shard, training)) if self._cached(split) else ds

    @property
    def caches_to_files(self) -> bool:
        """Whether ``data.cache`` writes files (rather than keeping the cache in memory)."""
        return self._cache_folder() is not None

    def _cache_folder(self) -> Path | None:
        """Where the cache files go; None for a cache in memory, or none."""
        cache = self.section.cache
        if not self._cached() or cache is True or cache == "memory":
            return None
        path = Path(cache)
        if not path.is_absolute():
            if self._cache_dir is None:
                return None  # outside a run (trainkit data, the API): keep it in memory, write nothing
            path = self._cache_dir / path
        return path

    def _cache_file(self, split: str, shard, training: bool) -> str:
        path = self._cache_folder()
        if path is None:
            return ""
        path.mkdir(parents=True, exist_ok=True)  # tf.data does not create it
        name = split
        if self._evaluation is not None and training == (split != "train"):
            # A split read the other way than usual (the training split evaluated):
            # eval_transforms make its examples differ, so they get their own files.
            name += "-train" if training else "-eval"
        name += f"-shard{shard[1]}of{shard[0]}" if shard else ""
        return str(path / name)

    def _epoch_seed(self, epoch, salt: int):
        """A stateless seed (shape [2]) for (recipe seed, epoch, salt)."""
        import tensorflow as tf

        base = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(epoch, tf.int64)])
        return tf.random.experimental.stateless_fold_in(tf.random.experimental.stateless_fold_in(base, salt), 0)

    def _elements(self, split: str, epoch, *, training: bool, shard):
        """One epoch of ``split``, unbatched; ``epoch`` is a tensor (inside ``flat_map``)."""
        import tensorflow as tf

        s = self._splits[split]
        shuffle = training and self.section.shuffle_buffer > 0
        if self._indexed(split):
            order = tf.range(s.size, dtype=tf.int64)
            if shuffle:
                order = tf.random.experimental.stateless_shuffle(order, seed=tf.stack([tf.constant(self.seed, tf.int64), tf.cast(epoch, tf.int64)]))
            ds = tf.data.Dataset.from_tensor_slices(order)
            if shard:
                ds = ds.shard(*shard)
            columns, load = self._columns(split), self._loader(split, training=training)
            ds = self._map(ds, lambda i: load(*[tf.nest.map_structure(lambda c: tf.gather(c, i), col) for col in columns]))
            if self._ignore_errors:
                ds = ds.ignore_errors()
        else:
            ds = self._base(split, shard, training=training)
            if shuffle:
                ds = _seeded_shuffle(ds, self.section.shuffle_buffer, self._epoch_seed(epoch, _SHUFFLE_SALT))
        if training and self._augment is not None:
            augment, seed = self._augment, self._epoch_seed(epoch, _AUGMENT_SALT)
            ds = self._map(
                ds.enumerate(),
                lambda i, element: augment(*element, tf.random.experimental.stateless_fold_in(seed, i)),
            )
        return ds

    def _epoch(self, split: str, epoch, *, training: bool, batch_size: int, shard=None):
        import tensorflow as tf

        drop = self.section.drop_remainder and training
        s = self._splits[split]
        if self._gathers_batches(split, training=training):
            # Fast path for in-memory arrays with no per-example work left: cut
            # the epoch's index order into batches with one reshape and gather
            # each batch whole. (Batching indices one element at a time cost
            # three times as much per batch, as much as a tiny model's step.)
            order = tf.range(s.size, dtype=tf.int64)
            if training and self.section.shuffle_buffer:
                order = tf.random.experimental.stateless_shuffle(order, seed=tf.stack([tf.constant(self.seed, tf.int64), tf.cast(epoch, tf.int64)]))
            size = s.size
            if shard:  # what Dataset.shard(count, index) keeps: index, index + count, ...
                count, index = shard
                order, size = order[index::count], len(range(index, s.size, count))
            full = size // batch_size
            indices = tf.data.Dataset.from_tensor_slices(tf.reshape(order[: full * batch_size], [full, batch_size]))
            if size % batch_size and not drop:
                indices = indices.concatenate(tf.data.Dataset.from_tensors(order[full * batch_size :]))
            x, y = self._columns(split)
            return indices.map(plain(lambda i: (tf.nest.map_structure(lambda c: tf.gather(c, i), x), tf.gather(y, i))))
        load = self._batch_loader(split, shard, training=training)
        if load is not None:
            return self._parsed_batches(split, epoch, shard, load, training=training, batch_size=batch_size)
        return self._elements(split, epoch, training=training, shard=shard).batch(batch_size, drop_remainder=drop)

    def _gathers_batches(self, split: str, *, training: bool) -> bool:
        """Whether an epoch of ``split`` gathers whole batches from memory: in-memory
        arrays, transformed when the data was prepared, with no per-example work left."""
        s = self._splits[split]
        return s.kind == "arrays" and not (training and self._augment is not None) and not self._evaluates(training)

    def _records(self, split: str, shard):
        """The raw records of a streamed split (this pipeline's shard), built once."""
        import tensorflow as tf

        key = ("records", split, shard)
        if key not in self._bases:
            with tf.init_scope():  # built once, eagerly, even when first asked for inside flat_map
                ds = self._splits[split].stream()
                self._bases[key] = ds.shard(*shard) if shard else ds
        return self._bases[key]

    def _batch_loader(self, split: str, shard, *, training: bool) -> Callable | None:
        """A batch of raw records to a transformed batch, for epochs batched before they
        are parsed: where :meth:`_on_batches_of` allows it, with no cache (a cached
        split's examples are parsed once, in :meth:`_make_base`) and no per-example
        augmentation. Else None."""
        if self._cached(split) or (training and self._augment is not None):
            return None
        return self._on_batches_of(split, shard, training=training)

    def _on_batches_of(self, split: str, shard, *, training: bool) -> Callable | None:
        """A batch of raw records to a transformed batch, where every step can take a
        whole batch: the source parses batches (``load_batch``), the records have one
        shape, no records are skipped. Else None."""
        import tensorflow as tf

        s, (static, evaluation) = self._splits[split], self._on_batches
        evaluates = self._evaluates(training)
        if s.load_batch is None or static is None or (evaluates and evaluation is None) or self._ignore_errors:
            return None
        if not all(spec.shape.is_fully_defined() for spec in tf.nest.flatten(self._records(split, shard).element_spec)):
            return None  # records of different shapes (decoded images) cannot be batched before their transforms

        def fn(*records):  # one tensor, or (x, y) from a supervised TFDS dataset
            x, y = static(*s.load_batch(*records))
            return evaluation(x, y) if evaluates else (x, y)

        return fn

    def _parsed_batches(self, split: str, epoch, shard, load: Callable, *, training: bool, batch_size: int):
        """One epoch of batches parsed and transformed from raw records: shuffled
        (training) by the same seeded buffer, over records, that shuffles parsed
        examples otherwise, so the batches hold the same examples in the same order
        either way.

        Small batches of small examples are parsed several batches at a time
        (:meth:`_parse_block`), then cut into batches again: a parse call costs
        about the same for 32 small records as for 256 (0.15 and 0.17 ms here), and
        at 32 a call it held a tiny model's stream to 0.7x the speed of the same
        data in memory. The cut is ``rebatch``: the batches of ``unbatch().batch()``,
        so the same batches as batching the records directly, for one copy of each
        block (tf.distribute splits them among replicas as any batch: tested).
        """
        drop = self.section.drop_remainder and training
        records = self._records(split, shard)
        if training and self.section.shuffle_buffer > 0:
            records = _seeded_shuffle(records, self.section.shuffle_buffer, self._epoch_seed(epoch, _SHUFFLE_SALT))
        block = self._parse_block(records, load, batch_size)
        if block > batch_size:
            return self._map(records.batch(block), load).rebatch(batch_size, drop_remainder=drop)
        return self._map(records.batch(batch_size, drop_remainder=drop), load)

    def _parse_block(self, records, load: Callable, batch_size: int) -> int:
        """Records parsed per call for batches of ``batch_size``: whole batches, about
        :data:`_BASE_BATCH` records, at most :data:`_BLOCK_BYTES` parsed (several
        blocks may be in flight). ``batch_size`` itself where an example's parsed size
        is not fixed (strings, shapes that vary): padding to a block's longest example
        would change the batches."""
        size = _example_bytes(self._map(records.batch(batch_size), load).element_spec)
        if size is None:
            return batch_size
        wanted = -(-_BASE_BATCH // batch_size) * batch_size
        return max(batch_size, min(wanted, _BLOCK_BYTES // max(size, 1) // batch_size * batch_size))

    def _finish(self, ds, *, sharded: bool = False):
        import tensorflow as tf

        prefetch = self.section.prefetch
        if prefetch:
            ds = ds.prefetch(tf.data.AUTOTUNE if prefetch is True else int(prefetch))
        options = tf.data.Options()
        options.deterministic = self.section.deterministic
        if self.threads:
            options.threading.private_threadpool_size = self.threads
            options.threading.max_intra_op_parallelism = 1
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF if sharded else tf.data.experimental.AutoShardPolicy.DATA
        )
        return ds.with_options(options)

    def _check_split(self, split: str) -> None:
        if split not in self._splits:
            raise ConfigError(
                f"split '{split}' does not exist; this data has: {', '.join(self._splits)}"
                + (" (set data.splits.validation/test above 0 to make one)" if split in SPLITS else "")
            )


def _example_bytes(spec, *, batched: bool = True, per_tensor: int = 0) -> int | None:
    """Bytes of one example of (batches of) ``spec``, ``per_tensor`` more for each of its
    tensors; None where a shape is not fixed or a tensor holds strings."""
    import tensorflow as tf

    total = 0
    for part in tf.nest.flatten(spec):
        shape = part.shape[1:] if batched else part.shape
        if not shape.is_fully_defined() or part.dtype == tf.string:
            return None
        total += shape.num_elements() * part.dtype.size + per_tensor
    return total


def _seeded_shuffle(ds, buffer: int, seed):
    """``ds.shuffle`` with a seed that is a function of ``seed`` (a [2] tensor) alone."""
    import tensorflow as tf

    op_seed = tf.random.stateless_uniform([], seed=seed, minval=1, maxval=2**31 - 1, dtype=tf.int64)
    graph = tf.compat.v1.get_default_graph()
    previous = graph.seed
    graph.seed = _SHUFFLE_GRAPH_SEED
    try:
        return ds.shuffle(buffer, seed=op_seed, reshuffle_each_iteration=False)
    finally:
        graph.seed = previous


# ------------------------------------------------------------------------ prepare


def prepare(
    section: DataSection, *, seed: int, cache_dir: str | os.PathLike | None = None, run_dir: str | os.PathLike | None = None
) -> PreparedData:
    """Load, split and describe the data a recipe names; fit what needs the training split.

    ``cache_dir`` is where a relative ``data.cache`` path goes (the run directory).
    ``run_dir``: the run this continues, whose fitted vocabulary (``data.text``) is reused.
    """
    if section.source.type == "timeseries":  # cut by data.splits in time order, then windowed
        loaded = series.load_timeseries(section.source, section.splits)
    else:
        loaded = sources.load(section.source)
    splits = loaded.splits if "all" not in loaded.splits else _split(loaded.splits["all"], section)
    for name, s in splits.items():
        if s.size == 0:
            raise ConfigError(f"data: split '{name}' is empty")
    in_memory = all(s.kind == "arrays" for s in splits.values())
    if in_memory:
        splits = {k: _as_model_arrays(s) for k, s in splits.items()}
    elif section.scale != "none":
        raise ConfigError(
            f"data.scale: '{section.scale}' scaling is for in-memory sources; for a "
            f"'{section.source.type}' source use data.transforms: [{{type: normalize}}] (statistics from the training split)"
        )
    raw_splits = splits
    label_info = _labels(section, loaded, splits)
    text_step = _text_step(section, splits, seed=seed, run_dir=run_dir)
    static, augment, evaluation = _transforms(section, splits, seed=seed, num_classes=label_info["num_classes"], text_step=text_step)
    by_example, by_batch = transforms.chain(static), transforms.chain_on_batches(static)
    if in_memory and static:
        splits = {k: Split(s.size, arrays=_apply_in_memory(s.arrays, by_example, by_batch)) for k, s in splits.items()}
    provisional = PreparedData(
        section, splits, seed=seed, info=None, static=by_example, augment=augment,
        evaluation=transforms.chain(evaluation) if evaluation else None,
        ignore_errors=loaded.ignore_errors, cache_dir=cache_dir, raw_splits=raw_splits,
        preprocessing=transforms.exported_steps([*static, *evaluation]),
        on_batches=(by_batch, transforms.chain_on_batches(evaluation)),
    )
    provisional.text_step = text_step
    provisional.info = _describe(provisional, label_info, loaded)
    choose_cache(provisional)
    return provisional


def choose_cache(data: PreparedData, *, available: int | None = None) -> None:
    """Where ``data.text`` tokenizes a streamed split inside the pipeline, keep the
    tokenized examples in memory after their first pass when ``data.cache`` is unset
    and they fit in :data:`AUTO_CACHE_SHARE` of the ``available`` memory (default:
    what the machine has now); splits in order, train first. Sets ``data.cache_note``,
    the start header's line saying what is cached, or why not.

    A cache changes nothing but speed: a cached stream is shuffled after the cache by
    the same seeded buffer that shuffles its records otherwise, so the batches, and a
    resumed run, are the same either way.
    """
    streamed = [name for name in data.splits if data.kind(name) == "stream"]
    if data.text_step is None or not streamed:
        return
    cache, names = data.section.cache, f"{_split_names(streamed)} {'is' if len(streamed) == 1 else 'are'}"
    if cache == "none":
        data.cache_note = "data cache: off (data.cache: none): the text is tokenized again every epoch"
        return
    if cache is not False:
        where = "in memory" if cache is True or cache == "memory" else f"in files under {cache}"
        asked = "true" if cache is True else cache
        data.cache_note = f"data cache: the tokenized {names} kept {where} after the first pass (data.cache: {asked})"
        return
    if available is None:
        from trainkit.runtime import available_memory

        available = available_memory()
    if available is None:
        data.cache_note = f"data cache: the tokenized {names} not cached: the memory available here is unknown (data.cache: memory caches it)"
        return
    budget = int(available * AUTO_CACHE_SHARE)
    left, kept, refused = budget, [], []
    for name in streamed:
        size = _cached_bytes(data, name)
        fits = size is not None and size <= left
        (kept if fits else refused).append((name, size))
        left -= size if fits else 0
    data._auto_cached = frozenset(name for name, _ in kept)
    data._bases = {k: v for k, v in data._bases.items() if k[0] != "base"}  # (built for the choice before)
    data.cache_note = _auto_cache_note(kept, refused, available)


def _cached_bytes(data: PreparedData, split: str) -> int | None:
    """About how many bytes ``split``'s tokenized examples take in a memory cache; None
    where an example has no fixed size."""
    spec = data._uncached()._base(split, None, training=False).element_spec
    size = _example_bytes(spec, batched=False, per_tensor=_TENSOR_OVERHEAD)
    return None if size is None else size * data.info.sizes[split]


def _auto_cache_note(kept: list[tuple[str, int | None]], refused: list[tuple[str, int | None]], available: int) -> str:
    """The start header's line on the automatic cache: what is kept in memory, and why the rest is not."""

    def sized(parts: list[tuple[str, int | None]]) -> str:
        sizes = [size for _, size in parts]
        about = f" (~{size_text(sum(sizes))})" if None not in sizes else ""
        return f"{_split_names([name for name, _ in parts])}{about} {'is' if len(parts) == 1 else 'are'}"

    budget = f"{AUTO_CACHE_SHARE:.0%} of the {size_text(available)} of memory available"
    if not refused:
        return (
            f"data cache: the tokenized {sized(kept)} kept in memory after the first pass, within {budget} "
            "(data.cache: none turns this off)"
        )
    unsized = any(size is None for _, size in refused)
    why = f"{sized(refused)} not cached: " + ("an example has no fixed size" if unsized else f"{'it' if len(refused) == 1 else 'they'} would pass {budget}")
    if kept:
        return f"data cache: the tokenized {sized(kept)} kept in memory after the first pass; the {why}"
    return f"data cache: the tokenized {why}, so the text is tokenized again every epoch (data.cache: PATH caches it in files)"


def _split_names(names: list[str]) -> str:
    return f"split{'s' if len(names) > 1 else ''} {', '.join(names)}"


def _text_step(section: DataSection, splits: dict[str, Split], *, seed: int, run_dir) -> transforms.Step | None:
    """``data.text``'s preprocessing step, its vocabulary read from the run it continues
    or fitted on the training split only; the features must be text exactly when it is set."""
    spec_x = _raw_feature_spec(section, splits["train"], seed)
    is_text = not isinstance(spec_x, dict) and spec_x.dtype.name == "string"
    spec = None if section.text is not None and section.text.type == "none" else section.text
    if spec is not None and spec.type == "preset" and spec._implicit and not is_text:
        spec = None  # (a preset's preprocessor by default: for text only, token ids go as they are)
    if spec is None:
        if is_text or (isinstance(spec_x, dict) and any(v.dtype.name == "string" for v in spec_x.values())):
            raise ConfigError(
                "data.text: the features are text (strings), which a model cannot take; set data.text, "
                "e.g. {type: vectorize, max_tokens: 20000, sequence_length: 200}"
            )
        return None
    if not is_text:
        what = "a dict of features" if isinstance(spec_x, dict) else f"{spec_x.dtype.name} values"
        raise ConfigError(f"data.text: the features are {what}, not one text per example; data.text applies to string features")
    if section.scale != "none":
        raise ConfigError("data.scale: the features are text; scaling is for numbers (data.text turns text into numbers)")
    if spec.type == "preset":  # (a KerasHub preset's own preprocessor: nothing to fit)
        if spec.source is None:
            raise ConfigError(f"{text.FIELD}: preset needs a KerasHub preset: set data.text.source, or model: {{type: pretrained, source: PRESET}}")
        return preset_text.preset_step(spec, run_dir)
    if spec.type != "vectorize":  # (a tokenizer from a file: nothing to fit)
        return text.tokenizer_step(spec, run_dir)
    fitted = text.read_vocabulary(run_dir, spec)
    if fitted is None:
        fitted = text.fit_vocabulary(spec, _training_features(section, splits, transforms.chain([]), seed))
    return text.vectorize_step(spec, fitted)


def _raw_feature_spec(section: DataSection, split: Split, seed: int):
    """The element spec of one training example's features as the source gives them."""
    if split.kind == "arrays":
        return _array_spec(split.arrays)[0]
    uncached = section.model_copy(update={"cache": False})
    base = PreparedData(uncached, {"train": split}, seed=seed, info=None, static=transforms.chain([]), augment=None)
    return base._base("train", None, training=False).element_spec[0]


def _transforms(
    section: DataSection, splits: dict[str, Split], *, seed: int, num_classes: int | None, text_step: transforms.Step | None = None
):
    """The transforms of every split (``data.scale``, ``data.feature_shape`` and
    ``data.transforms``), of training (``data.augment``) and of evaluation
    (``data.eval_transforms``); each fitted transform fitted on the training split
    as the transforms before it leave it."""
    specs = list(section.transforms)
    fields = [f"data.transforms.{i}" for i in range(len(specs))]
    if section.feature_shape:
        specs.insert(0, ReshapeTransform(shape=list(section.feature_shape)))
        fields.insert(0, "data.feature_shape")
    for spec, field_name in zip(specs, fields, strict=True):
        if transforms.is_random(spec):
            raise ConfigError(f"{field_name}: transform '{spec.type}' is random: put it in data.augment (training only)")
    context = transforms.Context(num_classes=num_classes)
    static: list[transforms.Transform] = [transforms.from_step(text_step)] if text_step else []
    scaler = Scaler.fit(section.scale, splits["train"].arrays[0]) if section.scale != "none" else None
    if scaler is not None:
        static.append(transforms.from_step(scaler.step()))
    for spec, field_name in zip(specs, fields, strict=True):
        if transforms.needs_fit(spec):
            context.fitted[field_name] = transforms.fit(spec, _training_features(section, splits, transforms.chain(static), seed))
        static.append(transforms.make(spec, field_name=field_name, context=context))
    augment = [transforms.make(s, field_name=f"data.augment.{i}", context=context) for i, s in enumerate(section.augment)]
    evaluation = []
    for i, spec in enumerate(section.eval_transforms):
        field_name = f"data.eval_transforms.{i}"
        transforms.check(spec, field_name=field_name)
        if transforms.is_random(spec):
            raise ConfigError(
                f"{field_name}: transform '{spec.type}' is random, but evaluation must see the same examples "
                "every time: put it in data.augment (training only)"
            )
        evaluation.append(transforms.make(spec, field_name=field_name, context=context))
    return static, transforms.chain(augment) if augment else None, evaluation


def _split(whole: Split, section: DataSection) -> dict[str, Split]:
    """Divide one split into train/validation/test by ``data.splits`` (exact sizes).

    Arrays and tables use a NumPy permutation (``split_seed``); streams keep the
    records whose position in a stateless permutation of the record indices falls
    in the split's range, deciding a block of records at a time, so no more than a
    block is held in memory.
    """
    n = whole.size
    if n == 0:
        raise ConfigError("data.source: the dataset is empty")
    fractions = section.splits
    n_val = int(round(fractions.validation * n))
    n_test = int(round(fractions.test * n))
    n_train = n - n_val - n_test
    if n_train <= 0:
        raise ConfigError(f"data.splits: no examples left for training out of {n}")
    for name, fraction, count in (("validation", fractions.validation, n_val), ("test", fractions.test, n_test)):
        if fraction > 0 and count == 0:  # asked for, but too small to hold one example
            raise ConfigError(
                f"data.splits.{name}: {fraction:g} of {n} examples is no example at all; "
                f"use at least {1 / n:.2g}, or 0 for no {name} split"
            )
    ranges = {"train": (0, n_train), "validation": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
    ranges = {k: v for k, v in ranges.items() if v[1] > v[0]}
    if whole.kind in ("arrays", "table"):
        order = np.random.default_rng(section.split_seed).permutation(n)
        out = {}
        for name, (a, b) in ranges.items():
            idx = order[a:b]
            if whole.kind == "arrays":
                x, y = whole.arrays
                x = {k: v[idx] for k, v in x.items()} if isinstance(x, dict) else x[idx]
                out[name] = Split(len(idx), arrays=(x, y[idx]))
            else:
                out[name] = Split(len(idx), table=tuple(c[idx] for c in whole.table), load=whole.load)
        return out
    return {name: _stream_range(whole, a, b, section.split_seed) for name, (a, b) in ranges.items()}


def _stream_range(whole: Split, a: int, b: int, split_seed: int) -> Split:
    import tensorflow as tf

    n, stream = whole.size, whole.stream

    def part():
        seed = tf.constant([split_seed, 0x5B17], tf.int64)

        def in_range(index):
            position = tf.random.experimental.index_shuffle(index, seed, tf.constant(n - 1, tf.int64))
            return (position >= a) & (position < b)

        records = stream()
        if not all(spec.shape.is_fully_defined() for spec in tf.nest.flatten(records.element_spec)):
            # (records of different shapes cannot be batched: one at a time)
            return records.enumerate().filter(plain(lambda i, _: in_range(i))).map(plain(lambda i, record: record))

        # Whole blocks at a time, then one record at a time again: a function call per
        # record (the filter) held a stream cut by fractions to about 25k records/s.
        # A block holds its records twice (kept, and the block): at most _BLOCK_BYTES
        # each where a record's size is known; strings (serialized records) are not.
        size = _example_bytes(records.element_spec, batched=False)
        block = _RANGE_BLOCK if size is None else max(1, min(_RANGE_BLOCK, _BLOCK_BYTES // max(size, 1)))

        def kept(k, records):  # block k of the records: those whose index falls in the range
            mask = in_range(k * block + tf.range(tf.shape(tf.nest.flatten(records)[0])[0], dtype=tf.int64))
            return tf.nest.map_structure(lambda t: tf.boolean_mask(t, mask), records)

        return records.batch(block).enumerate().map(plain(kept)).unbatch()

    return Split(b - a, stream=part, load=whole.load, load_batch=whole.load_batch)


def _as_model_arrays(s: Split) -> Split:
    x, y = s.arrays
    x = {k: _float(v) for k, v in x.items()} if isinstance(x, dict) else _float(x)
    y = np.asarray(y)
    if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        y = y.astype(np.int32)
    else:
        y = y.astype(np.float32)
    return Split(s.size, arrays=(x, y))


def _float(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x.astype(np.float32) if x.dtype != np.float32 and x.dtype.kind in "fiub" else x


#: Examples an in-memory split's transforms take at a time where they take whole batches.
_IN_MEMORY_BLOCK = 4096


def _apply_in_memory(arrays, by_example: Callable, by_batch: Callable | None):
    """Run the (deterministic) transforms over an in-memory split once.

    Where every transform takes a whole batch (``by_batch``), blocks of examples go
    through it at once: the same elementwise ops on the same values (bit for bit,
    tested), in a fifth of the time for digits' training split (0.02 s, not 0.1 s of
    every run's start). A transform that refuses a batch is applied example by
    example, which also words its error for one example.
    """
    import tensorflow as tf

    examples = tf.data.Dataset.from_tensor_slices(arrays)
    if by_batch is not None:
        try:
            return _concatenated(examples.batch(_IN_MEMORY_BLOCK).map(plain(lambda x, y: by_batch(x, y))))
        except (TrainkitError, ValueError, TypeError):
            pass  # (the per-example pass below raises its own, clearer error if there is one)
    return _concatenated(examples.map(plain(lambda x, y: by_example(x, y)), num_parallel_calls=tf.data.AUTOTUNE).batch(_IN_MEMORY_BLOCK))


def _concatenated(batches) -> Any:
    import tensorflow as tf

    parts = list(batches.as_numpy_iterator())
    return tf.nest.map_structure(lambda *p: np.concatenate(p), *parts)


def _training_features(section: DataSection, splits: dict[str, Split], before, seed: int):
    """The training split's features after ``before``, as NumPy batches (one pass, no cache)."""
    import tensorflow as tf

    s = splits["train"]
    if s.kind == "arrays":
        ds = tf.data.Dataset.from_tensor_slices(s.arrays).map(plain(lambda x, y: before(x, y)))
    else:  # a one-off pass: it must not fill a cache
        uncached = section.model_copy(update={"cache": False})
        ds = PreparedData(uncached, {"train": s}, seed=seed, info=None, static=before, augment=None)._base("train", None, training=False)
    for x, _ in ds.batch(256).as_numpy_iterator():
        if isinstance(x, dict):
            raise ConfigError("data.transforms: normalize of dict features needs explicit mean and std")
        yield x


def _labels(section: DataSection, loaded: sources.Loaded, splits: dict[str, Split]) -> dict[str, Any]:
    """Task, number of classes and range checks, before any transform."""
    declared = section.num_classes
    kind, low, high = loaded.label_kind, None, None
    arrays = [s.arrays[1] for s in splits.values() if s.arrays is not None]
    if arrays:
        all_y = np.concatenate([a.reshape(len(a), -1) if a.ndim > 1 else a for a in arrays])
        if np.issubdtype(all_y.dtype, np.integer):
            kind, low, high = "class", int(all_y.min()), int(all_y.max())
        else:
            kind = "real"
    elif loaded.label_range is not None:
        low, high = loaded.label_range
    if kind == "class":
        if low is not None and low < 0:
            raise ConfigError(f"data: labels must be 0 or more for classification, found {low}")
        num_classes = declared or loaded.num_classes or (high + 1 if high is not None else None)
        if high is not None and num_classes is not None and high >= num_classes:
            by = "data.num_classes" if declared else "the source's classes"
            raise ConfigError(
                f"data: label {high} is out of range for {num_classes} classes ({by}): labels must lie in 0..{num_classes - 1}"
            )
        if declared and loaded.num_classes and loaded.num_classes > declared:
            raise ConfigError(f"data.num_classes: {declared}, but the source has {loaded.num_classes} classes")
        return {"task": "classification", "num_classes": num_classes}
    if declared:
        raise ConfigError("data.num_classes: the labels are real numbers (a regression), not classes")
    return {"task": "regression", "num_classes": None}


def _shape(spec) -> tuple:
    return tuple(spec.shape.as_list()) if spec.shape.rank is not None else None


def _check_splits_match(data: PreparedData, spec_of, train_spec) -> None:
    """The model sees training examples (after augment) and evaluation examples (after
    eval_transforms) of every split, the training split included: their specs must agree."""
    x_spec, y_spec = train_spec
    section = data.section
    for split in [*(s for s in data.splits if s != "train"), "train"]:
        other = spec_of(split, False)
        if _compatible((x_spec, y_spec), other):
            continue
        if section.augment or section.eval_transforms:

            def after(*groups: str) -> str:
                named = [f"data.{g}" for g in groups if getattr(section, g)]
                return f"after {', '.join(named)}" if named else "untransformed"

            raise ConfigError(
                f"data.eval_transforms: evaluation examples of split '{split}' are {_spec_text(other)} "
                f"({after('transforms', 'eval_transforms')}), but training examples are {_spec_text((x_spec, y_spec))} "
                f"({after('transforms', 'augment')}); they must have the same shapes and dtypes: end "
                "data.eval_transforms where data.augment ends (e.g. a center_crop or resize to the size a random_crop gives)"
            )
        raise ConfigError(
            f"data: evaluation examples of split '{split}' are {_spec_text(other)}, but training examples are "
            f"{_spec_text((x_spec, y_spec))}; they must have the same shapes and dtypes (check data.transforms and the source)"
        )


def _describe(data: PreparedData, label_info: dict, loaded: sources.Loaded) -> DataInfo:
    import tensorflow as tf

    # Element specs only: built without data.cache, so that describing the data
    # creates no cache folder (nothing is written before training starts).
    uncached = data._uncached()

    # Every split in memory with nothing left to apply: the arrays are the
    # examples, and their specs need no pipeline (building and tracing four of
    # them cost ~0.3 s of every start).
    array_specs = {split: _array_spec(s.arrays) for split, s in data._splits.items()} if data._plain_arrays() else {}

    def spec_of(split: str, training: bool):
        if split in array_specs:
            return array_specs[split]
        try:
            return uncached._elements(split, tf.constant(0, tf.int64), training=training, shard=None).element_spec
        except TrainkitError:
            raise
        except Exception as err:  # registered transforms run while it is traced
            raise user_code_error(err, f"data: the pipeline of split '{split}'") from None

    x_spec, y_spec = spec_of("train", True)
    feature_shape = {k: _shape(v) for k, v in x_spec.items()} if isinstance(x_spec, dict) else _shape(x_spec)
    for key, shape in (feature_shape.items() if isinstance(feature_shape, dict) else [("features", feature_shape)]):
        if shape is None or None in shape:
            raise ConfigError(
                f"data: the training {key} have no fixed shape ({shape}); add a resize transform "
                "(or set image_size) so that examples can be batched"
            )
    _check_splits_match(data, spec_of, (x_spec, y_spec))
    return DataInfo(
        feature_shape=feature_shape,
        task=label_info["task"],
        num_classes=label_info["num_classes"],
        target_shape=_shape(y_spec) or (),
        sizes={k: s.size for k, s in data._splits.items()},
        class_names=_class_names(data.section, label_info, loaded),
        feature_names=loaded.feature_names,
        skipped=tuple(loaded.skipped),
        vocab_size=text.vocabulary_size(data.text_step) if data.text_step else None,
        target_scale=_target_scale(data._splits["train"], label_info["task"]),
    )


def _target_scale(train: Split, task: str) -> tuple[list[float], list[float]] | None:
    """Mean and std per regression target over the training split (in memory only)."""
    if task != "regression" or train.arrays is None:
        return None
    y = np.asarray(train.arrays[1], np.float64)
    y = y.reshape(len(y), -1)
    std = y.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return [float(v) for v in y.mean(axis=0)], [float(v) for v in std]


def _array_spec(arrays) -> tuple:
    """The element spec of one example of in-memory ``(x, y)`` arrays."""
    import tensorflow as tf

    def one(a):
        return tf.TensorSpec(a.shape[1:], tf.as_dtype(a.dtype))

    x, y = arrays
    return tf.nest.map_structure(one, x), one(y)


def _class_names(section: DataSection, label_info: dict, loaded: sources.Loaded) -> list[str] | None:
    """``data.class_names``, else the source's names; one per class."""
    num_classes = label_info["num_classes"]
    if section.class_names is None:
        names = loaded.class_names
        return list(names) if names and num_classes and len(names) == num_classes else None
    if label_info["task"] != "classification":
        raise ConfigError("data.class_names: the labels are real numbers (a regression), which have no class names")
    if len(section.class_names) != num_classes:
        raise ConfigError(
            f"data.class_names: {len(section.class_names)} name(s) for {num_classes} classes; give one name per class, "
            f"in label order (label 0 first)"
        )
    return list(section.class_names)


def _spec_text(spec) -> str:
    """``features float32 [24, 24, 3], label int64 []`` for an element spec."""
    x, y = spec

    def one(t) -> str:
        return f"{t.dtype.name} {t.shape.as_list() if t.shape.rank is not None else '[?]'}"

    features = "{" + ", ".join(f"{k}: {one(v)}" for k, v in x.items()) + "}" if isinstance(x, dict) else one(x)
    return f"features {features}, label {one(y)}"


def _compatible(a, b) -> bool:
    import tensorflow as tf

    try:
        tf.nest.assert_same_structure(a, b)
    except (ValueError, TypeError):
        return False
    return all(x.shape == y.shape and x.dtype == y.dtype for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b), strict=True))
