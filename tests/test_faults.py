"""Faults that must lose nothing: a full disk, a rewritten checkpoint behind final/,
and data that would otherwise be read short or wrong without a word."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, checkout_env

import trainkit
from trainkit.errors import ConfigError
from trainkit.loader import load_recipe
from trainkit.training.disk_full import DISK_FULL_EXIT_CODE

TESTS = ROOT / "tests"
SMOKE = ["digits_mlp", "-c", "digits_mlp_smoke", "trainer.epochs=null", "trainer.progress=false"]


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _can_mount_in_a_namespace() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs none /mnt"], capture_output=True)
    return probe.returncode == 0


# ------------------------------------------------------------------ full disk


@pytest.mark.slow
@pytest.mark.skipif(not _can_mount_in_a_namespace(), reason="needs user + mount namespaces for a small tmpfs")
def test_a_full_disk_at_a_checkpoint_is_one_line_with_nothing_half_written(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    run = disk / "run"
    # A 120 KiB file system (in a mount namespace of its own): room for config.yaml,
    # run.json and the logs, not for a ~200 KiB checkpoint.
    train = " ".join([sys.executable, "-m", "trainkit.cli", "train", *SMOKE, "trainer.steps=20",
                      "trainer.checkpoint.every_steps=10", "--run-dir", str(run)])
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=120k none {disk} && {train}; code=$?; "
         f"ls -a {run} {run}/checkpoints; cat {run}/run.json; exit $code"],
        capture_output=True, text=True, timeout=300, env=checkout_env(), cwd=tmp_path,
    )
    assert result.returncode == DISK_FULL_EXIT_CODE, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = _errors(result.stderr)
    assert line.startswith(f"error: the disk is full: {disk} (") and "could not take a checkpoint" in line
    assert "KiB" in line and "it needs about" in line and "resume" in line
    assert "_temp" not in result.stdout and ".tmp" not in result.stdout  # the listing: no partial files
    status = json.loads(result.stdout[result.stdout.index("{"):])
    assert status["status"] == "failed" and "disk is full" in status["error"]


@pytest.mark.slow
def test_a_full_disk_at_export_is_one_line_with_status_failed_and_no_temporary_files(tmp_path):
    result = subprocess.run(
        [sys.executable, str(TESTS / "_fault_runner.py"), "enospc-in-export", "--", "train", *SMOKE, "trainer.steps=4",
         "--run-dir", "run"],
        capture_output=True, text=True, timeout=300, env=checkout_env(), cwd=tmp_path,
    )
    assert result.returncode == DISK_FULL_EXIT_CODE, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = _errors(result.stderr)
    assert "could not take the exported model" in line
    run = tmp_path / "run"
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name]
    assert (run / "checkpoints" / "final").is_dir()  # what was saved stays: training again resumes


# -------------------------------------------------- final/ after a rewritten step


def test_final_is_relinked_when_its_step_is_trained_again(tmp_path, capsys):
    recipe = load_recipe("digits_mlp", configs=["digits_mlp_smoke"], overrides={
        "trainer.epochs": None, "trainer.steps": 6, "trainer.checkpoint.every_steps": 3, "export.formats": [],
    })
    run = tmp_path / "run"
    trainkit.train(recipe, run_dir=run)
    data = next((run / "checkpoints").glob("ckpt-6.data-*"))
    assert os.stat(data).st_ino == os.stat(run / "checkpoints" / "final" / data.name).st_ino  # linked
    with open(data, "r+b") as f:  # damaged in place: final/ shares the bytes
        f.seek(os.path.getsize(data) // 2)
        f.write(b"\0garbage\0" * 4)
    trainkit.train(recipe, run_dir=run)  # sets ckpt-6 aside, resumes at 3, saves step 6 again
    assert "ckpt-6 in" in capsys.readouterr().err
    final = run / "checkpoints" / "final"
    assert os.stat(final / "ckpt-6.index").st_ino == os.stat(run / "checkpoints" / "ckpt-6.index").st_ino
    assert "loss" in trainkit.evaluate(run, split="test", checkpoint="final")
    assert "cannot be read back" not in capsys.readouterr().err


# ---------------------------------------------------------- silent data loss


def _write_records(path, n: int) -> None:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(n):
            example = tf.train.Example(features=tf.train.Features(feature={
                "x": tf.train.Feature(float_list=tf.train.FloatList(value=[float(i), 1.0])),
                "y": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2])),
            }))
            writer.write(example.SerializeToString())


def _tfrecord_recipe(files: str) -> dict:
    return {
        "name": "records",
        "data": {"source": {"type": "tfrecord", "files": files, "inputs": "x", "label": "y",
                            "features": {"x": {"shape": [2]}, "y": {"dtype": "int64"}}}},
        "model": {"type": "mlp", "hidden_units": [4]},
        "loss": "sparse_categorical_crossentropy",
        "trainer": {"steps": 1},
    }


@pytest.mark.parametrize("extra", [5, 20, -1], ids=["in-a-header", "in-the-data", "in-the-last-crc"])
def test_a_truncated_tfrecord_file_is_refused_naming_it(tmp_path, extra):
    path = tmp_path / "data.tfrecord"
    _write_records(path, 30)
    whole = trainkit.inspect_data(_tfrecord_recipe(str(path)), n=0, seconds=0.1)["examples"]
    assert whole == 24  # 80% of 30 for training
    record = os.path.getsize(path) // 30  # every record has the same size here
    # Cut two thirds of the way, inside a record. (A cut exactly between two
    # records leaves a well-formed shorter file, which no reader can tell.)
    os.truncate(path, 20 * record + extra if extra > 0 else 30 * record + extra)
    with pytest.raises(ConfigError, match=rf"data.source.files: {path} is truncated: it ends inside record"):
        trainkit.validate(_tfrecord_recipe(str(path)))


def test_a_tfrecord_cut_between_records_is_caught_on_resume(tmp_path):
    from trainkit.errors import RunDirError

    path = tmp_path / "data.tfrecord"
    _write_records(path, 30)
    recipe = {**_tfrecord_recipe(str(path)), "trainer": {"steps": 2, "progress": False}, "export": {"formats": []}}
    trainkit.train(recipe, run_dir=tmp_path / "run")
    os.truncate(path, os.path.getsize(path) // 30 * 20)  # 20 whole records: a well-formed, shorter file
    longer = {**recipe, "trainer": {"steps": 4, "progress": False}}
    with pytest.raises(RunDirError, match=r"trained on data of other sizes \(examples per split: train 24 -> 16"):
        trainkit.train(longer, run_dir=tmp_path / "run")


def _csv(tmp_path, label_values: list[str]):
    rows = ["a,b,label"] + [f"{i},{i % 3},{v}" for i, v in enumerate(label_values)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    return {
        "name": "table",
        "data": {"source": {"type": "csv", "path": str(tmp_path / "t.csv"), "label": "label",
                            "column_types": {"label": "int"}}},
        "model": {"type": "mlp", "hidden_units": [4]},
        "loss": "sparse_categorical_crossentropy",
        "trainer": {"steps": 1},
    }


@pytest.mark.parametrize("bad", ["1e23", "2.5", "nan", "99999999999999999999999"])
def test_class_labels_must_be_exact_integers(tmp_path, bad):
    with pytest.raises(ConfigError, match=rf"row 5, column 'label': '{bad}' is not an exact integer|too large"):
        trainkit.inspect_data(_csv(tmp_path, ["0", "1", "2", bad, "1"] * 4), n=0, seconds=0.1)


def test_integral_float_labels_are_still_classes(tmp_path):
    report = trainkit.inspect_data(_csv(tmp_path, ["0", "1.0", "2", "1e0"] * 5), n=0, seconds=0.1)
    assert report["classes"] == 3


@pytest.mark.parametrize("split, fraction", [("validation", 0.0001), ("test", 0.0002)])
def test_a_split_fraction_too_small_for_one_example_is_refused(split, fraction):
    other = "test" if split == "validation" else "validation"
    with pytest.raises(ConfigError, match=rf"data.splits.{split}: {fraction:g} of 1797 examples is no example"):
        trainkit.validate(load_recipe("digits_mlp", overrides={
            f"data.splits.{split}": fraction, f"data.splits.{other}": 0.1, "data.splits.train": 0.9 - fraction,
        }))


def test_strings_are_not_booleans_anywhere():
    for key, value in [("data.drop_remainder", "abc"), ("trainer.progress", "yes"), ("runtime.jit_compile", 1)]:
        with pytest.raises(ConfigError, match=key.rsplit(".", 1)[1]):
            load_recipe("digits_mlp", overrides={key: value})
    with pytest.raises(ConfigError, match="loss.from_logits: SparseCategoricalCrossentropy takes true or false"):
        trainkit.validate(load_recipe("digits_mlp", overrides={
            "loss": {"type": "SparseCategoricalCrossentropy", "from_logits": "abc"}}))


def _image_folder(root, corrupt_name: str = "zz_corrupt.png"):
    import tensorflow as tf

    for label, count in (("a", 6), ("b", 6)):
        (root / label).mkdir(parents=True)
        for i in range(count):
            pixels = tf.fill([6, 5, 3], tf.constant(40 * i + (100 if label == "b" else 0), tf.uint8))
            (root / label / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    good = (root / "b" / "0.png").read_bytes()
    (root / "b" / corrupt_name).write_bytes(good[: len(good) // 2])  # a PNG signature, then cut short
    return root / "b" / corrupt_name


def _images_recipe(root, **source) -> dict:
    return {
        "name": "images",
        "data": {"source": {"type": "image_folder", "path": str(root), "image_size": [6, 5], **source},
                 "batch_size": 4, "splits": {"train": 1.0, "validation": 0.0, "test": 0.0}},
        "model": {"type": "mlp", "hidden_units": [4]},
        "loss": "sparse_categorical_crossentropy",
        "trainer": {"steps": 4, "progress": False, "evaluate": []},
        "export": {"formats": []},
    }


def test_a_corrupt_image_deep_in_a_folder_is_named(tmp_path):
    corrupt = _image_folder(tmp_path / "images")
    with pytest.raises(ConfigError, match=rf"data.source: {corrupt} is not a readable image .*skip_bad_images"):
        trainkit.train(_images_recipe(tmp_path / "images"), run_dir=tmp_path / "run")
    # Found by the checks before training (nothing written) or mid-training (the
    # run is marked failed with the same line): which depends on the shuffle.
    if (tmp_path / "run").exists():
        status = json.loads((tmp_path / "run" / "run.json").read_text())
        assert status["status"] == "failed" and str(corrupt) in status["error"]


def test_skip_bad_images_skips_a_corrupt_image_found_while_decoding(tmp_path):
    _image_folder(tmp_path / "images")
    run = trainkit.train(_images_recipe(tmp_path / "images", skip_bad_images=True), run_dir=tmp_path / "run")
    assert json.loads((run.run_dir / "run.json").read_text())["status"] == "completed"
    # trainkit data times every stage of that pipeline, skipping the bad image as it does
    # (its stages before batching read the images one at a time: they crashed on it).
    rates = trainkit.inspect_data(_images_recipe(tmp_path / "images", skip_bad_images=True), n=0, seconds=0.4)["stage_examples_per_second"]
    assert all(rate > 0 for rate in rates.values()), rates
