"""One thing in one place: the first line of an error message, the preprocessing
transforms that training and serving share."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "trainkit"


def test_the_first_line_of_an_error_is_taken_in_one_place():
    # errors.first_line is the one helper; retyping it drifts (one copy forgot the
    # exception's ``message``, another the type name of an empty message).
    retyped = re.compile(r"(str\((err|e|exc|error)\)|\.message|or str\(\w+\)\)).*splitlines\(\)")
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "errors.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if retyped.search(line)
    ]
    assert not found, f"use trainkit.errors.first_line: {found}"


def test_first_line_cuts_to_a_limit_and_names_an_empty_error():
    from trainkit.errors import first_line

    assert first_line(ValueError("one\ntwo")) == "one"
    assert first_line(ValueError("x" * 50), limit=10) == "x" * 10
    assert first_line(KeyError()) == "KeyError"


def test_first_line_of_an_error_keras_raised_inside_a_layer_names_the_layer_and_the_cause():
    import keras
    import numpy as np

    from trainkit.errors import first_line

    try:
        keras.layers.Resizing(4, 4)(np.zeros((1, 64), np.float32))
    except Exception as err:  # noqa: BLE001 - whatever Keras raises
        assert first_line(err) == "Resizing: tuple index out of range"


def _write_images(root: Path, size: tuple[int, int]) -> None:
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for label, name in enumerate(["dark", "light"]):
        (root / name).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 120, (*size, 3)) + 120 * label
            (root / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels.astype(np.uint8)).numpy())


def test_the_pipeline_and_the_inference_model_apply_the_same_layers(tmp_path):
    """Each deterministic transform is one Keras layer: the features the pipeline gives
    are exactly those the inference model's preprocessing makes of the raw ones."""
    import keras
    import numpy as np

    import trainkit
    from trainkit.data.pipeline import prepare
    from trainkit.serving.model import inference_model

    _write_images(tmp_path / "images", (8, 8))
    transforms = [
        {"type": "scale", "factor": 1 / 255},
        {"type": "normalize"},
        {"type": "resize", "size": [6, 6], "method": "bicubic"},
        {"type": "center_crop", "size": [7, 5]},  # taller than the image: Keras resizes, as serving does
    ]
    recipe = trainkit.load_recipe(
        "digits_mlp",
        overrides={"data": {"source": {"type": "image_folder", "path": str(tmp_path / "images")}, "transforms": transforms,
                            "splits": {"train": 0.5, "validation": 0.0, "test": 0.5}}},
    )
    data = prepare(recipe.data, seed=0)
    assert [step["type"] for step in data.preprocessing] == ["rescale", "normalize", "resize", "center_crop"]
    (raw, _), (piped, _) = next(iter(data.raw_dataset("test"))), next(iter(data.dataset("test")))
    features = keras.Input(piped.shape[1:])
    trained = keras.Model(features, keras.layers.Identity()(features))
    spec = {"recipe": "t", "task": "regression", "head": "identity", "preprocessing": data.preprocessing,
            "input": {"name": "features", "shape": list(raw.shape[1:]), "dtype": raw.dtype.name}}
    served = np.asarray(inference_model(trained, spec)(raw))
    assert piped.shape == (4, 7, 5, 3)
    np.testing.assert_array_equal(served, piped.numpy())


def test_preprocessing_layers_are_made_in_one_place():
    layers = re.compile(r"keras\.layers\.(Normalization|Rescaling|Reshape|Resizing|CenterCrop)\(")
    found = [
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*.py")
        # (models/ builds architectures: a Reshape or a Rescaling of targets there is part of
        # the trained model, not a transform of the inputs.)
        if path.name != "transforms.py" and "models" not in path.relative_to(PACKAGE).parts and any(layers.search(line) and "one_minus" not in line for line in path.read_text().splitlines())
    ]
    assert not found, f"make preprocessing layers with trainkit.data.transforms.LAYERS: {found}"
