"""The TFDS recipes on mock data, `trainkit data`, bad input through the CLI, and
the input-wait report."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
import yaml
from conftest import cli

import trainkit
from trainkit import api


@pytest.mark.parametrize("name", ["mnist_cnn", "cifar10_resnet"])
def test_tfds_recipes_train_on_mock_data(name, tmp_path):
    with tfds.testing.mock_data(num_examples=32):
        recipe = trainkit.load_recipe(name, configs=[f"{name}_smoke"])
        run = api.train(recipe, run_dir=tmp_path / "run")
    status = json.loads((tmp_path / "run" / "run.json").read_text())
    assert status["status"] == "completed" and status["step"] == 2
    assert 0.0 <= status["input_wait_fraction"] <= 1.0
    assert set(run.metrics) == {"validation", "test"}


def test_inspect_data_on_mock_mnist():
    with tfds.testing.mock_data(num_examples=40):
        report = api.inspect_data(trainkit.load_recipe("mnist_cnn", configs=["mnist_cnn_smoke"]), split="test", n=2)
    assert report["element_spec"] == {"features": "float32 [28, 28, 1]", "label": "int64 []"}
    assert report["examples"] == 40 and report["classes"] == 10
    assert sum(report["label_distribution"].values()) == 40 and report["label_distribution_complete"]
    assert len(report["first_examples"]) == 2 and report["examples_per_second"] > 0
    # Decoded images, one at a time before batching: every stage is timed (in batches of 16).
    rates = report["stage_examples_per_second"]
    assert list(rates) == ["read", "parse", "transform", "batch"] and all(rate > 0 for rate in rates.values()), rates
    assert report["examples_per_second"] == rates["batch"]
    assert report["cached"] is True  # (mnist_cnn keeps its decoded images: data.cache)


def test_inspect_data_says_which_stages_an_in_memory_split_ran_when_it_was_prepared():
    """In-memory arrays are parsed and transformed once, before training; each epoch
    gathers whole batches. The report times that, not a per-example pipeline that
    training never runs (it showed 5,000 examples/s read for 140,000 batched)."""
    report = api.inspect_data(trainkit.load_recipe("digits_mlp"), split="train", n=1, seconds=1)
    rates = report["stage_examples_per_second"]
    assert rates["parse"] == rates["transform"] == api.PREPARED, rates
    assert rates["read"] > 0 and rates["batch"] > 0 and report["examples_per_second"] == rates["batch"]
    assert report["cached"] is False


@trainkit.register_transform("test_slow_transform", overwrite=True)
def slow_transform(x, y):
    import tensorflow as tf

    def wait(value):
        time.sleep(0.003)  # a deliberately slow transform: 3 ms an example
        return value

    slowed = tf.py_function(wait, [x], tf.float32)
    slowed.set_shape(x.shape)
    return slowed, y


def write_recipe(path, source: dict, **data) -> str:
    recipe = {
        "name": "bad",
        "data": {"source": source, **data},
        "model": {"type": "mlp", "hidden_units": [4]},
        "loss": "sparse_categorical_crossentropy",
        "trainer": {"epochs": 1, "progress": False},
    }
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_trainkit_data_command_shows_a_split(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20)))
    recipe = write_recipe(tmp_path / "r.yaml", {"type": "csv", "path": str(csv), "label": "label"})
    result = cli("data", recipe, "--split", "train", "-n", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "element spec: features float32 [2]; label int32 []" in out
    assert "examples:     16" in out and "2 classes" in out and "example 1:" in out and "examples/s" in out


def test_bad_data_via_the_cli_is_one_line_exit_2_and_writes_nothing(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("width,height,label\n1,2,0\n3,4,1\n")
    recipe = write_recipe(tmp_path / "r.yaml", {"type": "csv", "path": str(csv), "label": "label", "features": ["width", "hieght"]})
    result = cli("train", recipe, "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "no column 'hieght'; did you mean 'height'?" in result.stderr
    assert not (tmp_path / "run").exists()
    missing = write_recipe(tmp_path / "m.yaml", {"type": "image_folder", "path": str(tmp_path / "photos")})
    result = cli("data", missing, cwd=tmp_path)
    assert result.returncode == 2 and "no such folder" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("option, value", [("-n", "-3"), ("--seconds", "0"), ("--seconds", "-1"), ("--seconds", "nan"), ("--seconds", "inf")])
def test_trainkit_data_refuses_a_count_or_budget_that_would_show_or_time_nothing(tmp_path, option, value):
    result = cli("data", "digits_mlp", option, value, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("error:") == 1 and f"(trainkit data {option}): must be" in result.stderr


def test_trainkit_data_shows_the_evaluation_pipeline_of_a_split(tmp_path):
    import tensorflow as tf

    for label in ("cat", "dog"):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for i in range(5):
            pixels = np.full((8, 8, 3), 20 * i, np.uint8)
            pixels[2:6, 2:6] = 255  # a bright centre: all that a 4x4 centre crop keeps
            (tmp_path / "photos" / label / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    source = {"type": "image_folder", "path": str(tmp_path / "photos")}
    augment = [{"type": "random_crop", "size": [4, 4]}]
    recipe = write_recipe(tmp_path / "r.yaml", source, augment=augment, eval_transforms=[{"type": "center_crop", "size": [4, 4]}])
    result = cli("data", recipe, "--split", "validation", "-n", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "element spec: features float32 [4, 4, 3]; label int64 []" in result.stdout
    first = next(line for line in result.stdout.splitlines() if line.strip().startswith("example 0:"))
    assert first.endswith("features float32 [4, 4, 3] min 255 mean 255 max 255")  # the centre, not a random crop

    # Without the matching eval transform: one line naming both pipelines, exit 2, nothing written.
    recipe = write_recipe(tmp_path / "bad.yaml", source, augment=augment)
    result = cli("train", recipe, "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: data.eval_transforms: evaluation examples of split 'validation'")
    assert "features float32 [8, 8, 3]" in errors[0] and "features float32 [4, 4, 3]" in errors[0]
    assert not (tmp_path / "run").exists()


@trainkit.register_dataset("test_slow_stream", overwrite=True)
def slow_stream(n: int = 256):
    for i in range(n):
        time.sleep(0.004)  # a deliberately slow source: 4 ms an example
        yield np.full(8, i % 5, np.float32), i % 2


def test_input_wait_report_flags_a_slow_pipeline(tmp_path, capsys):
    recipe = trainkit.load_recipe(
        {
            "name": "slow",
            "data": {"source": {"type": "generator", "name": "test_slow_stream"}, "batch_size": 16, "splits": {"train": 1.0, "validation": 0, "test": 0}},
            "model": {"type": "mlp", "hidden_units": [8]},
            "loss": "sparse_categorical_crossentropy",
            "trainer": {"steps": 12, "progress": True, "evaluate": []},
        }
    )
    api.train(recipe, run_dir=tmp_path / "run")
    fraction = json.loads((tmp_path / "run" / "run.json").read_text())["input_wait_fraction"]
    out = capsys.readouterr().out
    print(f"slow pipeline: input_wait_fraction {fraction}")
    assert fraction > 0.5
    assert "input is the bottleneck" in out and "data.cache" in out


def test_trainkit_data_times_each_stage_of_a_streamed_pipeline_and_names_the_slow_one(tmp_path):
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(tmp_path / "d.tfrecord")) as writer:
        for i in range(256):
            feature = {
                "x": tf.train.Feature(float_list=tf.train.FloatList(value=[float(i), float(-i)])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    source = {"type": "tfrecord", "files": str(tmp_path / "d.tfrecord"), "label": "label", "inputs": "x",
              "features": {"x": {"dtype": "float32", "shape": [2]}, "label": {"dtype": "int64"}}}
    transforms = [{"type": "normalize", "mean": 1.0, "std": 2.0}, {"type": "test_slow_transform"}]
    recipe = write_recipe(tmp_path / "r.yaml", source, batch_size=8, transforms=transforms)
    result = cli("data", recipe, "--split", "train", "-n", "1", "--seconds", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    start = lines.index("  by stage (each includes the ones before; examples/s):")
    stages = [line.split() for line in lines[start + 1 : start + 5]]
    assert [stage[0] for stage in stages] == ["read", "parse", "transform", "batch"], result.stdout
    assert all(float(stage[1].replace(",", "")) > 0 for stage in stages), result.stdout  # each one timed
    assert lines[start + 5].startswith("  slowest stage: transform (to "), result.stdout
    assert "cached:" not in result.stdout

    # Cached, the slow transform is paid in the first epoch only, and the report says so.
    cached = cli("data", recipe, "data.cache=memory", "--split", "train", "-n", "1", "--seconds", "1", cwd=tmp_path)
    assert cached.returncode == 0, cached.stderr
    assert "  cached: read, parse and transform run in the first epoch only; the epochs after it read the cache, as batch did here" in cached.stdout.splitlines()
