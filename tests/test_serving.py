"""Export and prediction: every reference recipe's inference model in the four
formats, each run by its own runtime in a fresh process without trainkit
(tests/_serving_runtimes.py), fed the features the data source gives, and
``trainkit predict`` on CSV, .npy, JSON lines and image folders.

The smoke runs are trained once for the module, and one process runs every
export in every runtime.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from _checkpoint_helpers import kept_steps
from conftest import ROOT, cli

import trainkit

ALL_FORMATS = ["keras", "saved_model", "tflite", "onnx"]
TFDS_RECIPES = ("mnist_cnn", "cifar10_resnet")
FAST_RECIPES = ("digits_cnn", "digits_mlp", "binary_classifier", "linear_regression")
# digits_cnn keeps its epoch-1 checkpoint for the test that exports it.
OVERRIDES = {"digits_cnn": {"trainer.checkpoint.every_epoch": True, "trainer.checkpoint.keep": 5}}


@dataclass
class Case:
    """A trained run, its raw and piped test split, and what each runtime made of it."""

    run: trainkit.api.Run
    raw: np.ndarray
    labels: np.ndarray
    piped: np.ndarray
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    names: dict = field(default_factory=dict)


def source_data(name: str):
    """TFDS recipes read tfds.testing.mock_data; the others their real data."""
    return tfds.testing.mock_data(num_examples=32) if name in TFDS_RECIPES else contextlib.nullcontext()


def batches(recipe, split: str, *, raw: bool) -> tuple[np.ndarray, np.ndarray]:
    with source_data(recipe.name):
        pairs = [(x.numpy(), y.numpy()) for x, y in trainkit.dataset(recipe, split, raw=raw)]
    return np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])


def train_case(recipe, run_dir: Path) -> Case:
    with source_data(recipe.name):
        run = trainkit.train(recipe, run_dir=run_dir)
    raw, labels = batches(recipe, "test", raw=True)
    piped, _ = batches(recipe, "test", raw=False)
    return Case(run, raw, labels, piped)


def smoke_case(name: str, root: Path) -> Case:
    recipe = trainkit.load_recipe(
        name, configs=[f"{name}_smoke"], overrides={"export.formats": ALL_FORMATS, **OVERRIDES.get(name, {})}
    )
    return train_case(recipe, root / name)


def write_images(root: Path, size: tuple[int, int], per_class: int = 6) -> None:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for label, name in enumerate(["circle", "square"]):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 120, (*size, 3)) + 120 * label
            (root / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels.astype(np.uint8)).numpy())


def image_folder_case(root: Path) -> Case:
    """A run on a folder of 8x8 PNGs (two classes), scaled and normalized per channel."""
    write_images(root / "images", (8, 8))
    recipe = trainkit.load_recipe(
        "digits_mlp",
        overrides={
            "name": "shapes",
            "data": {
                "source": {"type": "image_folder", "path": str(root / "images")},
                "splits": {"train": 0.75, "validation": 0.0, "test": 0.25},
                "transforms": [{"type": "scale", "factor": 1 / 255}, {"type": "normalize"}],
                "batch_size": 4,
            },
            "model": {"type": "mlp", "hidden_units": [8]},
            "trainer": {"epochs": 1, "progress": False, "evaluate": ["test"]},
            "export.formats": ALL_FORMATS,
        },
    )
    return train_case(recipe, root / "run")


def run_runtimes(cases: dict[str, Case], exports: dict[str, Path], scratch: Path) -> None:
    """Every export through tests/_serving_runtimes.py, in one fresh process."""
    arguments = []
    for name, case in cases.items():
        np.save(scratch / f"{name}.npy", case.raw)
        arguments += [str(exports[name]), str(scratch / f"{name}.npy"), str(scratch / f"{name}.npz")]
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "_serving_runtimes.py"), *arguments],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for name, case in cases.items():
        case.outputs = dict(np.load(scratch / f"{name}.npz"))
        case.names = json.loads((scratch / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, Case]:
    """The smoke runs of the in-memory recipes and an image-folder run, each exported
    at the end of training in all four formats and run by every runtime."""
    root = tmp_path_factory.mktemp("serving")
    found = {name: smoke_case(name, root) for name in FAST_RECIPES}
    found["shapes"] = image_folder_case(root / "shapes")
    run_runtimes(found, {name: case.run.run_dir for name, case in found.items()}, root)
    return found


def expected_probabilities(model, features: np.ndarray) -> np.ndarray:
    """The trained model's outputs as probabilities of every class."""
    out = model.predict(features, verbose=0)
    return np.concatenate([1 - out, out], axis=-1) if out.shape[-1] == 1 else out


