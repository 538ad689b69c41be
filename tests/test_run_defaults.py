"""Defaults a Keras user relies on: the best checkpoint by val_loss, callback files
inside the run directory, a config's own run directory, and a resume that says
when a new budget moves the learning-rate schedule."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

import trainkit
from trainkit import ConfigError

FILE_CALLBACKS = [
    {"type": "CSVLogger", "filename": "log.csv"},
    {"type": "ModelCheckpoint", "filepath": "keras_ckpt/best.keras", "save_best_only": True},
    {"type": "TensorBoard", "log_dir": "tb"},
]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> tuple[Path, trainkit.api.Run]:
    """digits_mlp -c digits_mlp_smoke with file-writing callbacks, in its default run directory."""
    cwd = tmp_path_factory.mktemp("cwd")
    here = os.getcwd()
    os.chdir(cwd)
    try:
        recipe = trainkit.load_recipe(
            "digits_mlp", configs=["digits_mlp_smoke"], overrides={"trainer.callbacks": FILE_CALLBACKS}
        )
        run = trainkit.train(recipe)
    finally:
        os.chdir(here)
    return cwd, run


def test_a_configs_run_gets_its_own_default_directory(smoke_run, tmp_path):
    cwd, run = smoke_run
    assert run.run_dir == Path("runs/digits_mlp_smoke")
    assert (cwd / "runs" / "digits_mlp_smoke" / "config.yaml").is_file()
    assert not (cwd / "runs" / "digits_mlp").exists()
    assert trainkit.load_recipe("digits_mlp", configs=["digits_mlp_wide"]).run_name == "digits_mlp_wide"
    assert trainkit.load_recipe("digits_mlp_wide").run_name == "digits_mlp_wide"
    named = trainkit.load_recipe("digits_mlp", configs=["digits_mlp_wide"], overrides={"name": "wide2"})
    assert named.run_name == "wide2"


def test_best_checkpoint_is_kept_by_val_loss_by_default_so_eval_best_works(smoke_run):
    cwd, run = smoke_run
    best = cwd / run.run_dir / "checkpoints" / "best"
    assert list(best.glob("ckpt-*.index")), "no best checkpoint kept"
    metrics = trainkit.evaluate(cwd / run.run_dir, split="test", checkpoint="best")
    assert set(metrics) == {"loss", "accuracy"}
    assert metrics["accuracy"] > 0.5


def test_recipe_callbacks_write_inside_the_run_directory(smoke_run):
    cwd, run = smoke_run
    directory = cwd / run.run_dir
    with open(directory / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert {"loss", "val_loss"} <= set(rows[0])
    assert (directory / "keras_ckpt" / "best.keras").is_file()
    assert list((directory / "tb").rglob("events.out.tfevents.*"))
    assert sorted(p.name for p in cwd.iterdir()) == ["runs"]


def test_a_callback_path_that_leaves_the_run_directory_is_refused(tmp_path):
    recipe = trainkit.load_recipe(
        "digits_mlp",
        configs=["digits_mlp_smoke"],
        overrides={"trainer.callbacks": [{"type": "CSVLogger", "filename": "../log.csv"}]},
    )
    with pytest.raises(ConfigError, match=r"^trainer\.callbacks\.0\.filename: '\.\./log\.csv' leaves the run directory"):
        trainkit.train(recipe, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists() and not (tmp_path / "log.csv").exists()


def test_monitor_auto_is_val_loss_with_a_validation_split_and_none_without():
    from trainkit.plan import resolve_monitor

    recipe = trainkit.load_recipe("digits_mlp")
    assert recipe.trainer.checkpoint.monitor == "auto"
    assert resolve_monitor(recipe, has_validation=True).trainer.checkpoint.monitor == "val_loss"
    assert resolve_monitor(recipe, has_validation=False).trainer.checkpoint.monitor is None
    off = trainkit.load_recipe("digits_mlp", overrides={"trainer.checkpoint.monitor": None})
    assert resolve_monitor(off, has_validation=True).trainer.checkpoint.monitor is None


def test_resuming_with_a_longer_budget_says_the_cosine_schedule_moved(tmp_path, capsys):
    # (progress on: with it off, trainkit says nothing but errors, resume notices included)
    overrides = {"trainer.epochs": 1, "trainer.progress": True, "model.hidden_units": [16], "optimizer.schedule.warmup_steps": 0}
    first = trainkit.load_recipe("digits_mlp", configs=["digits_mlp_wide"], overrides=overrides)
    trainkit.train(first, run_dir=tmp_path / "run")
    capsys.readouterr()
    longer = trainkit.load_recipe("digits_mlp", configs=["digits_mlp_wide"], overrides={**overrides, "trainer.epochs": 2})
    run = trainkit.train(longer, run_dir=tmp_path / "run")
    out = capsys.readouterr().out
    assert "resuming with changed settings: trainer.epochs" in out
    # The cosine decays over the whole budget: one epoch ended at rate 0; over two
    # epochs the same step is half way down from 2e-3.
    steps = len(run.history["loss"]) and run._built.steps_per_epoch
    expected = (
        f"the learning-rate schedule follows the budget ({steps} -> {2 * steps} steps): "
        f"at step {steps} the rate is 0.001 (it was 0)"
    )
    assert expected in out.splitlines(), out
