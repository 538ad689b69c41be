"""Pipeline behaviour: reproducible order and augmentation per (seed, epoch),
resume by skipping, sharding over input pipelines, transforms, cache."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import trainkit
from trainkit.data.pipeline import prepare
from trainkit.errors import ConfigError
from trainkit.recipe import DataSection


@trainkit.register_dataset("test_ids", overwrite=True)
def ids(n: int = 40):
    """Features carry the example's id, so orders can be compared."""
    x = np.stack([np.arange(n), np.arange(n) % 5], axis=1).astype(np.float32)
    return x, np.arange(n) % 3


@trainkit.register_dataset("test_id_stream", overwrite=True)
def id_stream(n: int = 40):
    for i in range(n):
        yield np.array([i, i % 5], np.float32), i % 3


@trainkit.register_dataset("test_images", overwrite=True)
def images(n: int = 12):
    x = np.arange(n * 6 * 6 * 3, dtype=np.float32).reshape(n, 6, 6, 3) % 251
    return x, np.arange(n) % 2


BASE_IMAGE = np.arange(6 * 6 * 3, dtype=np.float32).reshape(6, 6, 3)


def id_image(i: int) -> np.ndarray:
    """A 6x6x3 image whose every pixel tells its example (i) and its position."""
    return BASE_IMAGE + 1000 * i


@trainkit.register_dataset("test_id_images", overwrite=True)
def id_images(n: int = 16):
    return np.stack([id_image(i) for i in range(n)]), np.arange(n) % 2


@trainkit.register_dataset("test_id_image_stream", overwrite=True)
def id_image_stream(n: int = 16):
    for i in range(n):
        yield id_image(i), i % 2


def section(source: str = "test_ids", **kwargs) -> DataSection:
    kind = "generator" if source in ("test_id_stream", "test_counted_stream", "test_id_image_stream") else "arrays"
    return DataSection.model_validate(
        {"source": {"type": kind, "name": source}, "splits": {"train": 1.0, "validation": 0.0, "test": 0.0}, "batch_size": 8, **kwargs}
    )


def order(ds) -> list[int]:
    return [int(v) for x, _ in ds.as_numpy_iterator() for v in x[:, 0]]


SOURCES = ["test_ids", "test_id_stream"]


@pytest.mark.parametrize("source", SOURCES)
def test_same_seed_same_order_new_epoch_new_order(source):
    keras.utils.set_random_seed(0)  # a global seed of 0 must not break seeded shuffles
    kwargs = {"shuffle_buffer": 100}
    a = prepare(section(source, **kwargs), seed=7)
    b = prepare(section(source, **kwargs), seed=7)
    epoch0 = order(a.dataset("train", training=True, epoch=0))
    assert sorted(epoch0) == list(range(40))
    assert epoch0 == order(b.dataset("train", training=True, epoch=0))
    assert epoch0 != order(a.dataset("train", training=True, epoch=1))
    assert epoch0 != order(prepare(section(source, **kwargs), seed=8).dataset("train", training=True, epoch=0))
    assert order(a.dataset("train")) == order(b.dataset("train"))  # evaluation keeps the split's order
    if a.arrays:
        assert order(a.dataset("train")) == [int(v) for v in a.arrays["train"][0][:, 0]]


@pytest.mark.parametrize("source", SOURCES)
def test_training_stream_is_the_epochs_back_to_back_and_resumes_by_skipping(source):
    keras.utils.set_random_seed(0)
    data = prepare(section(source, shuffle_buffer=100), seed=3)
    stream = order(data.training_stream().take(15))  # 5 batches per epoch
    epochs = [order(data.dataset("train", training=True, epoch=e)) for e in range(3)]
    assert stream == epochs[0] + epochs[1] + epochs[2]
    resumed = order(data.training_stream(start_epoch=1, skip_batches=2).take(4))
    assert resumed == epochs[1][16:] + epochs[2][:8]


