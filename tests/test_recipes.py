"""Every reference recipe end to end, and the accuracy each docstring promises.

The smoke variants run through the CLI (a couple of epochs). The full recipes
are marked slow: they train to the numbers in their docstrings.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import cli

import trainkit

RECIPES = ["digits_cnn", "digits_mlp", "binary_classifier", "linear_regression", "sunspots_lstm"]


@pytest.mark.parametrize("name", RECIPES)
def test_smoke_variant_trains_through_the_cli(tmp_path, name):
    result = cli("train", name, "-c", f"{name}_smoke", "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert np.isfinite(metrics["test"]["loss"])


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_has_a_yaml_variant_that_resolves(name):
    from trainkit.loader import available

    configs = [n for n, p in available().items() if p.suffix == ".yaml" and n.startswith(name)]
    assert f"{name}_smoke" in configs
    for config in configs:
        assert trainkit.load_recipe(config).name == name


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "metric", "floor"),
    [("digits_cnn", "accuracy", 0.98), ("digits_mlp", "accuracy", 0.96), ("binary_classifier", "accuracy", 0.95)],
)
def test_reference_recipe_reaches_its_accuracy(tmp_path, name, metric, floor):
    run = trainkit.train(trainkit.load_recipe(name, overrides={"trainer.progress": False}), run_dir=tmp_path / "run")
    assert run.metrics["test"][metric] >= floor


@pytest.mark.slow
def test_linear_regression_matches_closed_form_least_squares(tmp_path):
    recipe = trainkit.load_recipe("linear_regression", overrides={"trainer.progress": False})

    def arrays(split):
        batches = list(trainkit.dataset(recipe, split))
        return np.concatenate([x.numpy() for x, _ in batches]), np.concatenate([y.numpy() for _, y in batches])

    x, y = arrays("train")
    x_test, y_test = arrays("test")
    coefficients, *_ = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y, rcond=None)
    closed_form_mse = float(np.mean((np.c_[x_test, np.ones(len(x_test))] @ coefficients - y_test) ** 2))

    run = trainkit.train(recipe, run_dir=tmp_path / "run")
    assert run.metrics["test"]["loss"] == pytest.approx(closed_form_mse, rel=0.02)


@pytest.mark.slow
def test_sunspots_lstm_beats_persistence_on_its_test_years(tmp_path):
    """Next year's sunspot number: lower test RMSE than "next year = this year"."""
    recipe = trainkit.load_recipe("sunspots_lstm", overrides={"trainer.progress": False})
    run = trainkit.train(recipe, run_dir=tmp_path / "run")
    pairs = [(x.numpy(), y.numpy()) for x, y in trainkit.dataset(recipe, "test", raw=True)]
    windows, targets = np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])
    persistence = float(np.sqrt(np.mean((windows[:, -1, 0] - targets[:, 0]) ** 2)))
    assert run.metrics["test"]["rmse"] < 0.8 * persistence
