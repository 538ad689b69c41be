"""The recipe schema and loader: parsing, layering, overrides, hashing, errors.

None of these tests import TensorFlow: a recipe is plain data.
"""

from __future__ import annotations

import pytest

import trainkit
from trainkit.errors import ConfigError
from trainkit.loader import load_recipe
from trainkit.recipe import Recipe, diff, is_resumable_change

MINIMAL = {
    "name": "tiny",
    "data": {"source": {"type": "sklearn", "name": "iris"}},
    "model": {"type": "mlp", "hidden_units": [8]},
    "loss": "sparse_categorical_crossentropy",
    "trainer": {"epochs": 2},
}


def write(path, text):
    path.write_text(text)
    return path


def test_defaults_fill_every_section():
    recipe = Recipe.model_validate(MINIMAL)
    assert recipe.optimizer.type == "adam"
    assert recipe.data.batch_size == 32
    assert recipe.runtime.strategy == "auto"
    assert recipe.export.formats == ["keras"]
    assert recipe.loss.type == "sparse_categorical_crossentropy"  # shorthand string
    assert recipe.model.kwargs == {"hidden_units": [8]}


def test_yaml_round_trip_is_identical_with_the_same_hash():
    recipe = load_recipe("digits_cnn", configs=["digits_cnn_smoke"], overrides=["optimizer.learning_rate=0.01"])
    again = Recipe.from_yaml(recipe.to_yaml())
    assert again == recipe
    assert again.hash == recipe.hash
    assert again.to_yaml() == recipe.to_yaml()


def test_hash_changes_with_any_field():
    a = Recipe.model_validate(MINIMAL)
    b = Recipe.model_validate({**MINIMAL, "seed": 1})
    assert a.hash != b.hash
    assert diff(a, b) == ["seed"]


def test_config_layers_and_typed_overrides():
    recipe = load_recipe("digits_mlp", configs=["digits_mlp_smoke"], overrides=["trainer.epochs=5", "model.hidden_units=[16, 8]"])
    assert recipe.trainer.epochs == 5
    assert recipe.trainer.progress is False  # from the smoke config
    assert recipe.model.kwargs["hidden_units"] == [16, 8]
    # The Python API takes a mapping too.
    assert load_recipe("digits_mlp", overrides={"data.batch_size": 7}).data.batch_size == 7


def test_list_index_override():
    recipe = load_recipe("binary_classifier", overrides=["model.layers.0.units=8"])
    assert recipe.model.kwargs["layers"][0] == {"type": "Dense", "units": 8, "activation": "relu"}


def test_changing_a_components_type_drops_its_old_arguments():
    recipe = load_recipe("digits_mlp", overrides=["model.type=sequential", "model.layers=[Flatten, {type: Dense, units: 10}]"])
    assert recipe.model.kwargs == {"layers": ["Flatten", {"type": "Dense", "units": 10}]}


def test_config_file_names_its_base_recipe(tmp_path):
    config = write(tmp_path / "mine.yaml", "base: digits_mlp\ntrainer: {epochs: 3}\noptimizer: {learning_rate: 0.5}\n")
    recipe = load_recipe(config)
    assert recipe.name == "digits_mlp"
    assert (recipe.trainer.epochs, recipe.optimizer.learning_rate) == (3, 0.5)
    assert recipe.optimizer.type == "adam"  # merged, not replaced


def test_python_recipe_may_register_its_own_builder(tmp_path):
    path = write(
        tmp_path / "custom.py",
        '''"""A recipe with its own model builder."""
import trainkit

@trainkit.register_model("custom_net_for_test")
def custom_net(*, input_shape, num_outputs, width: int = 4):
    import keras
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, keras.layers.Dense(num_outputs)(keras.layers.Dense(width)(inputs)))

def recipe():
    return {
        "name": "custom",
        "data": {"source": {"type": "sklearn", "name": "iris"}},
        "model": {"type": "custom_net_for_test", "width": 3},
        "loss": {"type": "SparseCategoricalCrossentropy", "from_logits": True},
        "trainer": {"epochs": 1},
    }
''',
    )
    recipe = load_recipe(path)
    assert recipe.model.type == "custom_net_for_test"
    assert recipe.description == "A recipe with its own model builder."
    assert "custom_net_for_test" in trainkit.registry.models