def test_augmentation_is_seeded_by_seed_and_epoch_and_training_only():
    kwargs = {"augment": [{"type": "random_flip"}, {"type": "random_brightness", "max_delta": 10.0}], "shuffle_buffer": 0, "batch_size": 12}
    data = prepare(section("test_images", **kwargs), seed=1)
    again = prepare(section("test_images", **kwargs), seed=1)

    def batch(d, **kw):
        return next(iter(d.dataset("train", **kw)))[0].numpy()

    assert np.array_equal(batch(data, training=True, epoch=0), batch(again, training=True, epoch=0))
    assert not np.array_equal(batch(data, training=True, epoch=0), batch(data, training=True, epoch=1))
    assert np.array_equal(batch(data), data.arrays["train"][0])  # evaluation sees no augmentation
    streamed = next(iter(data.training_stream().skip(1)))[0].numpy()
    assert np.array_equal(streamed, batch(data, training=True, epoch=1))


def test_random_transform_outside_augment_is_refused():
    with pytest.raises(ValueError, match="'random_crop' is random, training-only augmentation: put it in data.augment"):
        section(transforms=[{"type": "random_crop", "size": [2, 2]}])


def test_transforms_scale_normalize_from_training_split_one_hot_cast():
    data = prepare(
        section("test_images", transforms=["scale", "normalize", "one_hot", {"type": "cast", "dtype": "float16"}]), seed=0
    )
    x, y = data.arrays["train"]
    assert x.dtype == np.float16 and y.shape == (12, 2)
    assert np.allclose(x.astype(np.float32).reshape(-1, 3).mean(0), 0, atol=1e-2)
    assert np.allclose(x.astype(np.float32).reshape(-1, 3).std(0), 1, atol=1e-2)
    assert data.info.num_classes == 2 and data.info.target_shape == (2,)


