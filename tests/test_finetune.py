"""Fine-tuning: pretrained sources, head, freeze, learning-rate groups, stages, init.

The source is a real digits_cnn run trained once per session (a few steps);
every fine-tuning run is a real ``trainkit`` subprocess on it.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import yaml
from _checkpoint_helpers import messages, train, train_here
from conftest import cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="session")
def source_run(tmp_path_factory) -> Path:
    """A digits_cnn run (10 steps), the pretrained source of these tests."""
    run = tmp_path_factory.mktemp("source") / "digits_cnn"
    result = cli(
        "train", "digits_cnn", "-c", "digits_cnn_smoke", "trainer.steps=10", "runtime.deterministic=true",
        "--run-dir", str(run),
    )
    assert result.returncode == 0, result.stderr
    return run


def recipe_file(directory: Path, source: str, **changes) -> Path:
    """A fine-tuning recipe (even/odd digits is not needed here: the head is new either way)."""
    recipe = {
        "name": "digits_finetune",
        "data": {"source": {"type": "sklearn", "name": "digits"}, "scale": "minmax", "feature_shape": [8, 8, 1], "batch_size": 64},
        "model": {"type": "pretrained", "source": source, "head": "replace", "freeze": ["^conv_"]},
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "optimizer": {"type": "adam", "learning_rate": 0.002},
        "trainer": {"stages": [{"epochs": 1}], "progress": False},
        "runtime": {"deterministic": True},
    }
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = recipe
        for key in parents:
            node = node[key]
        node[leaf] = value
    path = directory / "finetune.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def layer_weights(model_file: Path) -> dict[str, list[np.ndarray]]:
    """Each layer's weights by name, nested models' layers included (model.keras is the
    inference model: the trained model nested between preprocessing and output layers)."""
    import keras

    from trainkit.models.finetune import layers_of

    model = keras.saving.load_model(model_file, compile=False)
    return {
        layer.name: [np.array(w) for w in layer.get_weights()]
        for layer in layers_of(model)
        if layer.weights and not hasattr(layer, "layers")
    }


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_frozen_layers_and_a_zero_multiplier_group_hold_their_weights_and_a_stage_unfreezes(tmp_path, source_run):
    stages = [{"epochs": 1}, {"epochs": 1, "unfreeze": ["^conv_1$"], "learning_rate": 5e-4}]
    groups = [{"match": "^dense_0/", "learning_rate_multiplier": 0.0}]
    recipe = recipe_file(tmp_path, str(source_run), trainer__stages=stages, optimizer__groups=groups)
    result = cli("train", str(recipe), "--run-dir", str(tmp_path / "run"), "trainer.progress=true")
    assert result.returncode == 0, result.stderr
    assert "stage 2/2 from step 23" in result.stdout
    # The stage is announced after the epoch that stage 1 trained, and each epoch's
    # line and log show the learning rate its steps used; the epoch count is known.
    lines = result.stdout.splitlines()
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch 1/2 "))
    assert first_epoch < next(i for i, line in enumerate(lines) if line.startswith("stage 2/2 from step 23"))
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rates = {e["step"]: e["learning_rate"] for e in epochs if e["split"] == "epoch"}
    assert rates[46] == pytest.approx(5e-4) and rates[23] != pytest.approx(5e-4)
    before, after = layer_weights(source_run / "model.keras"), layer_weights(tmp_path / "run" / "model.keras")
    assert same(before["conv_0"], after["conv_0"])  # frozen throughout
    assert not np.array_equal(before["conv_1"][0], after["conv_1"][0])  # unfrozen in stage 2
    assert same(before["dense_0"], after["dense_0"])  # trainable, multiplier 0
    assert after["output"][0].shape == (128, 10)  # the new head, sized from the data ...
    assert not np.array_equal(after["output"][0], before["output"][0])  # ... and trained


def test_a_freeze_pattern_that_matches_nothing_is_one_line_listing_the_layers_and_writes_nothing(tmp_path, source_run):
    import trainkit
    from trainkit.errors import ConfigError

    # (In this process: not deterministic, which would switch TensorFlow's op determinism on for good.)
    recipe = recipe_file(tmp_path, str(source_run), model__freeze=["^conv_0$", "^cnv"], runtime__deterministic=False)
    with pytest.raises(ConfigError) as caught:
        trainkit.train(trainkit.load_recipe(recipe), run_dir=tmp_path / "run")
    message = str(caught.value)
    assert "\n" not in message
    assert "model.freeze.1: '^cnv' matches no layer" in message and "conv_0, " in message and "dense_0" in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("patterns", [[""], [".*"], ["^conv_", "^dense_0$", "^output$"]])
def test_freezing_every_layer_is_one_line(tmp_path, source_run, patterns):
    import trainkit
    from trainkit.errors import ConfigError

    recipe = recipe_file(tmp_path, str(source_run), model__freeze=patterns, runtime__deterministic=False)
    with pytest.raises(ConfigError, match=r"freezes every layer, the head too, so the first stage would train nothing"):
        trainkit.validate(trainkit.load_recipe(recipe))


def test_validate_shows_frozen_layers_groups_and_parameter_counts(tmp_path, source_run):
    import trainkit

    recipe = recipe_file(
        tmp_path, str(source_run), optimizer__groups=[{"match": "^dense_0/", "learning_rate_multiplier": 0.1}],
        runtime__deterministic=False,
    )
    summary = trainkit.validate(trainkit.load_recipe(recipe))
    assert summary["frozen_layers"] == ["conv_0", "conv_1"]
    # 53,002 in all; the convolutions (320 + 18,496) are frozen.
    assert (summary["trainable_parameters"], summary["total_parameters"]) == (34186, 53002)
    assert summary["learning_rate"] == {
        "dense_0/kernel": "group 0 (x0.1)", "dense_0/bias": "group 0 (x0.1)", "output/kernel": "x1", "output/bias": "x1",
    }
    assert summary["sources"]["model.source"].startswith(f"{source_run} (digest ")


def test_any_multiplier_validates_and_a_failed_call_leaves_no_keras_name_scope_open(tmp_path, source_run):
    import keras
    import tensorflow as tf

    import trainkit
    from trainkit.runtime import preserved_process_state

    # A failure inside a Keras scope whose name TensorFlow refuses left that scope open,
    # so every variable made later in the process had the scope's name in its path.
    @tf.function  # (a graph checks scope names; eager code does not)
    def build_in_a_bad_scope():
        with keras.name_scope("adam_x1e+30"):
            return tf.constant(1)

    with pytest.raises(ValueError, match="not a valid root scope name"), preserved_process_state():
        build_in_a_bad_scope()
    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    assert dense.kernel.path == f"{dense.name}/kernel"
    # 1e30 named its group's optimizer 'adam_x1e+30', which is not a scope name; close
    # multipliers shared one name.
    groups = [{"match": "^dense_0/", "learning_rate_multiplier": 1e30}, {"match": "^output/", "learning_rate_multiplier": 0.1234567}]
    recipe = recipe_file(tmp_path, str(source_run), optimizer__groups=groups, runtime__deterministic=False)
    summary = trainkit.validate(trainkit.load_recipe(recipe))
    assert summary["learning_rate"]["dense_0/kernel"] == "group 0 (x1e+30)"
    from trainkit.optim import _group_name

    assert _group_name("adam", 1e30) == "adam_x1e30" and _group_name("adam", 0.1234567) != _group_name("adam", 0.1234568)


def test_a_kept_head_with_more_outputs_than_the_data_has_classes_is_one_line(tmp_path, source_run):
    import trainkit
    from trainkit.errors import ConfigError

    recipe = trainkit.load_recipe("digits_transfer", configs=["digits_transfer_smoke"],
                                  overrides={"model.source": str(source_run), "model.head": "keep", "runtime.deterministic": False})
    for call in (lambda: trainkit.validate(recipe), lambda: trainkit.train(recipe, run_dir=tmp_path / "run")):
        with pytest.raises(ConfigError) as caught:
            call()
        assert str(caught.value) == (
            "model: the model outputs 10 values per example, but the data has 2 classes: the last layer needs 2 units "
            "(a pretrained source with another number of classes: model.head: replace)"
        )
    assert not (tmp_path / "run").exists()


def test_a_kept_head_with_frozen_layers_trains_with_a_fresh_optimizer(tmp_path, source_run):
    import trainkit
    from trainkit.plan import build

    # The source run's checkpoint holds its Adam's moments; restoring the source left
    # them pending, and compiling the kept model with the fine-tuning's Adam poured them
    # into it by position: with frozen layers, a (3, 3, 1, 32) moment into a (256, 128) one.
    recipe = trainkit.load_recipe(recipe_file(tmp_path, str(source_run), model__head="keep", runtime__deterministic=False))
    built = build(recipe)
    moments = [v for v in built.trainer.optimizer.variables if "momentum" in v.path or "velocity" in v.path]
    assert moments and all(not v.numpy().any() for v in moments)  # nothing of the source's optimizer
    run = trainkit.train(recipe, run_dir=tmp_path / "run")
    assert run.status == "completed"


def test_per_group_rates_scale_adams_step_and_a_zero_group_holds_under_weight_decay():
    import keras

    from trainkit.optim import group_learning_rates

    def run(optimizer, multipliers):
        layer = keras.layers.Dense(3, kernel_initializer="ones")
        layer.build((None, 4))
        variables = [layer.kernel, layer.bias]
        if multipliers:
            optimizer = group_learning_rates(optimizer, variables, multipliers)
        optimizer.build(variables)
        for i in range(3):
            grads = [np.full((4, 3), 0.5 + i, "float32"), np.full((3,), -2.0 * (i + 1), "float32")]
            optimizer.apply(grads, variables)
        return [np.array(v) for v in variables]

    grouped = run(keras.optimizers.Adam(0.1), [0.1, 1.0])
    slower = run(keras.optimizers.Adam(0.01), None)
    full = run(keras.optimizers.Adam(0.1), None)
    np.testing.assert_allclose(grouped[0], slower[0], rtol=1e-6)  # 0.1 x the step ...
    assert not np.allclose(grouped[0], full[0])
    np.testing.assert_array_equal(grouped[1], full[1])  # ... the ungrouped bias as without groups
    held = run(keras.optimizers.AdamW(0.1, weight_decay=0.5), [0.0, 1.0])
    np.testing.assert_array_equal(held[0], np.ones((4, 3), "float32"))  # no step, no decay


def test_groups_keep_loss_scaling_a_global_clip_norm_and_a_settable_base_rate():
    import keras
    import tensorflow as tf

    from trainkit.optim import base_optimizer, group_learning_rates

    def run(optimizer, multipliers, *, loss_scaled):
        layer = keras.layers.Dense(3, kernel_initializer="ones")
        layer.build((None, 4))
        variables = [layer.kernel, layer.bias]
        optimizer = group_learning_rates(optimizer, variables, multipliers)
        if loss_scaled:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(variables)
        for i in range(3):
            grads = [tf.fill((4, 3), 0.5 + i), tf.fill((3,), -2.0 * (i + 1))]
            if loss_scaled:  # what the loop's scale_loss() does to the loss, the gradients get
                grads = [g * optimizer.scale_loss(tf.constant(1.0)) for g in grads]
            optimizer.apply(grads, variables)
        return optimizer, [np.array(v) for v in variables]

    _, plain = run(keras.optimizers.Adam(0.1, global_clipnorm=1.0), [0.1, 1.0], loss_scaled=False)
    scaled_optimizer, scaled = run(keras.optimizers.Adam(0.1, global_clipnorm=1.0), [0.1, 1.0], loss_scaled=True)
    for a, b in zip(plain, scaled, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # One norm over both groups: the bias alone (norm 2+) would be clipped differently.
    _, one_group = run(keras.optimizers.Adam(0.1, global_clipnorm=1.0), [1.0, 1.0], loss_scaled=False)
    _, per_group = run(keras.optimizers.Adam(0.1, global_clipnorm=1.0), [1.0 + 1e-9, 1.0], loss_scaled=False)
    np.testing.assert_allclose(one_group[1], per_group[1], rtol=1e-6)
    # The base rate reads as the optimizer's, and setting it (ReduceLROnPlateau) scales every group.
    assert float(scaled_optimizer.learning_rate) == pytest.approx(0.1)
    scaled_optimizer.learning_rate = 0.01
    rates = sorted(float(o.learning_rate) for o in scaled_optimizer.inner_optimizer.optimizers)
    assert rates == pytest.approx([0.001, 0.01])
    assert type(base_optimizer(scaled_optimizer)) is keras.optimizers.Adam


@pytest.mark.slow
def test_a_stage_boundary_resumes_bit_exactly_after_a_kill(tmp_path, source_run):
    stages = [{"epochs": 1}, {"epochs": 1, "unfreeze": "all", "learning_rate": 5e-4}]
    # A learning-rate group whose variables stage 1 keeps frozen: its optimizer's own state resumes too.
    groups = [{"match": "^conv_1/", "learning_rate_multiplier": 0.1}]
    recipe = recipe_file(tmp_path, str(source_run), trainer__stages=stages, optimizer__groups=groups)
    base = [str(recipe), "trainer.checkpoint.every_steps=5", "trainer.progress=true"]
    (tmp_path / "whole").mkdir()
    whole = train_here(tmp_path / "whole" / "run", base=base)
    assert whole.returncode == 0, whole.stderr
    # Killed after step 30 (stage 2 began at step 23): resumes from ckpt-25, inside stage 2.
    (tmp_path / "killed").mkdir()
    run = tmp_path / "killed" / "run"
    killed = train(run, base=base, faults=("kill-after-train:30",))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = train_here(run, base=base)
    assert resumed.returncode == 0, resumed.stderr
    assert "at step 25 " in resumed.stdout and "stage 2/2" in resumed.stdout
    a, b = layer_weights(tmp_path / "whole" / "run" / "model.keras"), layer_weights(run / "model.keras")
    assert a.keys() == b.keys()
    assert all(same(a[name], b[name]) for name in a), "weights differ from the uninterrupted run"


def test_a_changed_source_is_refused_and_a_removed_one_is_not_needed(tmp_path, source_run):
    import keras

    from trainkit.run_source import restore_source

    source = tmp_path / "source.keras"
    restore_source(source_run, "final", field="model.source").save(source)  # the trained CNN alone
    recipe = recipe_file(tmp_path, str(source))
    run = tmp_path / "run"
    trained = cli("train", str(recipe), "--run-dir", str(run))
    assert trained.returncode == 0, trained.stderr
    expected = json.loads((run / "eval.json").read_text())["test"]

    source.unlink()  # evaluation and a further resume need the source no more
    evaluated = cli("eval", str(run), "--split", "test")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["test"] == pytest.approx(expected)
    again = cli("train", str(recipe), "--run-dir", str(run))
    assert again.returncode == 0, again.stderr

    model = keras.saving.load_model(run / "pretrained_source.keras", compile=False)
    kernel = model.get_layer("conv_0").kernel
    kernel.assign(kernel + 1e-3)
    model.save(source)  # the same path, other weights
    refused = cli("train", str(recipe), "--run-dir", str(run))
    assert refused.returncode == 2
    lines = messages(refused.stderr)
    assert len(lines) == 1 and "model.source" in lines[0] and str(source) in lines[0] and "changed" in lines[0]


def test_init_restores_matching_variables_and_reports_the_rest(tmp_path, source_run):
    run = tmp_path / "run"
    result = cli(
        "train", "digits_cnn", "-c", "digits_cnn_smoke", "trainer.epochs=1", "trainer.steps=2",
        f"model.init={{source: {source_run}, skip: ['^output/']}}", "model.dense_units=[64]",
        "--run-dir", str(run),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((run / "init.json").read_text())
    assert report["matched"][:4] == ["conv_0/kernel", "conv_0/bias", "conv_1/kernel", "conv_1/bias"]
    assert report["skipped"] == ["output/kernel", "output/bias"]
    assert {m["variable"] for m in report["shape_mismatch"]} == {"dense_0/kernel", "dense_0/bias"}
    assert report["missing"] == []
    assert "model.init: restored 4 of 8 variables" in result.stdout
    assert json.loads((run / "run.json").read_text())["sources"]["model.init.source"]["digest"] == report["digest"]


def test_a_preset_that_needs_a_download_fails_offline_with_what_to_fetch(tmp_path):
    recipe = recipe_file(tmp_path, "kaggle://keras/bert/keras/bert_tiny_en_uncased", model__freeze=[])
    result = cli("train", str(recipe), "--run-dir", str(tmp_path / "run"), env={"TRAINKIT_OFFLINE": "1"})
    assert result.returncode == 2
    lines = messages(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "save_to_preset" in lines[0] and "model.source: DIR" in lines[0]
    assert not (tmp_path / "run").exists()


def test_keras_applications_weights_without_a_local_file_say_what_to_fetch(tmp_path):
    import trainkit
    from trainkit.errors import ConfigError

    recipe = recipe_file(tmp_path, "keras.applications.MobileNetV2", model__freeze=[], runtime__deterministic=False)
    with pytest.raises(ConfigError, match=r"model.weights: .*weights='imagenet'.*~/.keras/models/.*model.weights: FILE"):
        trainkit.validate(trainkit.load_recipe(recipe))


def test_the_digits_transfer_smoke_config_fine_tunes_a_digits_cnn_run(tmp_path, source_run):
    import trainkit

    assert trainkit.load_recipe("digits_transfer_scratch").name == "digits_transfer"
    shutil.copytree(source_run, tmp_path / "runs" / "digits_cnn")
    result = cli("train", "digits_transfer", "-c", "digits_transfer_smoke", "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert 0.5 < metrics["test"]["accuracy"] <= 1.0  # two classes: better than chance after two epochs


def test_a_frozen_batch_normalization_runs_in_inference_mode():
    import keras

    from trainkit.models.finetune import freeze

    inputs = keras.Input((4,))
    outputs = keras.layers.BatchNormalization(name="bn_0")(keras.layers.Dense(4, name="dense_0")(inputs))
    model = keras.Model(inputs, outputs)
    freeze(model, ["^bn_"])
    x = np.random.default_rng(0).normal(3.0, 2.0, (32, 4)).astype("float32")
    bn = model.get_layer("bn_0")
    before = [np.array(w) for w in bn.weights]
    np.testing.assert_array_equal(model(x, training=True), model(x, training=False))  # moving statistics used
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(before, bn.weights, strict=True))  # and not updated
    assert [v.path for v in model.trainable_variables] == ["dense_0/kernel", "dense_0/bias"]


def test_a_keras_application_takes_its_weights_from_a_local_file(tmp_path):
    import keras

    import trainkit
    from trainkit.models.pretrained import digest

    weights = tmp_path / "mobilenet_v2.weights.h5"
    pretrained = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 1), pooling="avg")
    pretrained.save_weights(weights)
    recipe = recipe_file(
        tmp_path, "keras.applications.MobileNetV2", model__weights=str(weights), model__freeze=["^mobilenetv2"],
        data__transforms=[{"type": "resize", "size": [32, 32]}], runtime__deterministic=False,
    )
    summary = trainkit.validate(trainkit.load_recipe(recipe))
    assert summary["sources"]["model.source"].endswith(f"(digest {digest(pretrained)})")
    assert summary["frozen_layers"] == ["mobilenetv2_1.00_32"]
    assert summary["trainable_parameters"] == 1280 * 10 + 10  # the new head alone


def test_a_replaced_head_keeps_the_source_input_structure_so_calls_do_not_warn():
    import warnings

    import keras
    import numpy as np

    from trainkit.models.pretrained import with_head

    features = keras.Input((4,), name="features")
    source = keras.Model(features, keras.layers.Dense(3, name="output")(keras.layers.Dense(5, name="hidden")(features)))
    model = with_head(source, head="replace", cut_at=None, task="classification", num_outputs=2, output_activation=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Keras: "The structure of `inputs` doesn't match the expected structure"
        assert model(np.zeros((2, 4), np.float32)).shape == (2, 2)
