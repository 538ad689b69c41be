"""The ``timeseries`` source: windows in time order, splits that no window crosses,
scaling fitted on the training rows, the bad-input lines, and an exported model
that takes the raw window."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, one_error_line

import trainkit
from trainkit.data.pipeline import prepare
from trainkit.errors import ConfigError
from trainkit.recipe import DataSection


def write_series(path: Path, n: int = 60) -> Path:
    """``time`` (text), ``load`` = row number, ``temperature`` = 1000 + 2 * row number."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["time", "load", "temperature"])
        for t in range(n):
            writer.writerow([f"2026-01-{t:03d}", t, 1000 + 2 * t])
    return path


def data(path: Path, splits=(0.6, 0.2, 0.2), **source) -> DataSection:
    return DataSection.model_validate(
        {
            "source": {"type": "timeseries", "path": str(path), "targets": ["load"], "sequence_length": 5, **source},
            "splits": dict(zip(("train", "validation", "test"), splits, strict=True)),
            "shuffle_buffer": 0,
        }
    )


def test_windows_are_in_time_order_and_no_window_crosses_a_split(tmp_path):
    prepared = prepare(data(write_series(tmp_path / "s.csv"), horizon=2, stride=2), seed=0)
    rows = {"train": range(0, 36), "validation": range(36, 48), "test": range(48, 60)}
    for split, (x, y) in prepared.arrays.items():
        assert x.shape[1:] == (5, 2) and y.shape[1:] == (1,)
        loads = x[:, :, 0]
        # Every input row and every target lies inside its own split's rows.
        assert loads.min() >= rows[split].start and y.max() <= rows[split].stop - 1
        np.testing.assert_array_equal(loads[:, 0], np.arange(rows[split].start, rows[split].stop - 6, 2))
        np.testing.assert_array_equal(y[:, 0], loads[:, -1] + 2)  # horizon 2: two rows after the window
        np.testing.assert_array_equal(x[:, :, 1], 1000 + 2 * loads)  # columns default: every numeric one


def test_windows_are_those_of_keras_timeseries_dataset_from_array(tmp_path):
    import keras

    prepared = prepare(data(write_series(tmp_path / "s.csv"), splits=(1.0, 0.0, 0.0), horizon=3, stride=2), seed=0)
    x, y = prepared.arrays["train"]
    series = np.stack([np.arange(60), 1000 + 2 * np.arange(60)], axis=1).astype("float32")
    anchor = keras.utils.timeseries_dataset_from_array(
        series, targets=series[5 + 3 - 1 :, :1], sequence_length=5, sequence_stride=2, batch_size=1000
    )
    (kx, ky), = anchor.as_numpy_iterator()
    np.testing.assert_array_equal(x, kx)
    np.testing.assert_array_equal(y, ky)


def test_scaling_is_fitted_on_the_training_rows_only(tmp_path):
    path = write_series(tmp_path / "s.csv")
    prepared = prepare(data(path).model_copy(update={"scale": "standard"}), seed=0)
    train_x = prepared._raw["train"].arrays[0]
    # (data.scale is a preprocessing step: a Normalization layer shared with the exported model.)
    offset = np.asarray(next(step["mean"] for step in prepared.preprocessing if step.get("field") == "data.scale"))
    np.testing.assert_allclose(offset, train_x.mean(axis=0), rtol=1e-6)
    scaled = prepared.arrays["train"][0]
    np.testing.assert_allclose(scaled.mean(axis=0), 0, atol=1e-5)
    # The later rows (larger values) leave the statistics alone.
    assert offset[:, 0].max() < 36
    assert prepared.info.target_scale[0][0] == pytest.approx(prepared._raw["train"].arrays[1].mean())


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"targets": ["lod"]}, r"data.source.targets.0: no numeric column 'lod' in .*s.csv; did you mean 'load'\?"),
        ({"columns": ["temprature"]}, r"data.source.columns.0: no numeric column 'temprature'.*did you mean 'temperature'"),
        ({"columns": ["time"]}, r"data.source.columns.0: column 'time' of .* holds text"),
        ({"sequence_length": 20}, r"data.splits.validation: 0.2 of the 60 rows is 12 row\(s\), shorter than one window"),
        ({"targets": None}, r"data.source.targets: name the column\(s\) to forecast, one or more of load, temperature"),
    ],
)
def test_bad_series_settings_are_one_line(tmp_path, change, expected):
    section = data(write_series(tmp_path / "s.csv"), **{k: v for k, v in change.items()})
    with pytest.raises(ConfigError, match=expected):
        prepare(section, seed=0)


