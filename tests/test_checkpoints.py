"""What a checkpoint holds, damaged checkpoints on resume, and evaluating kept ones."""

from __future__ import annotations

import json
import math
import os

import pytest
from _checkpoint_helpers import (
    STEPS,
    assert_same_weights,
    copy_run,
    kept_steps,
    messages,
    snapshot,
    train_here,
)
from conftest import cli


def test_a_finished_run_keeps_the_last_k_the_best_and_the_final_checkpoint(reference):
    ckpts = reference / "checkpoints"
    assert kept_steps(ckpts) == [50, 60, STEPS]  # keep: 3, every 10 steps, and the end
    assert kept_steps(ckpts / "final") == [STEPS]
    epochs = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    epochs = [e for e in epochs if e["split"] == "epoch"]
    best = max(epochs, key=lambda e: e["val_accuracy"])  # the first of equals wins: improvement is strict
    assert kept_steps(ckpts / "best") == [best["step"]]
    status = json.loads((reference / "run.json").read_text())
    assert status["checkpoints_saved"] >= 8 and status["checkpoint_seconds"] > 0
    # final/ is the last checkpoint itself, hard-linked rather than written twice.
    for last in ckpts.glob(f"ckpt-{STEPS}.*"):
        assert (ckpts / "final" / last.name).samefile(last)


def _truncate(path, fraction=0.5):
    os.truncate(path, int(path.stat().st_size * fraction))


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated-index": lambda c: _truncate(c / "ckpt-69.index"),
    "deleted-data": lambda c: (c / "ckpt-69.data-00000-of-00001").unlink(),
    "deleted-index": lambda c: (c / "ckpt-69.index").unlink(),
    "truncated-data": lambda c: _truncate(c / "ckpt-69.data-00000-of-00001", 0.9),
    "flipped-byte-in-data": lambda c: _flip_a_byte(c / "ckpt-69.data-00000-of-00001"),
}
SLOW_DAMAGE = ("deleted-index", "truncated-data", "flipped-byte-in-data")


@pytest.mark.parametrize(
    "damage", [pytest.param(d, marks=pytest.mark.slow) if d in SLOW_DAMAGE else d for d in DAMAGE]
)
def test_a_damaged_latest_checkpoint_is_skipped_with_a_warning_and_the_run_ends_identical(tmp_path, reference, damage):
    run = copy_run(reference, tmp_path / "run")
    DAMAGE[damage](run / "checkpoints")
    result = train_here(run)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in messages(result.stderr) if line.startswith("warning:")]
    assert len(warnings) == 1 and "ckpt-69" in warnings[0] and "cannot be read back" in warnings[0], result.stderr
    assert "resumed from" in result.stdout and "ckpt-60 at step 60 " in result.stdout
    assert_same_weights(run, reference)  # steps 61..69 trained again, to the same weights
    assert kept_steps(run / "checkpoints")[-1] == STEPS
    if damage != "deleted-index":  # (nothing of that one is left but its data file)
        assert (run / "checkpoints" / "corrupt").is_dir()


def test_a_damaged_checkpoint_list_does_not_hide_the_checkpoints(tmp_path, reference):
    run = copy_run(reference, tmp_path / "run")
    (run / "checkpoints" / "checkpoint").write_text("model_checkpoint_path: \x00garbage{{\n")
    result = train_here(run)
    assert result.returncode == 0, result.stderr
    assert f"ckpt-{STEPS} at step {STEPS} " in result.stdout
    assert "already trained" in result.stdout


