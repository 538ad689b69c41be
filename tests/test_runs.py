"""Runs as objects: load_run, complete histories across resumes, plots, compare, `trainkit plot`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, cli

import trainkit

QUIET = {"trainer.progress": False}
TINY = {**QUIET, "model.hidden_units": [16], "trainer.epochs": 2, "trainer.evaluate": ["test"]}


def recipe(**overrides):
    return trainkit.load_recipe("digits_mlp", overrides={**TINY, **overrides})


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    a = trainkit.train(recipe(), run_dir=base / "a")
    b = trainkit.train(recipe(**{"optimizer.learning_rate": 0.01}), run_dir=base / "b")
    return a, b


def test_one_identity_in_the_header_run_json_export_json_show_and_run(tmp_path):
    import json

    given = recipe(**{"export.formats": ["keras"]})
    before = given.hash
    result = cli("train", "digits_mlp", "model.hidden_units=[16]", "trainer.epochs=1", "export.formats=[keras]",
                 "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shown = cli("show", "digits_mlp", "model.hidden_units=[16]", "trainer.epochs=1", "export.formats=[keras]",
                cwd=tmp_path)
    identity = json.loads((tmp_path / "run" / "run.json").read_text())["recipe_hash"]
    assert f"({identity}) into run" in result.stdout
    assert f"(hash {identity})" in shown.stdout
    assert json.loads((tmp_path / "run" / "inference.json").read_text())["recipe_hash"] == identity
    assert trainkit.load_run(tmp_path / "run").hash == identity
    trainkit.validate(given)  # building a recipe leaves its hash alone
    assert given.hash == before


def test_history_is_complete_after_resuming_and_after_training_a_finished_run(tmp_path):
    first = trainkit.train(recipe(), run_dir=tmp_path / "run")
    assert len(first.history["loss"]) == 2
    longer = trainkit.train(recipe(**{"trainer.epochs": 3}), run_dir=tmp_path / "run")  # resumes at epoch 3
    assert longer.history["loss"][:2] == first.history["loss"] and len(longer.history["loss"]) == 3
    again = trainkit.train(recipe(**{"trainer.epochs": 3}), run_dir=tmp_path / "run")  # finished: nothing to train
    assert again.history == longer.history
    assert set(again.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}


def test_load_run_reads_everything_and_loads_the_model_lazily(two_runs):
    trained, _ = two_runs
    run = trainkit.load_run(trained.run_dir)
    assert run._model is None  # nothing built or loaded yet
    assert run.status == "completed" and run.recipe.hash == trained.recipe.hash
    assert run.history == trained.history
    assert run.metrics["test"]["accuracy"] == pytest.approx(trained.metrics["test"]["accuracy"])
    x = np.random.default_rng(0).normal(size=(3, 64)).astype("float32")
    np.testing.assert_allclose(run.model.predict(x, verbose=0), trained.model.predict(x, verbose=0), atol=1e-6)
    assert run.evaluate("test")["accuracy"] == pytest.approx(trained.metrics["test"]["accuracy"], abs=1e-6)


def test_load_run_of_a_directory_that_is_no_run_names_it(tmp_path):
    with pytest.raises(trainkit.RunDirError, match="nowhere does not exist"):
        trainkit.load_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(trainkit.RunDirError, match="empty is not a trainkit run directory"):
        trainkit.load_run(tmp_path / "empty")


def test_plot_draws_train_against_validation_and_the_learning_rate(two_runs):
    figure = two_runs[0].plot()
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["loss", "accuracy", "learning_rate"]
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert labels == ["train", "validation"]
    np.testing.assert_allclose(figure.axes[0].get_lines()[1].get_ydata(), two_runs[0].history["val_loss"])


def test_compare_lists_final_metrics_and_the_recipe_fields_that_differ(two_runs):
    table = trainkit.compare([r.run_dir for r in two_runs])
    assert len(table) == 2
    assert "optimizer.learning_rate" in table.columns and "model.hidden_units" not in table.columns
    assert [row["optimizer.learning_rate"] for row in table.rows] == [0.001, 0.01]
    assert table[1]["test accuracy"] == pytest.approx(two_runs[1].metrics["test"]["accuracy"])
    assert "optimizer.learning_rate" in str(table) and "<table>" in table._repr_html_()


def test_cli_plot_writes_an_image_and_refuses_a_non_run(two_runs, tmp_path):
    out = tmp_path / "curves.png"
    done = cli("plot", *(str(r.run_dir) for r in two_runs), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = cli("plot", str(tmp_path / "missing"), "-o", str(tmp_path / "x.png"))
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "missing" in bad.stderr
    assert not (tmp_path / "x.png").exists()


def test_without_matplotlib_plotting_names_the_extra(two_runs):
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"  # as if it were not installed
        "from trainkit.cli import main\n"
        f"sys.exit(main(['plot', {str(two_runs[0].run_dir)!r}, '-o', 'c.png']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: plotting needs matplotlib, which is not installed; install the extra: pip install trainkit[plot]"
    )


def test_the_recipe_file_hint_is_given_only_for_a_component_the_run_directory_cannot_name(tmp_path):
    import json

    from trainkit.errors import ConfigError
    from trainkit.rundir import RunDir, with_recipe_file_hint

    (tmp_path / "run.json").write_text(json.dumps({"recipe_source": "recipes/mine.py"}))
    directory = RunDir(tmp_path)
    unknown = with_recipe_file_hint(directory, ConfigError("model.type: unknown model 'mine'; did you mean 'mlp'"))
    assert "--recipe recipes/mine.py" in str(unknown)
    other = ConfigError("runtime.strategy: multi_worker_mirrored needs a cluster, but TF_CONFIG is not set")
    assert with_recipe_file_hint(directory, other) is other