def test_resumable_changes():
    assert is_resumable_change("trainer.epochs")
    assert is_resumable_change("trainer.validation.every_steps")
    assert not is_resumable_change("optimizer.learning_rate")
    assert not is_resumable_change("trainer.epochs_extra")


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["trainer.epoch=3"], "unknown key 'epoch' in trainer (in override trainer.epoch=3); did you mean 'epochs'?"),
        (["trainer.epochs=abc"], "trainer.epochs (in override trainer.epochs=abc): Input should be a valid integer"),
        (["data.batch_size=0"], "data.batch_size (in override data.batch_size=0): Input should be greater than 0"),
        (["optimizer.learning_rate=-0.1"], "optimizer.learning_rate (in override optimizer.learning_rate=-0.1): Input should be greater than 0"),
        (["data.source.type=sklern"], "data.source.type (in override data.source.type=sklern): unknown type 'sklern'; did you mean 'sklearn'?"),
        (["optimizer.schedule={type: cosin}"], "unknown type 'cosin'; did you mean 'cosine'?"),
        (["trainer.epochs=null"], "set a training budget"),
        (["data.splits.train=0.5"], "must sum to 1"),
        (["seed"], "must look like key=value"),
        (["data.splits.0=1"], "data.splits.0"),
    ],
)
def test_override_errors_are_one_line_and_name_the_field(overrides, expected):
    with pytest.raises(ConfigError) as info:
        load_recipe("digits_mlp", overrides=overrides)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_error_names_the_config_file_that_set_the_bad_value(tmp_path):
    config = write(tmp_path / "bad.yaml", "base: digits_mlp\ntrainer:\n  epochs: 0\n")
    with pytest.raises(ConfigError, match=r"trainer.epochs \(in .*bad.yaml\): Input should be greater than 0"):
        load_recipe(config)


def test_yaml_syntax_error_gives_file_and_line(tmp_path):
    config = write(tmp_path / "broken.yaml", "base: digits_mlp\ntrainer:\n  epochs: [1,\n")
    with pytest.raises(ConfigError, match=r"YAML error in .*broken.yaml, line \d+"):
        load_recipe(config)


def test_yaml_python_tags_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    config = write(tmp_path / "evil.yaml", f"base: digits_mlp\nseed: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="tags that build Python objects are refused"):
        load_recipe(config)
    assert not marker.exists()


def test_duplicate_yaml_keys_are_refused(tmp_path):
    config = write(tmp_path / "dup.yaml", "base: digits_mlp\ntrainer:\n  epochs: 1\n  epochs: 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'epochs'"):
        load_recipe(config)


def test_missing_recipe_suggests_a_name():
    with pytest.raises(ConfigError, match="did you mean 'digits_cnn'"):
        load_recipe("digits_cn")


def test_config_for_another_recipe_is_refused():
    with pytest.raises(ConfigError, match="this config is for recipe 'digits_cnn', not 'digits_mlp'"):
        load_recipe("digits_mlp", configs=["digits_cnn_smoke"])


def test_recipe_file_that_raises_is_reported_with_its_line(tmp_path):
    path = write(tmp_path / "oops.py", "def recipe():\n    return undefined_name\n")
    with pytest.raises(ConfigError, match=r"oops.py: recipe\(\) failed: line 2: NameError"):
        load_recipe(path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "a config must be a mapping of recipe keys, got an empty file"),
        (b"- a\n- b\n", "got a list"),
        (b"\xff\xfe not text", "it is not UTF-8 text"),
        (b"base: digits_mlp\ntrainer: {steps_per_execution: 0}\n", "trainer.steps_per_execution (in "),
        (b"base: digits_mlp\nbase: digits_cnn\n", "duplicate key 'base'"),
        (b"base: 3\n", "base ("),
    ],
)
def test_malformed_config_files(tmp_path, content, expected):
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def recipe(:\n    pass\n", "failed to load: line 1: SyntaxError"),
        ("x = 1\n", "must define a function recipe()"),
        ("def recipe():\n    return None\n", "recipe() must return a Recipe or a dict, got NoneType"),
        ("def recipe():\n    return {'name': 'x'}\n", "data (in "),
    ],
)
def test_malformed_python_recipes(tmp_path, source, expected):
    path = tmp_path / "bad_recipe.py"
    path.write_text(source)
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert expected in str(info.value)