def check_agreement(case: Case) -> None:
    run, keras_out = case.run, case.outputs["keras.output"]
    classification = run.recipe.loss.type != "mse"
    # model.keras fed what the source gives = the trained model fed trainkit's pipeline
    expected = expected_probabilities(run.model, case.piped) if classification else run.model.predict(case.piped, verbose=0)
    np.testing.assert_allclose(keras_out, expected, atol=1e-5, rtol=1e-6)
    main = "probabilities" if classification else "predictions"
    # (rtol 1e-6: regression values near 100 differ by one float32 ulp, 1.5e-5)
    for fmt, tolerance in (("saved_model", 1e-5), ("onnx", 1e-5), ("tflite", 1e-4)):
        np.testing.assert_allclose(case.outputs[f"{fmt}.{main}"], keras_out, atol=tolerance, rtol=1e-6, err_msg=fmt)
        assert case.names[fmt]["inputs"] == ["features"], fmt
        assert sorted(case.names[fmt]["outputs"]) == (["class_ids", "probabilities"] if classification else ["predictions"]), fmt
        if classification:
            np.testing.assert_array_equal(case.outputs[f"{fmt}.class_ids"], keras_out.argmax(-1), err_msg=fmt)
    if classification:
        kept = json.loads((run.run_dir / "inference.json").read_text())["class_names"]
        assert case.names["saved_model"]["class_names"] == case.names["onnx"]["class_names"] == kept
        accuracy = float(np.mean(keras_out.argmax(-1) == case.labels))
        assert accuracy == pytest.approx(run.metrics["test"]["accuracy"], abs=1e-6)


