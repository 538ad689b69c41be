"""Bad input: one line, exit 2, nothing written -- checked before the run directory
is touched, including what only a real training step shows."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import checkout_env, cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trainkit
from trainkit.errors import ConfigError, RunDirError, TrainkitError
from trainkit.loader import load_recipe
from trainkit.models.build import check_fits_in_memory
from trainkit.plan import build, rehearse

SMOKE = {"trainer.epochs": None, "trainer.steps": 2, "trainer.progress": False, "export.formats": []}


def _recipe(**overrides):
    return load_recipe("digits_mlp", configs=["digits_mlp_smoke"], overrides={**SMOKE, **overrides})


def _refused(overrides: dict, expected: str) -> str:
    with pytest.raises(TrainkitError) as caught:
        trainkit.validate(_recipe(**overrides))
    message = str(caught.value)
    assert "\n" not in message and expected in message, message
    return message


# ----------------------------------------------------- what a real step shows


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"optimizer.beta_1": "abc"}, "optimizer.beta_1: Adam takes a number here"),
        ({"optimizer.beta_1": [1, 2]}, "optimizer: one training step failed"),
        ({"optimizer.beta_1": None}, "optimizer: one training step failed"),
        ({"optimizer.weight_decay": "abc"}, "optimizer: one training step failed: Cast string to float"),
        ({"optimizer.global_clipnorm": "abc"}, "optimizer: one training step failed"),
        ({"metrics": ["precision"]}, "metrics: one training step failed"),
        ({"metrics": ["F1Score"]}, "metrics: one training step failed"),
        ({"metrics": ["mse"]}, "metrics: one training step failed"),
    ],
    ids=["beta1-str", "beta1-list", "beta1-null", "weight-decay-str", "clipnorm-str", "precision", "f1", "mse"],
)
def test_optimizer_and_metric_values_are_tried_in_one_real_step(overrides, expected):
    _refused(overrides, expected)


@pytest.mark.parametrize(
    "callback, expected",
    [
        ({"type": "ReduceLROnPlateau", "factor": 2}, "ReduceLROnPlateau does not support a factor >= 1.0"),
        ({"type": "ModelCheckpoint", "filepath": "x"}, "must end in `.keras`"),
        ({"type": "EarlyStopping", "monitor": "val_los"}, "watches 'val_los', which this run does not report; did you mean 'val_loss'?"),
        ({"type": "EarlyStopping", "patience": "abc"}, "trainer.callbacks.0.patience: EarlyStopping takes a number"),
        ({"type": "EarlyStopping", "restore_best_weights": "yes"}, "takes true or false here, got 'yes'"),
        ({"type": "CSVLogger", "filename": "/nonexistent-dir/log.csv"}, "the folder /nonexistent-dir does not exist"),
    ],
    ids=["factor-2", "filepath-x", "monitor", "patience-str", "bool-str", "csv-missing-dir"],
)
def test_callbacks_are_checked_before_training(callback, expected):
    _refused({"trainer.callbacks": [callback]}, expected)


def test_a_callback_path_under_a_regular_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    _refused({"trainer.callbacks": [{"type": "TensorBoard", "log_dir": str(tmp_path / "file" / "tb")}]}, "is a file, not a folder")


def test_the_rehearsal_leaves_the_model_and_optimizer_as_they_were():
    recipe = _recipe()
    built = build(recipe)
    before = [v.numpy().copy() for v in [*built.model.variables, *built.trainer.optimizer.variables]]
    rehearse(built)
    after = [v.numpy() for v in [*built.model.variables, *built.trainer.optimizer.variables]]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert int(built.trainer.optimizer.iterations.numpy()) == 0
    assert built.trainer.steps_run == 0


@pytest.mark.slow  # TensorFlow tries the allocation first (~10 s)
def test_a_model_too_large_for_memory_is_one_line():
    _refused({"model.hidden_units": [10**11]}, "too large for this machine's memory")
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)])
    with pytest.raises(ConfigError, match="40 parameters need about .* more than the 0.0 GiB"):
        check_fits_in_memory(model, field="model", available=100)


# ------------------------------------------------------------ sizes and seeds


@pytest.mark.parametrize(
    "key", ["seed", "data.split_seed", "data.batch_size", "data.eval_batch_size", "data.prefetch",
            "trainer.validation.steps", "data.shuffle_buffer", "trainer.steps"],
)
@pytest.mark.parametrize("value", [10**20, -1, 2**32])
def test_sizes_and_seeds_out_of_range_are_one_line(key, value):
    with pytest.raises(ConfigError) as caught:
        load_recipe("digits_mlp", overrides={key: value})
    message = str(caught.value)
    assert message.startswith(key) and "\n" not in message, message


def test_the_largest_seed_is_accepted():
    assert load_recipe("digits_mlp", overrides={"seed": 2**32 - 1, "data.split_seed": 0}).seed == 2**32 - 1


# ------------------------------------------------------------- generated input

VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.booleans(),
    st.none(),
    st.lists(st.integers(-3, 300), max_size=3),
    st.dictionaries(st.sampled_from(["type", "units", "x"]), st.integers(-2, 5), max_size=2),
)


def _leaves(data, prefix=""):
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1]


FIELDS = sorted(
    set(_leaves(load_recipe("digits_mlp", configs=["digits_mlp_smoke"]).to_dict()))
    | {"optimizer.beta_1", "optimizer.weight_decay", "optimizer.clipnorm", "loss.from_logits",
       "model.dropout", "model.activation", "data.cache", "name"}
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(FIELDS), value=VALUES)
def test_every_field_takes_a_value_or_refuses_it_on_one_line(field, value):
    """Schema level (no TensorFlow): a value is taken, or refused as one ConfigError line."""
    try:
        load_recipe("digits_mlp", configs=["digits_mlp_smoke"], overrides={field: value})
    except ConfigError as err:
        assert "\n" not in str(err) and str(err), repr(err)


BUILT_FIELDS = ["optimizer.beta_1", "optimizer.weight_decay", "optimizer.clipnorm", "optimizer.learning_rate",
                "loss.from_logits", "model.dropout", "model.hidden_units", "model.activation", "data.batch_size"]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(BUILT_FIELDS), value=VALUES)
def test_a_value_the_schema_takes_trains_a_step_or_is_refused_on_one_line(field, value):
    """Through ``validate``, which runs one real training and evaluation step."""
    try:
        recipe = _recipe(**{field: value})
    except ConfigError:
        return
    try:
        trainkit.validate(recipe)
    except TrainkitError as err:
        assert "\n" not in str(err) and str(err), repr(err)


# ------------------------------------------------- from the command line: exit 2


def _nothing_written(result, tmp_path, before) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    return errors[0]


def test_a_bad_callback_is_refused_before_config_yaml_and_run_json_exist(tmp_path):
    before = sorted(p.name for p in tmp_path.iterdir())
    result = cli("train", "digits_mlp", "-c", "digits_mlp_smoke", "--run-dir", "run",
                 "trainer.callbacks=[{type: ReduceLROnPlateau, factor: 2}]", cwd=tmp_path)
    line = _nothing_written(result, tmp_path, before)
    assert "trainer.callbacks.0" in line and not (tmp_path / "run").exists()


@pytest.mark.parametrize("where", ["under-a-file", "long-name"])
def test_an_unusable_run_dir_is_refused_before_anything_is_built(tmp_path, where):
    (tmp_path / "file").write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    run_dir = str(tmp_path / "file" / "run") if where == "under-a-file" else str(tmp_path / ("r" * 300))
    line = _nothing_written(cli("train", "digits_mlp", "--run-dir", run_dir, cwd=tmp_path), tmp_path, before)
    assert line.startswith(f"error: --run-dir {run_dir}")
    assert ("is a file" in line) if where == "under-a-file" else ("at most 255" in line)


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare for a read-only mount")
def test_a_run_dir_on_a_read_only_file_system_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    env = checkout_env()
    script = (f"mount -t tmpfs -o ro,size=64k none {ro} || exit 77; "
              f"exec {sys.executable} -m trainkit.cli train digits_mlp --run-dir {ro}/run")
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120, env=env)
    if result.returncode == 77:
        pytest.skip("mounting a tmpfs in a namespace is not allowed here")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"--run-dir {ro}/run: {ro} is a read-only file system" in result.stderr


def test_run_dir_checks_in_process(tmp_path):
    from trainkit.rundir import RunDir

    (tmp_path / "file").write_text("x")
    for path, expected in [
        (tmp_path / "file", "it is a file"),
        (tmp_path / "file" / "x" / "y", "is a file, so no folder"),
        (tmp_path, "it is the working directory or holds it"),  # the tests run in tmp_path
        (tmp_path / "..", "it is the working directory or holds it"),
    ]:
        with pytest.raises(RunDirError, match=expected):
            RunDir(path).check_place()
