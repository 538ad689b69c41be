"""The CLI as a user runs it: its exit code, its output, its files.

What a command does and says is checked through ``cli.main`` in this process
(:func:`conftest.cli`); what needs a process of its own (which modules a fresh
interpreter imports, the installed script as ``make train`` runs it) runs one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, cli

from trainkit.recipe import Recipe


def test_help_and_ls_do_not_import_tensorflow():
    code = (
        "import sys, contextlib, io\n"
        "from trainkit.cli import main\n"
        "for argv in (['ls'], ['show', 'digits_cnn']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        main(argv)\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False False"


def test_help_lists_the_commands():
    result = cli("--help")
    assert result.returncode == 0
    for command in ("train", "launch", "eval", "show", "validate", "ls"):
        assert command in result.stdout


def test_ls_lists_recipes_and_configs_with_descriptions():
    result = cli("ls")
    assert result.returncode == 0
    assert "digits_cnn " in result.stdout and "A small CNN" in result.stdout
    assert "digits_cnn_smoke" in result.stdout
    assert "linear_regression" in result.stdout


def test_show_prints_yaml_that_loads_back_to_the_same_recipe(tmp_path):
    result = cli("show", "digits_mlp", "-c", "digits_mlp_smoke", "trainer.epochs=4")
    assert result.returncode == 0, result.stderr
    header, body = result.stdout.split("\n", 1)
    recipe = Recipe.from_yaml(body)
    assert recipe.trainer.epochs == 4
    assert header == f"# digits_mlp  (hash {recipe.hash})"


def test_show_lists_the_model_builders_own_defaults_as_comments_outside_the_hash():
    result = cli("show", "digits_cnn", "model.pool=false")
    assert result.returncode == 0, result.stderr
    header, body = result.stdout.split("\n", 1)
    comments = body[body.index("# model builder 'cnn' defaults"):].splitlines()[1:]
    assert comments == ["#   kernel_size: 3", "#   batch_norm: false", "#   activation: relu", "#   output_activation: auto"]
    recipe = Recipe.from_yaml(body)  # the comments are not part of the recipe ...
    assert recipe.model.kwargs["pool"] is False and "kernel_size" not in recipe.model.kwargs
    assert header == f"# digits_cnn  (hash {recipe.hash})"  # ... nor of its hash


BAD_INPUT = [
    (["trainer.epoch=3"], "did you mean 'epochs'"),
    (["trainer.epochs=abc"], "trainer.epochs"),
    (["data.batch_size=0"], "data.batch_size"),
    (["optimizer.learning_rate=-1"], "optimizer.learning_rate"),
    (["optimizer.type=adamm"], "did you mean 'Adam'"),
    (["loss=sparse_categorical_crossentropie"], "did you mean 'SparseCategoricalCrossentropy'"),
    (["metrics=[precison]"], "did you mean 'Precision'"),
    (["optimizer.clipnrom=1.0"], "did you mean 'clipnorm'"),
]


@pytest.mark.parametrize(("overrides", "expected"), BAD_INPUT)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, overrides, expected):
    result = cli("train", "digits_mlp", "--run-dir", "run", *overrides, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "runs").exists()


BAD_MODELS = [
    (["model.type=sequential", "model.layers=[{type: Dnse, units: 10}]"], "model.layers.0.type: unknown layer 'Dnse'; did you mean 'Dense'?"),
    (["model.type=sequential", "model.layers=[{type: Dense, unit: 10}]"], "model.layers.0: Dense has no argument 'unit'; did you mean 'units'?"),
    # labels outside the model's classes
    (["model.type=sequential", "model.layers=[{type: Dense, units: 5, activation: softmax}]"], "model: labels go up to 9 (10 classes) but the model outputs 5"),
    # inputs whose shape does not fit the model
    (["model.type=sequential", "model.layers=[{type: Conv2D, filters: 4, kernel_size: 3}]"], "model.layers.0: Conv2D does not fit its input"),
]


@pytest.mark.parametrize(("overrides", "expected"), BAD_MODELS)
@pytest.mark.parametrize("command", ["train", "validate"])
def test_model_mistakes_are_found_before_training(tmp_path, command, overrides, expected):
    extra = ["--run-dir", "run"] if command == "train" else []
    result = cli(command, "digits_mlp", *extra, *overrides, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"error: {expected}" in result.stderr
    assert not (tmp_path / "run").exists()


def test_bad_files(tmp_path):
    (tmp_path / "syntax.yaml").write_text("base: digits_mlp\ntrainer: {epochs: [1\n")
    (tmp_path / "tag.yaml").write_text("base: digits_mlp\nseed: !!python/object/apply:os.getcwd []\n")
    cases = {
        "nowhere_recipe": "no recipe or config named 'nowhere_recipe'",
        "missing.py": "recipe file not found: missing.py",
        "syntax.yaml": "syntax.yaml, line",
        "tag.yaml": "tags that build Python objects are refused",
    }
    for name, expected in cases.items():
        result = cli("train", name, "--run-dir", "run", cwd=tmp_path)
        assert result.returncode == 2, name
        assert expected in result.stderr, (name, result.stderr)
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_validate_reports_shapes_without_training(tmp_path):
    result = cli("validate", "digits_cnn", "-c", "digits_cnn_smoke", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "features: [8, 8, 1]" in result.stdout
    assert "ok:" in result.stdout
    assert not (tmp_path / "runs").exists()


def test_train_then_eval_then_refuse_another_recipe(tmp_path):
    train = cli("train", "digits_mlp", "-c", "digits_mlp_smoke", "--run-dir", "run", cwd=tmp_path)
    assert train.returncode == 0, train.stderr
    run = tmp_path / "run"
    eval_json = json.loads((run / "eval.json").read_text())
    assert 0.0 <= eval_json["test"]["accuracy"] <= 1.0

    evaluated = cli("eval", "run", "--split", "test", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["test"] == pytest.approx(eval_json["test"], rel=1e-5)

    bad_checkpoint = cli("eval", "run", "--checkpoint", "run/checkpoints/ckpt-999", cwd=tmp_path)
    assert bad_checkpoint.returncode == 2 and "no checkpoint at" in bad_checkpoint.stderr

    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    other = cli("train", "digits_mlp", "-c", "digits_mlp_smoke", "--run-dir", "run", "optimizer.learning_rate=0.5", cwd=tmp_path)
    assert other.returncode == 2
    assert "holds a run of a different recipe (differs in: optimizer.learning_rate)" in other.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before

    restarted = cli("train", "digits_mlp", "-c", "digits_mlp_smoke", "--run-dir", "run", "optimizer.learning_rate=0.5", "--restart", cwd=tmp_path)
    assert restarted.returncode == 0, restarted.stderr
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and (aside[0] / "config.yaml").read_bytes() == before["config.yaml"]
    assert Recipe.from_yaml((run / "config.yaml").read_text()).optimizer.learning_rate == 0.5


def test_a_short_training_ends_with_what_to_do_next_named_as_it_was_run_and_no_idle_hint(tmp_path):
    # As `make train` runs it: .venv/bin/trainkit, with trainkit not on the PATH.
    script = Path(sys.executable).parent / "trainkit"
    if not script.is_file():
        pytest.skip("no trainkit script beside this Python")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "HOME": str(tmp_path)}
    run = tmp_path / "run"
    done = subprocess.run(
        [str(script), "train", "digits_mlp", "-c", "digits_mlp_smoke", "--run-dir", str(run), "trainer.progress=true",
         "trainer.epochs=null", "trainer.steps=3"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    after = lines[lines.index("next:") + 1 :]
    assert [line.split("#")[0].strip() for line in after] == [
        f"{script} eval {run} --split test",
        f"{script} plot {run} -o curves.png",
        f"{script} export {run}",
        f"{script} predict {run} INPUT",
    ]
    # The input wait of a short step is the handover of a ready batch: nothing to change, nothing said.
    assert "input wait" not in done.stdout and "Nothing needs changing" not in done.stdout
