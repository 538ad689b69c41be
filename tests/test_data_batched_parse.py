"""TFRecord records parsed a whole batch at a time give the batches that parsing one
record at a time gave, and those of the same data held in memory: the same examples
in the same order, every epoch, after a resume, for training and evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import trainkit
from trainkit.data import pipeline
from trainkit.data.pipeline import prepare
from trainkit.recipe import DataSection

N_TRAIN, N_TEST = 45, 13
FEATURES = {"x": {"dtype": "float32", "shape": [4]}, "label": {"dtype": "int64"}}
TRANSFORMS = [{"type": "normalize", "mean": 0.5, "std": 2.0}, {"type": "one_hot"}]


def _arrays(n: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    x = (np.arange(n * 4, dtype=np.float32).reshape(n, 4) + offset) / 7.0
    return x, ((np.arange(n) + offset) % 3).astype(np.int64)


@trainkit.register_dataset("test_batched_parse_arrays")
def _in_memory():
    return {"train": _arrays(N_TRAIN, 0), "test": _arrays(N_TEST, 1000)}


def _write(path: Path, x: np.ndarray, y: np.ndarray) -> str:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for row, label in zip(x, y, strict=True):
            feature = {
                "x": tf.train.Feature(float_list=tf.train.FloatList(value=row.tolist())),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("records")
    return {"train": _write(root / "train.tfrecord", *_arrays(N_TRAIN, 0)), "test": _write(root / "test.tfrecord", *_arrays(N_TEST, 1000))}


def _section(source: dict, **section) -> DataSection:
    return DataSection.model_validate({"source": source, "transforms": TRANSFORMS, "batch_size": 8, "eval_batch_size": 5, **section})


def _tfrecord(files: dict[str, str], **section):
    return prepare(_section({"type": "tfrecord", "files": files, "features": FEATURES, "inputs": "x", "label": "label"}, **section), seed=3)


def _batches(ds) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(ds.as_numpy_iterator())


def _assert_same(a, b, *, exact: bool = True) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        if exact:
            np.testing.assert_array_equal(xa, xb)
        else:
            np.testing.assert_allclose(xa, xb, rtol=1e-6)
        np.testing.assert_array_equal(ya, yb)


@pytest.mark.parametrize("drop_remainder", [False, True])
@pytest.mark.parametrize(("block", "block_bytes"), [(256, 4 << 20), (16, 4 << 20), (256, 1)])
def test_batched_parsing_gives_the_batches_of_one_record_at_a_time(files, drop_remainder, block, block_bytes, monkeypatch):
    # Records are parsed in blocks of whole batches (an epoch of 45 in one block, or in
    # blocks of 16: two batches of 8, and the epoch's last 13), then cut into batches;
    # or a batch at a time where a block would hold too many bytes.
    monkeypatch.setattr(pipeline, "_BASE_BATCH", block)
    monkeypatch.setattr(pipeline, "_BLOCK_BYTES", block_bytes)
    batched = _tfrecord(files, shuffle_buffer=16, drop_remainder=drop_remainder)
    # A cache in memory parses before the cache (a batch of records at a time, cached
    # example by example), then shuffles the examples by the buffer that shuffles records.
    cached = _tfrecord(files, shuffle_buffer=16, drop_remainder=drop_remainder, cache="memory")
    assert batched._batch_loader("train", None, training=True) is not None
    assert cached._batch_loader("train", None, training=True) is None
    with monkeypatch.context() as patched:  # the reference: every record parsed alone
        patched.setattr(type(batched), "_on_batches_of", lambda *args, **kwargs: None)
        single = _tfrecord(files, shuffle_buffer=16, drop_remainder=drop_remainder)
        references = [_batches(single.dataset("train", training=True, epoch=epoch)) for epoch in (0, 1)]
        reference_test = _batches(single.dataset("test"))
    for epoch in (0, 1):
        _assert_same(_batches(batched.dataset("train", training=True, epoch=epoch)), references[epoch])
        _assert_same(_batches(cached.dataset("train", training=True, epoch=epoch)), references[epoch])
    _assert_same(_batches(batched.dataset("test")), reference_test)
    _assert_same(_batches(cached.dataset("test")), reference_test)
    # Exact resume: the stream from epoch 1, batch 2 on is the uninterrupted one's tail.
    whole = _batches(batched.training_stream().take(14))
    resumed = _batches(batched.training_stream(start_epoch=1, skip_batches=2).take(14 - 2 - (5 if drop_remainder else 6)))
    _assert_same(whole[(5 if drop_remainder else 6) + 2 :], resumed)


def test_batched_tfrecord_stream_matches_the_same_data_in_memory(files):
    streamed = _tfrecord(files, shuffle_buffer=0)
    in_memory = prepare(_section({"type": "arrays", "name": "test_batched_parse_arrays"}, shuffle_buffer=0), seed=3)
    _assert_same(_batches(streamed.dataset("train", training=True)), _batches(in_memory.dataset("train", training=True)), exact=False)
    test = _batches(streamed.dataset("test"))
    assert [len(y) for _, y in test] == [5, 5, 3]  # eval_batch_size, the short last batch kept
    _assert_same(test, _batches(in_memory.dataset("test")), exact=False)


def test_a_mirrored_strategy_splits_batches_parsed_in_blocks_as_it_splits_any_batch(files, monkeypatch):
    # tf.distribute reads the batch size from the pipeline's last batching step, here
    # the cut of the parsed blocks: each replica must get its half of every batch (the
    # short last one of the epoch included).
    monkeypatch.setattr(pipeline, "_BASE_BATCH", 16)
    prepared = _tfrecord(files, shuffle_buffer=16)
    strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")[:2]])
    replicated = iter(strategy.experimental_distribute_dataset(prepared.training_stream()))
    for x, y in _batches(prepared.training_stream().take(7)):  # epoch 0 (5 x 8, then 5), then epoch 1's first
        xs, ys = (strategy.experimental_local_results(part) for part in next(replicated))
        assert len(xs) == 2 and abs(len(ys[0]) - len(ys[1])) <= 1
        np.testing.assert_array_equal(np.concatenate(xs), x)
        np.testing.assert_array_equal(np.concatenate(ys), y)


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_trainkit_data_times_the_parse_the_pipeline_runs(files, cache):
    """Its stages parse whole batches where the pipeline does, a cached split's first
    pass included (it was timed one record at a time: parse 21k against batch 147k)."""
    stages = {name: (ds, batched) for name, ds, batched in _tfrecord(files, cache=cache).stages("train", training=True)}
    for name in ("parse", "transform"):
        ds, batched = stages[name]
        x, _ = ds.element_spec
        assert batched and x.shape.as_list() == [None, 4], (name, x)
