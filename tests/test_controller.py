"""The training controller: chunking by events, Keras's callback protocol, EMA, stops."""

from __future__ import annotations

import math
import signal
import time

import keras
import numpy as np
import pytest

import trainkit
from trainkit.training.events import (
    BudgetEnd,
    EpochEnd,
    EverySteps,
    Position,
    ProfileWindow,
    steps_until_next,
)
from trainkit.training.stops import Interrupted, Terminated, TrainingStopped, stopped_by

QUIET = {"trainer.progress": False}


def recipe(name="digits_mlp", **overrides):
    return trainkit.load_recipe(name, overrides={**QUIET, **overrides})


def test_the_chunk_ends_at_the_nearest_event():
    events = [EpochEnd(45), BudgetEnd(100), EverySteps(10), EverySteps(None), ProfileWindow([52, 55], "/tmp")]
    assert steps_until_next(events, Position(0, 0, 0), 1000) == 10
    assert steps_until_next(events, Position(43, 0, 43), 1000) == 2  # the epoch ends first
    assert steps_until_next(events, Position(50, 1, 5), 1000) == 2  # the profile window opens at 52
    assert steps_until_next(events, Position(53, 1, 8), 1000) == 2  # and closes at 55
    assert steps_until_next(events, Position(91, 2, 1), 3) == 3  # the caller's own limit
    assert steps_until_next(events, Position(99, 2, 9), 1000) == 1
    assert EverySteps(None).steps_to_next(Position(7)) == math.inf
    assert Position(5, 1, 2).advanced(3) == Position(8, 1, 5) and Position(8, 1, 5).next_epoch() == Position(8, 2, 0)


def test_a_sigint_stop_is_a_keyboard_interrupt_and_sigterm_is_not_an_exception():
    stop = stopped_by(signal.SIGINT, "runs/x/checkpoints/ckpt-7", 7)
    assert isinstance(stop, Interrupted) and isinstance(stop, KeyboardInterrupt)
    assert not isinstance(stop, Exception)  # `except Exception` in a sweep loop does not swallow it
    assert (stop.checkpoint, stop.step, stop.exit_code) == ("runs/x/checkpoints/ckpt-7", 7, 130)
    term = stopped_by(signal.SIGTERM, "c", 3)
    assert isinstance(term, Terminated) and isinstance(term, TrainingStopped)
    assert not isinstance(term, KeyboardInterrupt | Exception) and term.exit_code == 143


class Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __getattribute__(self, name):
        if name.startswith("on_"):
            calls = object.__getattribute__(self, "calls")
            return lambda *args, **kwargs: calls.append((name, *args))
        return object.__getattribute__(self, name)


def test_callbacks_follow_keras_protocol_once_per_compiled_call(tmp_path):
    recorder = Recorder()
    # 45 steps per epoch in 2 epochs; 10 steps per call; validation once per epoch.
    run = trainkit.train(
        recipe(**{"trainer.epochs": 2, "trainer.steps_per_execution": 10, "trainer.log_every_steps": 1000}),
        run_dir=tmp_path / "run", callbacks=[recorder],
    )
    names = [c[0] for c in recorder.calls]
    assert names[0] == "on_train_begin" and names[-1] == "on_train_end"
    first_epoch = names[names.index("on_epoch_begin"): names.index("on_epoch_end") + 1]
    # batches 0-9, 10-19, 20-29, 30-39, 40-44: begin/end once per call, with Keras's batch indices
    batch_calls = [c[:2] for c in recorder.calls if c[0].startswith("on_train_batch")][:10]
    assert batch_calls == [
        ("on_train_batch_begin", 0), ("on_train_batch_end", 9), ("on_train_batch_begin", 10), ("on_train_batch_end", 19),
        ("on_train_batch_begin", 20), ("on_train_batch_end", 29), ("on_train_batch_begin", 30), ("on_train_batch_end", 39),
        ("on_train_batch_begin", 40), ("on_train_batch_end", 44),
    ]
    assert first_epoch[-5:] == ["on_test_begin", "on_test_batch_begin", "on_test_batch_end", "on_test_end", "on_epoch_end"]
    epoch_logs = [c[2] for c in recorder.calls if c[0] == "on_epoch_end"]
    assert set(epoch_logs[0]) == {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}
    assert epoch_logs[-1]["learning_rate"] == pytest.approx(1e-3)
    test_end = [c[1] for c in recorder.calls if c[0] == "on_test_end"][0]
    assert set(test_end) == {"loss", "accuracy"}  # unprefixed, as Keras's evaluate gives them
    assert run.history["val_loss"] == [e["val_loss"] for e in epoch_logs]