def test_when_no_checkpoint_reads_back_the_run_is_refused_and_they_are_left_alone(tmp_path, reference):
    run = copy_run(reference, tmp_path / "run")
    for index in (run / "checkpoints").glob("ckpt-*.index"):
        _truncate(index)
    before = snapshot(run / "checkpoints")
    result = train_here(run)
    assert result.returncode == 2
    lines = messages(result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: ") and "none of its checkpoints can be read back" in lines[0]
    assert "--restart" in lines[0]
    assert snapshot(run / "checkpoints") == before


# -- evaluating kept checkpoints ---------------------------------------------------


def test_eval_picks_last_best_final_a_step_or_a_path(tmp_path, reference):
    import trainkit

    run = copy_run(reference, tmp_path / "run")
    best_step = kept_steps(run / "checkpoints" / "best")[0]
    evaluate = lambda which: trainkit.evaluate(run, split="validation", checkpoint=which)  # noqa: E731
    final = evaluate("final")
    assert evaluate("last") == final
    assert evaluate(str(STEPS)) == final
    assert evaluate(str(run / "checkpoints" / "ckpt-50")) == evaluate("50")
    assert evaluate("50") != final
    best = evaluate("best")
    assert evaluate(str(best_step)) == best  # found in best/ even when rotated out of the last K
    epochs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    best_logged = max(e["val_accuracy"] for e in epochs if e["split"] == "epoch")
    assert best["accuracy"] == pytest.approx(best_logged, abs=1e-6)


def test_eval_of_a_checkpoint_that_is_not_kept_is_one_line_naming_the_kept_steps(tmp_path, reference):
    run = copy_run(reference, tmp_path / "run")
    result = cli("eval", str(run), "--checkpoint", "7", cwd=tmp_path)
    assert result.returncode == 2
    lines = messages(result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: --checkpoint: no checkpoint of step 7")
    assert "50, 60, 69" in lines[0]


def test_eval_best_without_a_monitor_says_how_to_get_one(tmp_path, reference):
    import shutil

    import trainkit
    from trainkit import RunDirError

    run = copy_run(reference, tmp_path / "run")
    shutil.rmtree(run / "checkpoints" / "best")
    with pytest.raises(RunDirError, match=r"trainer\.checkpoint\.monitor"):
        trainkit.evaluate(run, checkpoint="best")


# -- what is saved besides the model ------------------------------------------------


def test_callback_state_and_the_best_value_survive_a_save_and_a_restore(tmp_path):
    import keras

    from trainkit.training.checkpoint import Checkpointer, _read_best

    def make():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        optimizer = keras.optimizers.Adam()
        optimizer.build(model.trainable_variables)
        stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=5)
        plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss")
        ckpt = Checkpointer(
            tmp_path / "checkpoints", model=model, optimizer=optimizer, keep=2,
            callbacks=[keras.callbacks.History(), stopper, plateau], monitor="val_loss", mode="auto",
        )
        return ckpt, stopper, plateau

    ckpt, stopper, plateau = make()
    for callback in (stopper, plateau):
        callback.set_model(ckpt._core.model)
        callback.on_train_begin()
    stopper.wait, stopper.best, stopper.best_epoch = 3, 0.25, 4
    plateau.wait, plateau.best, plateau.cooldown_counter = 2, 0.5, 1
    assert ckpt.is_better(0.7)
    best_path = ckpt.save_best(0.7, step=5, epoch=1, step_in_epoch=0)
    assert _read_best(best_path) == ("val_loss", 0.7)
    assert ckpt.is_better(0.6) and not ckpt.is_better(0.8) and not ckpt.is_better(math.nan)
    ckpt.nan_rollbacks = 2
    ckpt.save(step=12, epoch=2, step_in_epoch=2)

    again, stopper2, plateau2 = make()
    assert again.restore_latest().endswith("ckpt-12")
    assert again.counters() == (12, 2, 2)
    for callback in (stopper2, plateau2):
        callback.set_model(again._core.model)
        callback.on_train_begin()  # resets them, as at the start of every fit
    again.apply_callback_state()
    assert (stopper2.wait, stopper2.best, stopper2.best_epoch, stopper2.stopped_epoch) == (3, 0.25, 4, 0)
    assert isinstance(stopper2.wait, int)
    assert (plateau2.wait, plateau2.best, plateau2.cooldown_counter) == (2, 0.5, 1)
    assert again.best == 0.7 and again.mode == "min" and again.nan_rollbacks == 2


def test_auto_mode_maximises_accuracy_like_metrics_and_minimises_the_rest():
    from trainkit.training.checkpoint import better_mode

    assert better_mode("val_accuracy", "auto") == "max"
    assert better_mode("auc", "auto") == "max"
    assert better_mode("val_loss", "auto") == "min"
    assert better_mode("val_mae", "auto") == "min"
    assert better_mode("val_loss", "max") == "max"


def test_an_unknown_monitor_is_one_line_naming_the_field_before_anything_is_written(tmp_path):
    result = cli(
        "train", "digits_cnn", "-c", "digits_cnn_smoke", "--run-dir", "run",
        "trainer.checkpoint.monitor=val_acc", cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = messages(result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: trainer.checkpoint.monitor: 'val_acc'")
    assert "val_accuracy" in lines[0]
    assert not (tmp_path / "run").exists()
