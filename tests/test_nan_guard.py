"""A NaN in the training loss: stop without saving it, or roll back and skip it.

The recipe here trains a small MLP on blobs whose training split holds one
row of NaNs; every epoch (shuffled anew) meets it once.
"""

from __future__ import annotations

import json
import re
import textwrap

import numpy as np
import pytest
from _checkpoint_helpers import kept_steps, messages, train_here, weights

RECIPE = '''
"""Blobs with one poisoned training row (for the NaN guard's tests)."""
import numpy as np

import trainkit


@trainkit.register_dataset("poisoned_blobs")
def poisoned_blobs():
    rng = np.random.default_rng(0)

    def make(n):
        x = rng.normal(size=(n, 4)).astype("float32")
        return x, (x[:, 0] + x[:, 1] > 0).astype("int32")

    (x, y), validation = make(320), make(64)
    x[100] = np.nan
    return {"train": (x, y), "validation": validation}


def recipe():
    return {
        "name": "poisoned",
        "data": {"source": {"type": "arrays", "name": "poisoned_blobs"}, "batch_size": 32},
        "model": {"type": "mlp", "hidden_units": [8]},
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "optimizer": {"type": "adam", "learning_rate": 0.01},
        "trainer": {
            "epochs": 3,
            "steps_per_execution": 1,
            "checkpoint": {"every_steps": 2},
            "evaluate": ["validation"],
            "progress": False,
        },
    }
'''
EPOCH = 10  # steps per epoch: 320 / 32


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "poisoned.py"
    path.write_text(textwrap.dedent(RECIPE))
    return [str(path)]


def _finite_checkpoint(path) -> bool:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(path))
    values = [reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k.startswith(("model/", "optimizer/"))]
    floats = [v for v in values if isinstance(v, np.ndarray) and v.dtype.kind == "f"]
    return bool(floats) and all(np.isfinite(v).all() for v in floats)


def test_weights_that_diverge_under_a_finite_loss_are_named():
    from types import SimpleNamespace

    from trainkit.training.controller import _what_diverged

    assert _what_diverged({"loss": 0.5}, SimpleNamespace(weights_finite=False)) == "model's weights"
    assert _what_diverged({"loss": float("nan")}, SimpleNamespace(weights_finite=False)) == "training loss"
    assert _what_diverged({"loss": 0.5}, SimpleNamespace(weights_finite=True)) is None


@pytest.mark.parametrize(
    ("activation", "what"),
    [
        # tanh carries the NaN row into the loss.
        ("tanh", "training loss"),
        # A ReLU fused into the matmul before it maps NaN to 0: the loss stays
        # finite while the NaN gradients poison every weight. Whether the kernel is
        # fused is TensorFlow's choice (seen unfused under a loaded machine), so the
        # loss may be the first to say it; the weights' own check is tested below.
        ("relu", "(training loss|model's weights)"),
    ],
)
def test_nan_stops_with_exit_3_naming_the_step_and_saves_nothing_after_it(tmp_path, recipe, activation, what):
    run = tmp_path / "run"
    result = train_here(run, f"model.activation={activation}", base=recipe)
    assert result.returncode == 3
    lines = messages(result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert re.match(f"error: the {what} became NaN or infinite by step ", lines[0]), lines[0]
    step = int(lines[0].split(" by step ")[1].split(";")[0])
    assert 0 < step <= EPOCH
    assert json.loads((run / "run.json").read_text())["status"] == "diverged"
    steps = kept_steps(run / "checkpoints")
    assert steps and max(steps) < step  # the diverged state was not saved
    assert f"the last good checkpoint is {run / 'checkpoints' / f'ckpt-{max(steps)}'}" in lines[0]
    assert all(_finite_checkpoint(run / "checkpoints" / f"ckpt-{s}") for s in steps)
    assert not (run / "model.keras").exists()


def test_nan_rollback_skips_the_offending_batches_and_finishes(tmp_path, recipe):
    run = tmp_path / "run"
    result = train_here(run, "trainer.nan_policy=rollback", base=recipe)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in messages(result.stderr) if line.startswith("warning:")]
    assert len(warnings) == 3, result.stderr  # one poisoned batch per epoch
    # checkpoints every 2 steps: the batches since the last one, the poisoned one among them
    assert all("rolled back to" in w and re.search(r"skipped the [12] batch\(es\)", w) for w in warnings), warnings
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "completed" and status["nan_rollbacks"] == 3 and status["step"] == 3 * EPOCH
    assert all(np.isfinite(w).all() for w in weights(run).values())
    evaluated = json.loads((run / "eval.json").read_text())["validation"]
    assert np.isfinite(evaluated["loss"]) and evaluated["accuracy"] > 0.8
    events = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len([e for e in events if e["split"] == "nan_rollback"]) == 3


def test_nan_rollback_gives_up_after_the_retry_limit(tmp_path, recipe):
    run = tmp_path / "run"
    result = train_here(run, "trainer.nan_policy=rollback", "trainer.nan_max_retries=1", base=recipe)
    assert result.returncode == 3
    lines = messages(result.stderr)
    assert re.match(r"error: the (training loss|model's weights) became NaN or infinite by step ", lines[-1]), lines[-1]
    assert "after 1 rollback(s) (trainer.nan_max_retries)" in lines[-1]
    assert json.loads((run / "run.json").read_text())["status"] == "diverged"
