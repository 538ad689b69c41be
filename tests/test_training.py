"""The training loop's behaviour through the Python API (in-process, real TensorFlow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import trainkit
from trainkit.training.loop import Trainer

QUIET = {"trainer.progress": False}


def weights(model) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.get_weights()]


def same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def recipe(name="digits_mlp", **overrides):
    return trainkit.load_recipe(name, overrides={**QUIET, **overrides})


def test_mirrored_on_two_cpus_matches_one_device(tmp_path):
    common = {"trainer.epochs": None, "trainer.steps": 30, "model.dropout": 0.0, "runtime.deterministic": True}
    one = trainkit.train(recipe(**common, **{"runtime.strategy": "one_device"}), run_dir=tmp_path / "one")
    two = trainkit.train(
        recipe(**common, **{"runtime.strategy": "mirrored", "runtime.cpu_devices": 2}), run_dir=tmp_path / "two"
    )
    assert two._built.strategy.num_replicas_in_sync == 2
    for a, b in zip(weights(one.model), weights(two.model), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert one.metrics["test"]["accuracy"] == pytest.approx(two.metrics["test"]["accuracy"], abs=1e-6)


def test_steps_per_call_do_not_change_results(tmp_path):
    common = {"trainer.epochs": None, "trainer.steps": 40, "runtime.deterministic": True}
    single = trainkit.train(recipe(**common, **{"trainer.steps_per_execution": 1}), run_dir=tmp_path / "a")
    many = trainkit.train(recipe(**common, **{"trainer.steps_per_execution": 16}), run_dir=tmp_path / "b")
    auto = trainkit.train(recipe(**common), run_dir=tmp_path / "c")
    assert same(weights(single.model), weights(many.model))
    assert same(weights(single.model), weights(auto.model))


def test_same_seed_same_weights_and_another_seed_differs(tmp_path):
    common = {"trainer.epochs": None, "trainer.steps": 20, "runtime.deterministic": True}
    a = trainkit.train(recipe(**common), run_dir=tmp_path / "a")
    b = trainkit.train(recipe(**common), run_dir=tmp_path / "b")
    c = trainkit.train(recipe(**common, seed=1), run_dir=tmp_path / "c")
    assert same(weights(a.model), weights(b.model))
    assert not same(weights(a.model), weights(c.model))


def test_step_budget_validation_and_logging_intervals(tmp_path):
    run = trainkit.train(
        recipe(
            **{
                "trainer.epochs": None,
                "trainer.steps": 25,
                "trainer.log_every_steps": 10,
                "trainer.validation.every_steps": 12,
                "trainer.validation.every_epochs": None,
            }
        ),
        run_dir=tmp_path / "run",
    )
    events = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["split"] == "train"] == [10, 20]
    assert [e["step"] for e in events if e["split"] == "validation"] == [12, 24]
    status = json.loads((run.run_dir / "run.json").read_text())
    assert status["step"] == 25 and status["status"] == "completed"
    for key in ("versions", "command", "seed", "recipe_hash", "started", "ended", "steps_per_second"):
        assert status[key] is not None, key
    assert status["recipe_hash"] == run.recipe.hash


def test_epoch_budget_runs_whole_epochs(tmp_path):
    run = trainkit.train(recipe(**{"trainer.epochs": 3}), run_dir=tmp_path / "run")
    assert len(run.history["loss"]) == 3 and len(run.history["val_accuracy"]) == 3
    steps_per_epoch = run._built.steps_per_epoch
    assert json.loads((run.run_dir / "run.json").read_text())["step"] == 3 * steps_per_epoch


def test_keras_callbacks_early_stopping_reduce_lr_and_tensorboard(tmp_path):
    callbacks = [
        # min_delta so large that no epoch counts as an improvement: stops after patience + 1 epochs.
        {"type": "EarlyStopping", "monitor": "val_loss", "patience": 1, "min_delta": 100.0},
        {"type": "ReduceLROnPlateau", "monitor": "val_loss", "patience": 0, "factor": 0.5, "min_delta": 100.0},
        {"type": "TensorBoard"},
    ]
    run = trainkit.train(recipe(**{"trainer.epochs": 10, "trainer.callbacks": callbacks}), run_dir=tmp_path / "run")
    assert len(run.history["loss"]) == 2  # stopped early
    assert json.loads((run.run_dir / "run.json").read_text())["stopped_early"] is True
    assert float(run._built.trainer.optimizer.learning_rate) < 1e-3  # reduced from the recipe's 1e-3
    assert list((run.run_dir / "tensorboard" / "keras").rglob("events.out.tfevents.*"))
    assert list((run.run_dir / "tensorboard" / "train").glob("events.out.tfevents.*"))


def test_tensorboard_scalars_match_metrics_log(tmp_path):
    """What TensorBoard shows for train and validation is what metrics.jsonl holds."""
    import tensorflow as tf

    run = trainkit.train(recipe(**{"trainer.epochs": 2, "trainer.log_every_steps": 5}), run_dir=tmp_path / "run")
    events = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    for split in ("train", "validation"):
        logged = {(e["step"], k): v for e in events if e["split"] == split for k, v in e.items() if k in ("loss", "accuracy")}
        assert logged, split
        shown = {}
        for path in (run.run_dir / "tensorboard" / split).glob("events.out.tfevents.*"):
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                for value in event.summary.value:
                    shown[(event.step, value.tag)] = value.simple_value
        assert {key: shown.get(key) for key in logged} == pytest.approx(logged)


def test_model_keras_loads_with_plain_keras_and_matches(tmp_path):
    import keras

    run = trainkit.train(recipe(**{"trainer.epochs": 1}), run_dir=tmp_path / "run")
    loaded = keras.models.load_model(run.run_dir / "model.keras")
    # The trained weights behind data.scale as a Normalization layer (whose statistics are constants)
    assert same(weights(loaded), weights(run.model))
    # model.keras takes the raw pixels; the trained model the pipeline's scaled ones
    raw, _ = next(iter(trainkit.dataset(run.recipe, "test", raw=True)))
    x, y = next(iter(trainkit.dataset(run.recipe, "test")))
    np.testing.assert_allclose(loaded.predict(raw, verbose=0), run.model.predict(x, verbose=0), rtol=1e-6, atol=1e-7)
    # compiled like the trained model: evaluate() on raw features gives trainkit's metrics
    assert loaded.evaluate(raw, y, verbose=0, return_dict=True)["accuracy"] == pytest.approx(
        run.model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"]
    )


def test_evaluate_api_matches_final_metrics(tmp_path):
    run = trainkit.train(recipe(**{"trainer.epochs": 1}), run_dir=tmp_path / "run")
    again = trainkit.evaluate(run.run_dir, split="test")
    assert again == pytest.approx(run.metrics["test"], rel=1e-5)
    assert run.evaluate("test") == pytest.approx(run.metrics["test"], rel=1e-5)
    final = trainkit.evaluate(run.run_dir, split="test", checkpoint="final")
    assert final == pytest.approx(run.metrics["test"], rel=1e-5)


def test_dataset_api_gives_deterministic_splits_that_cover_the_data():
    r = recipe()
    test_a = np.concatenate([y.numpy() for _, y in trainkit.dataset(r, "test")])
    test_b = np.concatenate([y.numpy() for _, y in trainkit.dataset(r, "test")])
    np.testing.assert_array_equal(test_a, test_b)
    sizes = {split: sum(len(y) for _, y in trainkit.dataset(r, split)) for split in ("train", "validation", "test")}
    assert sum(sizes.values()) == 1797  # every digit once
    first_batch = next(iter(trainkit.dataset(r, "train")))[0]
    assert first_batch.shape == (32, 64)
    # Features are standardised with training statistics.
    train_x = np.concatenate([x.numpy() for x, _ in trainkit.dataset(r, "train")])
    assert abs(float(train_x.mean())) < 1e-3


def test_training_order_changes_each_epoch_but_not_between_runs():
    from trainkit.data.pipeline import prepare

    r = recipe()
    data = prepare(r.data, seed=r.seed)
    epochs = [np.concatenate([y.numpy() for _, y in data.dataset("train", training=True, epoch=e)]) for e in (0, 1, 0)]
    assert not np.array_equal(epochs[0], epochs[1])
    np.testing.assert_array_equal(epochs[0], epochs[2])
    np.testing.assert_array_equal(np.sort(epochs[0]), np.sort(epochs[1]))


def test_a_trainer_subclass_can_change_the_loss(tmp_path):
    class DoubledLoss(Trainer):
        def compute_loss(self, x, y, y_pred):
            loss, per_example = super().compute_loss(x, y, y_pred)
            return 2.0 * loss, 2.0 * per_example

    base = trainkit.train(recipe(**{"trainer.epochs": None, "trainer.steps": 1}), run_dir=tmp_path / "a")
    doubled = trainkit.train(
        recipe(**{"trainer.epochs": None, "trainer.steps": 1}), run_dir=tmp_path / "b", trainer_class=DoubledLoss
    )
    assert doubled.history == {} and base.history == {}
    assert doubled.metrics["test"]["loss"] > 1.5 * base.metrics["test"]["loss"]


def test_learning_rate_schedule_with_warmup():
    from trainkit.optim import WarmupSchedule

    cosine = WarmupSchedule(kind="cosine", learning_rate=1.0, warmup_steps=10, decay_steps=90, alpha=0.1)
    assert float(cosine(0)) == pytest.approx(0.0)
    assert float(cosine(5)) == pytest.approx(0.5)
    assert float(cosine(10)) == pytest.approx(1.0)
    assert float(cosine(100)) == pytest.approx(0.1)
    piecewise = WarmupSchedule(kind="piecewise", learning_rate=2.0, boundaries=[10, 20], multipliers=[1.0, 0.1, 0.01])
    assert [float(piecewise(s)) for s in (0, 10, 25)] == pytest.approx([2.0, 0.2, 0.02])
    exponential = WarmupSchedule(kind="exponential", learning_rate=1.0, decay_steps=10, decay_rate=0.5, staircase=True)
    assert [float(exponential(s)) for s in (9, 10, 25)] == pytest.approx([1.0, 0.5, 0.25])


@pytest.mark.parametrize(
    "optimizer",
    [
        {"type": "adamw", "weight_decay": 0.01, "global_clipnorm": 1.0},
        {"type": "sgd", "momentum": 0.9, "nesterov": True, "clipnorm": 1.0},
        {"type": "adam", "use_ema": True, "ema_momentum": 0.9},
        {"type": "adam", "gradient_accumulation_steps": 2},
        {"type": "rmsprop", "schedule": {"type": "exponential", "decay_steps": 5, "decay_rate": 0.9, "warmup_steps": 3}},
    ],
)
def test_keras_optimizer_options_train(tmp_path, optimizer):
    run = trainkit.train(recipe(**{"trainer.epochs": None, "trainer.steps": 6, "optimizer": optimizer}), run_dir=tmp_path / "run")
    assert np.isfinite(run.metrics["test"]["loss"])


def test_profile_steps_write_a_tensorboard_profile(tmp_path):
    run = trainkit.train(
        recipe(**{"trainer.epochs": None, "trainer.steps": 12, "trainer.profile_steps": [4, 8]}), run_dir=tmp_path / "run"
    )
    assert list((run.run_dir / "tensorboard" / "plugins" / "profile").rglob("*.xplane.pb"))


def test_profile_steps_must_be_a_range():
    with pytest.raises(trainkit.ConfigError, match="profile_steps must be"):
        recipe(**{"trainer.profile_steps": [8, 4]})


def test_a_deterministic_run_leaves_the_next_run_free_to_measure_input(tmp_path):
    # Op determinism is process-wide in TensorFlow; a notebook's deterministic run
    # must not make every later run deterministic (and unable to time its input).
    from trainkit.runtime import op_determinism_enabled

    short = {"trainer.epochs": None, "trainer.steps": 5}
    trainkit.train(recipe(**short, **{"runtime.deterministic": True}), run_dir=tmp_path / "a")
    assert not op_determinism_enabled()  # train() leaves the process as it found it
    trainkit.train(recipe(**short), run_dir=tmp_path / "b")
    assert not op_determinism_enabled()
    status = json.loads((tmp_path / "b" / "run.json").read_text())
    assert 0.0 <= status["input_wait_fraction"] <= 1.0