@pytest.mark.parametrize("gap", ["nan", "", ",", "\n"], ids=["nan", "empty-cell", "empty-row", "blank-line"])
def test_a_gap_in_a_used_column_names_its_row(tmp_path, gap):
    path = tmp_path / "s.csv"
    row = f"{gap},3\n" if gap in ("nan", "") else gap if gap == "\n" else f"{gap}\n"  # a whole row missing: no closing up
    path.write_text(f"load,unused\n1,1\n2,\n{row}4,4\n\n")
    section = DataSection.model_validate(
        {"source": {"type": "timeseries", "path": str(path), "columns": ["load"], "sequence_length": 1},
         "splits": {"train": 0.6, "validation": 0.2, "test": 0.2}}
    )
    with pytest.raises(ConfigError, match=r"s.csv, row 4, column 'load' has no number \(empty, nan or inf\)"):
        prepare(section, seed=0)
    path.write_text("load,unused\n1,1\n2,\n3,3\n4,4\n5,5\n6,6\n7,7\n8,8\n9,9\n10,10\n")
    assert prepare(section, seed=0).info.feature_shape == (1, 1)  # a gap in a column left out is no matter


def test_a_registered_series_of_columns_or_an_array(tmp_path):
    t = np.arange(40, dtype=np.float64)
    trainkit.register_dataset("ramp_columns", overwrite=True)(lambda: {"a": t, "b": -t})
    trainkit.register_dataset("ramp_array", overwrite=True)(lambda: np.stack([t, -t], axis=1))
    for name, targets in (("ramp_columns", ["b"]), ("ramp_array", [1])):
        section = DataSection.model_validate(
            {"source": {"type": "timeseries", "name": name, "targets": targets, "sequence_length": 3}}
        )
        x, y = prepare(section, seed=0).arrays["train"]
        np.testing.assert_array_equal(y[:, 0], -(x[:, -1, 0] + 1))


def series_recipe(tmp_path: Path, **model) -> Path:
    write_series(tmp_path / "series.csv", n=80)
    recipe = {
        "name": "series_demo",
        "data": {
            "source": {"type": "timeseries", "path": "series.csv", "columns": ["load", "temperature"],
                       "targets": ["load"], "sequence_length": 6},
            "splits": {"train": 0.6, "validation": 0.2, "test": 0.2},
            "scale": "standard",
            "batch_size": 8,
        },
        "model": {"type": "rnn", "cell": "lstm", "units": [8], "dropout": 0.1, **model},
        "loss": "mse",
        "trainer": {"epochs": 3, "progress": False, "checkpoint": {"every_steps": 5}},
        "runtime": {"deterministic": True},
    }
    path = tmp_path / "series.yaml"
    path.write_text(json.dumps(recipe))
    return path