@pytest.mark.parametrize("name", FAST_RECIPES)
def test_every_format_takes_raw_features_and_agrees_in_its_own_runtime(cases, name):
    check_agreement(cases[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", TFDS_RECIPES)
def test_tfds_recipes_export_every_format_too(name, tmp_path):
    case = smoke_case(name, tmp_path)
    run_runtimes({name: case}, {name: case.run.run_dir}, tmp_path)
    check_agreement(case)


def test_class_names_come_from_the_source_or_the_recipe(tmp_path_factory):
    from trainkit.data.pipeline import prepare

    cancer = trainkit.load_recipe("binary_classifier")
    assert prepare(cancer.data, seed=0).info.class_names == ["malignant", "benign"]
    renamed = trainkit.load_recipe("binary_classifier", overrides={"data.class_names": ["bad", "good"]})
    assert prepare(renamed.data, seed=0).info.class_names == ["bad", "good"]
    wrong = trainkit.load_recipe("digits_mlp", overrides={"data.class_names": ["a", "b"]})
    with pytest.raises(trainkit.ConfigError, match=r"data.class_names: 2 name\(s\) for 10 classes"):
        prepare(wrong.data, seed=0)


def test_predict_reads_a_csv_with_the_training_columns(cases, tmp_path):
    from sklearn.datasets import load_breast_cancer

    case = cases["binary_classifier"]
    data = load_breast_cancer()
    # Test rows in another column order, with the label column: columns are picked by name.
    rows = case.raw[:6]
    header = [*reversed(data.feature_names), "target"]
    lines = [",".join(header)] + [",".join(map(repr, [*reversed(r.tolist()), 0])) for r in rows]
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    from trainkit.serving.predict import write_csv

    write_csv(trainkit.predict(case.run.run_dir, tmp_path / "in.csv"), tmp_path / "out.csv")
    table = (tmp_path / "out.csv").read_text().splitlines()
    assert table[0] == "input,class,probability_malignant,probability_benign"
    probabilities = expected_probabilities(case.run.model, case.piped[:6])
    got = np.array([[float(v) for v in line.split(",")[2:]] for line in table[1:]])
    np.testing.assert_allclose(got, probabilities, atol=1e-5)
    assert [line.split(",")[1] for line in table[1:]] == [["malignant", "benign"][k] for k in probabilities.argmax(-1)]


def test_predict_api_and_run_predict_take_arrays_npy_and_json_lines(cases, tmp_path):
    case = cases["linear_regression"]
    expected = case.run.model.predict(case.piped, verbose=0)
    np.testing.assert_allclose(case.run.predict(case.raw).values, expected, atol=1e-5, rtol=1e-6)
    np.save(tmp_path / "x.npy", case.raw[:3])
    from_npy = trainkit.predict(case.run.run_dir, tmp_path / "x.npy")
    np.testing.assert_allclose(from_npy.values, expected[:3], atol=1e-5, rtol=1e-6)
    (tmp_path / "x.jsonl").write_text("".join(json.dumps(row.tolist()) + "\n" for row in case.raw[:3]))
    result = cli("predict", str(case.run.run_dir), "x.jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "input,prediction"
    np.testing.assert_allclose([float(line.split(",")[1]) for line in lines[1:]], expected[:3, 0], rtol=1e-6)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("1,2,3\n", r"in.csv, row 1: 3 values; expected 30 values per row"),
        ("mean radius\n1\n", r"in.csv: no column 'mean texture' in the header"),
        (",".join(["1"] * 29 + ["x1"]) + "\n", r"in.csv, row 1, column 'worst fractal dimension': 'x1' is not a number"),
    ],
)
def test_bad_predict_input_is_one_line_exit_2_and_writes_nothing(cases, tmp_path, content, message):
    (tmp_path / "in.csv").write_text(content)
    result = cli("predict", str(cases["binary_classifier"].run.run_dir), "in.csv", "-o", "out.csv", cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert re.search(message, errors[0]), errors[0]
    assert not (tmp_path / "out.csv").exists()


def test_image_folder_run_exports_and_predicts_a_folder_of_images(cases, tmp_path):
    case = cases["shapes"]
    check_agreement(case)
    assert case.names["onnx"]["class_names"] == ["circle", "square"]
    images = case.run.run_dir.parent / "images"
    result = cli("predict", str(case.run.run_dir), str(images / "square"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "input,class,probability_circle,probability_square" and len(lines) == 7
    assert lines[1].startswith("0.png,")

    write_images(tmp_path / "big", (10, 12), per_class=1)
    with pytest.raises(trainkit.ConfigError, match="circle/0.png: the image is 10x12; expected 8x8"):
        trainkit.predict(case.run.run_dir, tmp_path / "big")


def test_export_of_an_earlier_checkpoint_and_quantized_litert(cases, tmp_path):
    case = cases["digits_cnn"]
    run_dir = case.run.run_dir
    kept = kept_steps(run_dir / "checkpoints")
    first_epoch = str(kept[0])  # the end of epoch 1 of 2
    result = cli(
        "export", str(run_dir), "--checkpoint", first_epoch, "--format", "keras", "--format", "tflite",
        "--quantize", "dynamic_range", "-o", "early", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "early" / "export.json").read_text())
    import keras

    early = keras.models.load_model(tmp_path / "early" / "model.keras")
    accuracy = float(np.mean(early.predict(case.raw, verbose=0).argmax(-1) == case.labels))
    at_step = trainkit.evaluate(run_dir, split="test", checkpoint=first_epoch)
    assert accuracy == pytest.approx(at_step["accuracy"], abs=1e-6)
    assert report["formats"]["keras"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    # Dynamic-range quantization: int8 weights, about a quarter of the float file.
    float_bytes = (run_dir / "model.tflite").stat().st_size
    quantized = report["formats"]["tflite"]
    assert quantized["quantize"] == "dynamic_range"
    assert quantized["bytes"] < 0.5 * float_bytes
    assert abs(quantized["accuracy_change"]) <= 0.05


def test_export_refuses_an_unknown_format_in_one_line(cases, tmp_path):
    run_dir = cases["digits_mlp"].run.run_dir
    result = cli("export", str(run_dir), "--format", "tflight", cwd=tmp_path)
    assert result.returncode == 2
    assert "error: --format: unknown format 'tflight'; did you mean 'tflite'?" in result.stderr
    assert not list(run_dir.glob("export-*"))


@trainkit.register_transform("serving_test_double", overwrite=True)
def double(x, y):
    return x * 2.0, y


def test_a_registered_transform_trains_but_is_not_exported_as_an_inference_model(tmp_path, capsys):
    recipe = trainkit.load_recipe(
        "digits_mlp",
        configs=["digits_mlp_smoke"],
        overrides={"data.transforms": [{"type": "serving_test_double"}], "trainer.epochs": None, "trainer.steps": 3},
    )
    run = trainkit.train(recipe, run_dir=tmp_path / "run")
    assert "only the trained model is exported" in capsys.readouterr().err
    assert (run.run_dir / "model.keras").is_file()  # the trained model, as before
    with pytest.raises(trainkit.ConfigError, match="data.transforms.0: registered transform 'serving_test_double' has no Keras layer"):
        trainkit.export(run.run_dir, formats=["onnx"])
    assert not list(run.run_dir.glob("export-*"))


def test_without_the_export_extra_onnx_export_names_the_extra_in_one_line(tmp_path, monkeypatch):
    recipe = trainkit.load_recipe(
        "digits_mlp", configs=["digits_mlp_smoke"], overrides={"trainer.epochs": None, "trainer.steps": 2, "export.formats": ["keras"]}
    )
    run_dir = trainkit.train(recipe, run_dir=tmp_path / "run").run_dir
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if the export extra were not installed
    done = cli("export", str(run_dir), "--format", "onnx")
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == (
        "error: export to onnx needs tf2onnx, which is not installed; install the extra: pip install 'trainkit[export]'"
    )
    assert not list(run_dir.glob("export-*"))