@pytest.mark.parametrize("spec", [
    {"transforms": ["scale", "normalize", "one_hot", {"type": "cast", "dtype": "float16"}]},
    {"scale": "standard", "transforms": [{"type": "resize", "size": [5, 7]}, {"type": "center_crop", "size": [4, 4]}, "normalize"]},
])
def test_in_memory_transforms_take_whole_batches_and_give_each_example_bit_for_bit(spec, monkeypatch):
    from trainkit.data import pipeline

    calls = []
    apply = pipeline._apply_in_memory
    monkeypatch.setattr(pipeline, "_apply_in_memory", lambda arrays, one, whole: calls.append(whole) or apply(arrays, one, whole))
    batched = prepare(section("test_images", **spec), seed=0)
    assert calls and all(whole is not None for whole in calls)  # (these transforms all take batches)
    monkeypatch.setattr(pipeline, "_apply_in_memory", lambda arrays, one, whole: apply(arrays, one, None))
    one_by_one = prepare(section("test_images", **spec), seed=0)
    assert batched.arrays.keys() == one_by_one.arrays.keys()
    for split in batched.arrays:
        for a, b in zip(tf.nest.flatten(batched.arrays[split]), tf.nest.flatten(one_by_one.arrays[split]), strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_normalize_statistics_come_from_the_training_split_of_a_stream():
    data = prepare(
        DataSection.model_validate(
            {"source": {"type": "generator", "name": "test_id_stream"}, "transforms": ["normalize"], "splits": {"train": 0.5, "validation": 0.5, "test": 0}}
        ),
        seed=0,
    )
    train = np.concatenate([x for x, _ in data.dataset("train").as_numpy_iterator()])
    assert np.allclose(train.mean(0), 0, atol=1e-5) and np.allclose(train.std(0), 1, atol=1e-4)
    validation = np.concatenate([x for x, _ in data.dataset("validation").as_numpy_iterator()])
    assert not np.allclose(validation.mean(0), 0, atol=1e-3)


def test_image_transforms_resize_and_crops():
    data = prepare(
        section(
            "test_images",
            transforms=[{"type": "resize", "size": [8, 8]}, {"type": "center_crop", "size": [6, 6]}],
            augment=[{"type": "random_crop", "size": [6, 6], "padding": 2}],
        ),
        seed=0,
    )
    assert data.info.feature_shape == (6, 6, 3)
    assert next(iter(data.dataset("train", training=True)))[0].shape == (8, 6, 6, 3)


def crop_offsets(x: np.ndarray) -> tuple[int, tuple[int, int]]:
    """The example and the (row, column) where a 4x4 crop of its id_image starts."""
    i = int(x[0, 0, 0] // 1000)
    for a in range(3):
        for b in range(3):
            if np.array_equal(x, id_image(i)[a : a + 4, b : b + 4]):
                return i, (a, b)
    raise AssertionError(f"not a 4x4 crop of example {i}")


@pytest.mark.parametrize("source,cache", [("test_id_images", False), ("test_id_image_stream", "memory"), ("test_id_image_stream", "files")])
def test_evaluation_sees_center_crops_where_training_crops_at_random(source, cache, tmp_path):
    kwargs = {
        "splits": {"train": 0.5, "validation": 0.5, "test": 0.0},
        "augment": [{"type": "random_crop", "size": [4, 4]}],
        "eval_transforms": [{"type": "center_crop", "size": [4, 4]}],
        "cache": cache,
        "batch_size": 4,
    }
    data = prepare(section(source, **kwargs), seed=0, cache_dir=tmp_path)
    assert data.info.feature_shape == (4, 4, 3)

    def crops(ds) -> list[tuple[int, tuple[int, int]]]:
        return [crop_offsets(x) for batch, _ in ds.as_numpy_iterator() for x in batch]

    validation = crops(data.dataset("validation"))
    train_evaluated = crops(data.dataset("train"))
    assert {offset for _, offset in validation + train_evaluated} == {(1, 1)}  # the centre, always
    assert sorted(i for i, _ in validation + train_evaluated) == list(range(16))
    epoch0, epoch1 = crops(data.dataset("train", training=True, epoch=0)), crops(data.dataset("train", training=True, epoch=1))
    assert sorted(i for i, _ in epoch0) == sorted(i for i, _ in train_evaluated)
    assert len({offset for _, offset in epoch0 + epoch1}) > 2  # random crops, anywhere in the image
    assert sorted(epoch0) != sorted(epoch1)  # drawn anew each epoch
    assert [crop_offsets(x)[1] for x, _ in data.examples("validation", 3)] == [(1, 1)] * 3
    if cache == "files":  # the training split read both ways: two caches
        assert {p.name for p in (tmp_path / "files").glob("*.index")} == {"train.index", "train-eval.index", "validation.index"}
        assert crops(data.dataset("train")) == train_evaluated  # read back from its own cache
    # Training is untouched by eval_transforms: other ones give the same training batches.
    resized = prepare(section(source, **{**kwargs, "eval_transforms": [{"type": "resize", "size": [4, 4]}]}), seed=0)
    assert crops(resized.dataset("train", training=True, epoch=0)) == epoch0


def test_eval_transforms_refuse_random_transforms_and_normalize():
    with pytest.raises(ValueError, match=r"eval_transforms.0: 'random_flip' is random, but evaluation must see the same examples"):
        section("test_id_images", eval_transforms=["random_flip"])
    with pytest.raises(ValueError, match=r"eval_transforms.1: normalize belongs in data.transforms"):
        section("test_id_images", eval_transforms=["scale", "normalize"])
    with pytest.raises(ConfigError, match=r"data.eval_transforms.0: transform 'test_noise' is random.*put it in data.augment"):
        prepare(section("test_id_images", eval_transforms=[{"type": "test_noise"}]), seed=0)


def test_training_and_evaluation_examples_of_different_shapes_are_refused_naming_both():
    splits = {"train": 0.5, "validation": 0.5, "test": 0.0}
    crop = [{"type": "random_crop", "size": [4, 4]}]
    with pytest.raises(ConfigError) as err:
        prepare(section("test_id_images", splits=splits, transforms=["scale"], augment=crop), seed=0)
    assert str(err.value) == (
        "data.eval_transforms: evaluation examples of split 'validation' are features float32 [6, 6, 3], label int32 [] "
        "(after data.transforms), but training examples are features float32 [4, 4, 3], label int32 [] "
        "(after data.transforms, data.augment); they must have the same shapes and dtypes: end data.eval_transforms "
        "where data.augment ends (e.g. a center_crop or resize to the size a random_crop gives)"
    )
    # With no validation or test split, evaluating the training split would still break.
    with pytest.raises(ConfigError, match=r"split 'train' are features float32 \[5, 5, 3\]"):
        prepare(section("test_id_images", augment=crop, eval_transforms=[{"type": "center_crop", "size": [5, 5]}]), seed=0)


def test_image_transform_on_flat_features_is_a_config_error():
    with pytest.raises(ConfigError, match=r"data.transforms.0: 'resize' does not fit the data"):
        prepare(section(transforms=[{"type": "resize", "size": [4, 4]}]), seed=0)


@trainkit.register_transform("test_add", overwrite=True)
def add(x, y, *, amount: float = 1.0):
    return x + amount, y


@trainkit.register_transform("test_noise", overwrite=True)
def noise(x, y, *, seed, scale: float = 1.0):
    return x + scale * tf.random.stateless_normal(tf.shape(x), seed=seed), y


def test_registered_transforms_plain_and_random():
    data = prepare(section(transforms=[{"type": "test_add", "amount": 100}], augment=[{"type": "test_noise"}], shuffle_buffer=0), seed=0)
    assert data.arrays["train"][0][:, 0].min() == 100
    a = next(iter(data.dataset("train", training=True)))[0].numpy()
    b = next(iter(data.dataset("train", training=True)))[0].numpy()
    assert np.array_equal(a, b) and not np.array_equal(a, data.arrays["train"][0][:8])
    with pytest.raises(ConfigError, match=r"random: put it in data.augment"):
        prepare(section(transforms=[{"type": "test_noise"}]), seed=0)
    with pytest.raises(ConfigError, match=r"has no argument 'amont'; did you mean 'amount'"):
        prepare(section(transforms=[{"type": "test_add", "amont": 1}]), seed=0)


def test_unknown_transform_suggests_builtin_and_registered_names():
    from trainkit.data import transforms

    spec = section(transforms=[{"type": "random_flp"}]).transforms[0]
    with pytest.raises(ConfigError, match="did you mean 'random_flip'"):
        transforms.check(spec, field_name="data.transforms.0")


class Context:
    """What distribute_datasets_from_function hands each input pipeline."""

    def __init__(self, pipelines: int, index: int, replicas: int):
        self.num_input_pipelines, self.input_pipeline_id, self.num_replicas_in_sync = pipelines, index, replicas

    def get_per_replica_batch_size(self, global_batch_size: int) -> int:
        return global_batch_size // self.num_replicas_in_sync


@pytest.mark.parametrize("source,cache", [("test_ids", False), ("test_id_stream", False), ("test_id_stream", True)])
def test_two_input_pipelines_read_disjoint_shards_that_cover_the_epoch(source, cache):
    data = prepare(section(source, shuffle_buffer=100, cache=cache), seed=5)
    shards = []
    for index in range(2):
        ds = data.dataset("train", training=True, epoch=2, input_context=Context(2, index, 2))
        assert ds.element_spec[0].shape[0] in (None, 4)  # per-replica batches
        shards.append(order(ds))
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(40))
    stream = data.dataset_fn(Context(2, 1, 2))
    assert order(stream.take(len(shards[1]) // 4)) == order(data.dataset("train", training=True, epoch=0, input_context=Context(2, 1, 2)))[: len(shards[1]) // 4 * 4]


def test_dataset_fn_feeds_distribute_datasets_from_function():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())
    data = prepare(section(), seed=0)
    dist = strategy.distribute_datasets_from_function(data.dataset_fn)
    batch = next(iter(dist))[0]
    assert [int(t.shape[0]) for t in strategy.experimental_local_results(batch)] == [4, 4]


CALLS = {"n": 0}


@trainkit.register_dataset("test_counted_stream", overwrite=True)
def counted_stream(n: int = 40):
    CALLS["n"] += 1
    yield from id_stream(n)


def test_memory_cache_reads_the_source_once_and_shuffles_each_epoch():
    data = prepare(section("test_counted_stream", cache="memory", shuffle_buffer=100), seed=0)
    calls = CALLS["n"]  # the counting pass of prepare
    stream = order(data.training_stream().take(15))
    assert sorted(stream[:40]) == list(range(40)) and sorted(stream[40:80]) == list(range(40))
    assert stream[:40] != stream[40:80]
    assert CALLS["n"] == calls + 1  # three epochs, one read of the source


def test_file_cache_goes_inside_the_given_directory(tmp_path):
    data = prepare(section("test_id_stream", cache="cache"), seed=0, cache_dir=tmp_path / "run")
    first = order(data.training_stream().take(10))
    assert any((tmp_path / "run" / "cache").iterdir())
    again = prepare(section("test_id_stream", cache="cache"), seed=0, cache_dir=tmp_path / "run")
    assert order(again.training_stream().take(10)) == first
    nowhere = prepare(section("test_id_stream", cache="cache"), seed=0)  # no run dir: nothing written
    assert order(nowhere.training_stream().take(5)) == first[:40]
