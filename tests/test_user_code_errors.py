"""Exceptions raised inside user code become one line naming the component and
the recipe field, before the run directory is written (CLI: exit 2, no traceback)."""

from __future__ import annotations

import textwrap

import pytest
from conftest import run_cli

import trainkit
from trainkit import ConfigError

FAULTY_RECIPE = '''
"""A digits MLP whose registered components each fail in their own way."""
import keras
import numpy as np
import trainkit


@trainkit.register_model("exploding_builder")
def exploding_builder(*, input_shape, num_outputs):
    raise RuntimeError("the builder exploded")


@trainkit.register_model("imagenet_backbone")
def imagenet_backbone(*, input_shape, num_outputs):
    base = keras.applications.MobileNetV2(weights="imagenet", input_shape=(32, 32, 3), include_top=False)
    return keras.Sequential([base, keras.layers.Dense(num_outputs)])


@trainkit.register_dataset("unreadable")
def unreadable():
    raise OSError("the disk is unreadable")


@trainkit.register_transform("crashing")
def crashing(x, y):
    raise RuntimeError("the transform crashed")


@trainkit.register_callback("Grumpy")
class Grumpy(keras.callbacks.Callback):
    def __init__(self, mood: str = "bad"):
        super().__init__()
        raise LookupError(f"no callback in a {mood} mood")


def recipe():
    return {
        "name": "faulty",
        "data": {"source": {"type": "sklearn", "name": "digits"}, "batch_size": 64},
        "model": {"type": "mlp", "hidden_units": [8]},
        "loss": "sparse_categorical_crossentropy",
        "trainer": {"epochs": 1, "progress": False},
    }
'''


@pytest.fixture(scope="module")
def faulty(tmp_path_factory) -> trainkit.Recipe:
    path = tmp_path_factory.mktemp("recipes") / "faulty.py"
    path.write_text(textwrap.dedent(FAULTY_RECIPE))
    return trainkit.load_recipe(path)  # registers the components once for the module


CASES = {
    "builder": (
        {"model": {"type": "exploding_builder"}},
        "model: builder 'exploding_builder' failed: RuntimeError: the builder exploded",
    ),
    "dataset": (
        {"data.source": {"type": "arrays", "name": "unreadable"}},
        "data.source.name: dataset 'unreadable' failed: OSError: the disk is unreadable",
    ),
    "transform": (
        {"data.transforms": ["crashing"]},
        "data.transforms.0: transform 'crashing' failed: RuntimeError: the transform crashed",
    ),
    "callback": (
        {"trainer.callbacks": [{"type": "Grumpy", "mood": "foul"}]},
        "trainer.callbacks.0: Grumpy failed: LookupError: no callback in a foul mood",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_code_failure_is_one_line_naming_the_field_and_nothing_is_written(tmp_path, faulty, case):
    overrides, expected = CASES[case]
    recipe = trainkit.load_recipe(faulty, overrides=overrides)
    with pytest.raises(ConfigError) as caught:
        trainkit.train(recipe, run_dir=tmp_path / "run")
    message = str(caught.value)
    assert message.startswith(expected), message
    assert "\n" not in message
    assert not (tmp_path / "run").exists()


def test_imagenet_weights_offline_exit_2_with_one_line_from_the_cli(tmp_path):
    (tmp_path / "faulty.py").write_text(textwrap.dedent(FAULTY_RECIPE))
    # Whatever this machine's network, the download must fail: every HTTP(S)
    # request goes to a proxy on a closed local port.
    offline = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "KERAS_HOME": str(tmp_path / "keras")}
    result = run_cli(
        "train", "faulty.py", "model.type=imagenet_backbone", "--run-dir", "run", cwd=tmp_path, env=offline
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("error: model: builder 'imagenet_backbone' failed: Exception: URL fetch failure")
    assert "a download failed: trainkit runs offline" in errors[0]
    assert not (tmp_path / "run").exists()