def test_a_split_shorter_than_a_window_exits_2_before_anything_is_written(tmp_path):
    series_recipe(tmp_path)
    result = cli("train", "series.yaml", "data.source.sequence_length=40", "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 2
    assert "data.splits.validation: 0.2 of the 80 rows is 16 row(s), shorter than one window" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


# A fresh process without trainkit: both exports fed the raw (unscaled) windows.
_SERVE = """
import sys, numpy as np, keras, tensorflow as tf
export, windows, result = sys.argv[1:]
x = np.load(windows)
model = keras.models.load_model(export + "/model.keras", safe_mode=True)
served = tf.saved_model.load(export + "/saved_model").signatures["serving_default"]
(saved,) = served(features=tf.constant(x)).values()
assert not [m for m in sys.modules if m.split(".")[0] == "trainkit"], "trainkit was imported"
np.savez(result, keras=model.predict(x, verbose=0), saved_model=saved.numpy())
"""


@pytest.mark.slow
def test_exports_take_the_raw_window_and_agree_with_the_trained_model(tmp_path):
    import subprocess
    import sys

    recipe = trainkit.load_recipe(str(series_recipe(tmp_path)), overrides={"export.formats": ["keras", "saved_model"]})
    run = trainkit.train(recipe, run_dir=tmp_path / "run")
    raw = np.concatenate([x.numpy() for x, _ in trainkit.dataset(recipe, "test", raw=True)])
    scaled = np.concatenate([x.numpy() for x, _ in trainkit.dataset(recipe, "test")])
    assert raw[:, :, 1].min() >= 1000  # temperature as written, unscaled
    assert not np.allclose(raw, scaled)
    expected = run.model.predict(scaled, verbose=0)
    np.save(tmp_path / "windows.npy", raw)
    done = subprocess.run(
        [sys.executable, "-c", _SERVE, str(tmp_path / "run"), str(tmp_path / "windows.npy"), str(tmp_path / "out.npz")],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = np.load(tmp_path / "out.npz")
    for name in ("keras", "saved_model"):
        np.testing.assert_allclose(outputs[name], expected, atol=1e-5, rtol=1e-6, err_msg=name)

    # trainkit predict cuts a series CSV (its columns by name, rows in time order) into
    # every window of raw values, and writes one value per window.
    result = cli("predict", "run", "series.csv", "--output", "p.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == 80 - 6 + 1 and rows[0]["input"] == "rows 2-7" and rows[-1]["input"] == "rows 76-81"
    series = np.stack([np.arange(80.0), 1000 + 2 * np.arange(80.0)], axis=1)
    windows = np.stack([series[i : i + 6] for i in range(75)]).astype(np.float32)
    direct = trainkit.predict(tmp_path / "run", windows).values.reshape(-1)
    np.testing.assert_allclose([float(r["prediction"]) for r in rows], direct, rtol=1e-5, atol=1e-4)
    # (the test windows are the last ones with a target; the CSV's last window forecasts past its end)
    assert direct[-len(raw) - 1 : -1] == pytest.approx(trainkit.predict(tmp_path / "run", raw).values.reshape(-1), abs=1e-4)
    (tmp_path / "short.csv").write_text("load,temperature\n1,2\n3,4\n")
    (tmp_path / "renamed.csv").write_text("load,temprature\n" + "1,2\n" * 8)
    (tmp_path / "word.csv").write_text("load,temperature\n" + "1,2\n" * 3 + "1,hot\n" + "1,2\n" * 3)
    for bad, message in (
        ("short.csv", "short.csv: 2 row(s); one window is sequence_length = 6 rows (the run's): give at least 6"),
        ("renamed.csv", "no column 'temperature' in the header; did you mean 'temprature'?"),
        ("word.csv", "word.csv, row 5, column 'temperature': 'hot' is not a number"),
    ):
        refused = cli("predict", "run", bad, "--output", "q.csv", cwd=tmp_path)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "q.csv").exists()

    # The recurrent loop converts to neither LiteRT nor ONNX: asked for, one line; by default, left out.
    for name in ("tflite", "onnx"):
        refused = cli("export", "run", "--format", name, "-o", "out", cwd=tmp_path)
        assert "cannot take this run's recurrent model" in one_error_line(refused) and not (tmp_path / "out").exists()
    exported = cli("export", "run", "-o", "out", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert sorted(json.loads((tmp_path / "out" / "export.json").read_text())["formats"]) == ["keras", "saved_model"]
    # Were it asked for anyway, the ONNX file tf2onnx writes is refused before it is saved, in one line.
    from trainkit.errors import ExportError
    from trainkit.runtime import preserved_process_state
    from trainkit.serving.export import _write, restore_for_export

    (tmp_path / "forced").mkdir()
    with preserved_process_state(), pytest.raises(ExportError, match=r"^export.formats: onnx could not be written \(ValueError: "):
        built, spec, _ = restore_for_export(tmp_path / "run", "final")
        _write(built, spec, ["onnx"], tmp_path / "forced", quantize="none")
    assert not list((tmp_path / "forced").iterdir())


@pytest.mark.parametrize("name", ["tflite", "onnx"])
def test_an_rnn_recipe_asking_for_litert_or_onnx_is_refused_before_training(tmp_path, name):
    path = series_recipe(tmp_path)
    with pytest.raises(ConfigError, match=f"export.formats: {name} cannot take the recurrent model of the rnn builder"):
        trainkit.load_recipe(str(path), overrides={"export.formats": ["keras", name]})
    other = trainkit.load_recipe(str(path), overrides={"export.formats": ["keras", name], "model": {"type": "transformer"}})
    assert other.export.formats == ["keras", name]


@pytest.mark.slow
def test_a_killed_series_run_resumes_bit_identical(tmp_path):
    from _checkpoint_helpers import assert_same_weights, train, train_here

    series_recipe(tmp_path)
    base = ["series.yaml", "trainer.progress=true"]  # 3 epochs of 6 steps, a checkpoint every 5
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert train_here(reference, base=base).returncode == 0
    killed = train(run, base=base, faults=("kill-after-train:8",))
    assert killed.returncode == -9
    resumed = train_here(run, base=base)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "at step 5 " in resumed.stdout
    assert_same_weights(run, reference)