def test_use_ema_leaves_the_moving_averages_as_the_final_weights(tmp_path):
    run = trainkit.train(
        recipe(**{"trainer.epochs": None, "trainer.steps": 30, "optimizer.use_ema": True}), run_dir=tmp_path / "run"
    )
    optimizer = run._built.trainer.optimizer
    averages = [np.asarray(optimizer._model_variables_moving_average[optimizer._get_variable_index(v)])
                for v in run.model.trainable_variables]
    for variable, average in zip(run.model.trainable_variables, averages, strict=True):
        np.testing.assert_array_equal(np.asarray(variable), average)
    # The exported model is the finalized one; the rotation keeps the raw weights for resuming.
    exported = keras.models.load_model(run.run_dir / "model.keras", compile=False)
    np.testing.assert_array_equal(exported.get_weights()[0], np.asarray(run.model.trainable_variables[0]))


class Freezer(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.layers[1].trainable = False


def test_a_callback_that_changes_trainable_variables_is_refused(tmp_path):
    with pytest.raises(trainkit.TrainkitError, match=r"Freezer changed which variables are trainable .* at step 45"):
        trainkit.train(recipe(**{"trainer.epochs": 2}), run_dir=tmp_path / "run", callbacks=[Freezer()])


class EveryThirteen:
    """An extra event, as a stage change would be: cuts chunks at multiples of 13 and acts there."""

    def __init__(self):
        self.fired_at = []

    def steps_to_next(self, position):
        return 13 - position.step % 13

    def due(self, position):
        return position.step % 13 == 0

    def fire(self, controller):
        self.fired_at.append(controller.position.step)


def test_an_extra_event_cuts_the_chunks_and_fires_where_it_is_due(tmp_path):
    from trainkit.plan import build
    from trainkit.rundir import RunDir
    from trainkit.training.checkpoint import Checkpointer
    from trainkit.training.controller import Controller
    from trainkit.training.events import ProfileWindow
    from trainkit.training.report import MetricsLog
    from trainkit.training.sinks import QuietSink

    built = build(recipe(**{"trainer.epochs": 1, "trainer.steps_per_execution": 20}))
    directory = RunDir(tmp_path / "run")
    directory.path.mkdir()
    event = EveryThirteen()
    checkpointer = Checkpointer(directory.checkpoints, model=built.model, optimizer=built.trainer.optimizer, keep=1)
    controller = Controller(
        trainer=built.trainer, data=built.data, strategy=built.strategy, policy=built.recipe.trainer,
        checkpointer=checkpointer, metrics_log=MetricsLog(directory), profile=ProfileWindow(None, directory.tensorboard),
        sink=QuietSink(), callbacks=[],
        steps_per_epoch=built.steps_per_epoch, total_steps=built.total_steps, events=(event,),
        process_started=time.time() - 100,
    )
    controller.run()
    # 45 steps: exact, though 20 steps run per call; each fires before the step it is
    # due at trains (as a stage begins before its first step), step 0 included.
    assert event.fired_at == [0, 13, 26, 39]
    # Its collaborators wrote the metrics; the status is the lifecycle's to write, from the summary.
    assert directory.metrics_log.is_file() and not directory.run_json.exists()
    assert controller.summary["step"] == 45 and controller.summary["seconds_to_first_step"] >= 100


def test_how_a_run_ended_is_one_status_from_the_stop_that_ended_it():
    from trainkit.training.lifecycle import ended_status
    from trainkit.training.stops import Diverged

    costs = {"checkpoints_saved": 2}
    assert ended_status(stopped_by(signal.SIGTERM, "ckpt-30", 30), costs) == {"status": "interrupted", "step": 30, **costs}
    assert ended_status(Diverged("the training loss became NaN", step=12), costs) == {"status": "diverged", "step": 12}
    assert ended_status(KeyboardInterrupt(), costs) == {"status": "interrupted"}
    assert ended_status(ValueError("bad"), costs) == {"status": "failed", "error": "ValueError: bad"}
