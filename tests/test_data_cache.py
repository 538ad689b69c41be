"""``data.cache: PATH`` in real training runs: the files live in the run directory,
nothing is written before the run is validated and locked, and a resumed run
reads the cache that the first one completed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import trainkit
from trainkit import api
from trainkit.errors import ConfigError

N = 400  # 320 training examples: 40 steps an epoch at batch 8


def write_records(path: Path, features: np.ndarray) -> None:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, row in enumerate(features):
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "x": tf.train.Feature(float_list=tf.train.FloatList(value=row.tolist())),
                        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 3])),
                    }
                )
            )
            writer.write(example.SerializeToString())


def cache_recipe(files: str, *, steps: int, units: int = 3):
    return trainkit.load_recipe(
        {
            "name": "cached",
            "data": {
                "source": {
                    "type": "tfrecord",
                    "files": files,
                    "features": {"x": {"dtype": "float32", "shape": [4]}, "label": {"dtype": "int64"}},
                    "inputs": "x",
                    "label": "label",
                },
                "batch_size": 8,
                "cache": "cache",
                # Smaller than the split: an epoch cut short leaves the cache unfinished.
                "shuffle_buffer": 8,
            },
            "model": {"type": "sequential", "layers": [{"type": "Dense", "units": units, "activation": "softmax"}]},
            "loss": "sparse_categorical_crossentropy",
            "trainer": {"steps": steps, "progress": False},
        }
    )


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def half_written(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".lockfile") or ".tempstate" in p.name]


def test_relative_file_cache_lives_in_the_run_dir_and_a_resumed_run_reads_it(tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    rng = np.random.default_rng(0)
    write_records(records / "data.tfrecord", rng.normal(size=(N, 4)).astype(np.float32))
    files = str(records / "*.tfrecord")
    run_dir = tmp_path / "run"
    cache = run_dir / "cache"

    # A recipe that fails validation writes nothing: no run directory, no cache anywhere.
    with pytest.raises(ConfigError, match="the last layer needs 3 units"):
        api.train(cache_recipe(files, steps=3, units=2), run_dir=run_dir)
    assert listing(tmp_path) == {"records", "records/data.tfrecord"}

    # Stops inside the first epoch (the training cache is left unwritten, the
    # probe and the final evaluation still read the split), then evaluates.
    api.train(cache_recipe(files, steps=3), run_dir=run_dir)
    assert {"validation.index", "test.index"} <= {p.name for p in cache.iterdir()}
    assert not half_written(cache)
    assert set(p.name for p in tmp_path.iterdir()) == {"records", "run"}  # nothing in the working directory

    # Evaluating a run outside training writes nothing into it (the cache is then in memory).
    before = listing(run_dir)
    assert set(api.evaluate(run_dir, split="test")) == {"loss"}
    assert listing(run_dir) == before

    # A process killed while filling the cache leaves TensorFlow's half-written files
    # (a .lockfile) in place of a complete one: the next run, holding the lock,
    # clears them and trains on.
    for complete in cache.glob("train.*"):
        complete.unlink()
    killed = subprocess.run(
        [sys.executable, "-c", (
            "import os, tensorflow as tf\n"
            f"it = iter(tf.data.Dataset.range(10**6).cache({str(cache / 'train')!r}))\n"
            "next(it)\n"
            "os._exit(0)\n"
        )],
        capture_output=True, text=True, timeout=120, env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )
    assert killed.returncode == 0, killed.stderr
    assert half_written(cache)
    api.train(cache_recipe(files, steps=50), run_dir=run_dir)  # resumed: through epoch 2
    assert "train.index" in {p.name for p in cache.iterdir()} and not half_written(cache)

    # The files now hold NaN features: a run reading them would diverge. The
    # resumed run reads the complete cache instead and trains on.
    write_records(records / "data.tfrecord", np.full((N, 4), np.nan, np.float32))
    run = api.train(cache_recipe(files, steps=90), run_dir=run_dir)
    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "completed" and status["step"] == 90
    assert np.isfinite(run.metrics["validation"]["loss"]) and np.isfinite(run.history["loss"][-1])
