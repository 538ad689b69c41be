"""Ending the process while a slow release (a tf.data iterator's destructor) still runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from trainkit import teardown

# An object whose destruction blocks, as a tf.data iterator's can (for up to a minute).
SCRIPT = textwrap.dedent(
    """
    import atexit, pathlib, sys, time
    from trainkit import teardown

    class SlowToDestroy:
        def __del__(self):
            time.sleep(600)

    marker = pathlib.Path(sys.argv[1])
    atexit.register(marker.write_text, "exit handlers ran")
    if sys.argv[2] == "pending":
        teardown.release_in_background([SlowToDestroy()])
    print("the run's last line", end="")  # unflushed when the process ends
    teardown.exit_process(3)
    """
)


def _end(marker, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, str(marker), mode], capture_output=True, text=True, timeout=60)


def test_the_process_ends_without_waiting_for_a_pending_release(tmp_path):
    marker = tmp_path / "marker"
    done = _end(marker, "pending")
    assert done.returncode == 3, done.stderr
    assert done.stdout == "the run's last line"
    assert marker.read_text() == "exit handlers ran"


def test_with_nothing_pending_exit_handlers_run_and_output_is_flushed(tmp_path):
    marker = tmp_path / "marker"
    done = _end(marker, "none")
    assert (done.returncode, done.stdout, marker.read_text()) == (3, "the run's last line", "exit handlers ran")


def test_a_release_runs_on_a_thread_the_interpreter_waits_for():
    # A daemon thread still in TensorFlow's destructor at interpreter exit is unwound
    # by force through C++ frames and the process aborts after the run has finished.
    owner = [iter(range(3))]
    thread = teardown.release_in_background(owner)
    thread.join(timeout=10)
    assert owner == [] and not thread.daemon and thread not in teardown.pending()


@pytest.mark.parametrize("stopped", [False, True])
def test_training_hands_its_iterator_to_the_release_with_no_other_reference(tmp_path, monkeypatch, stopped):
    # Held anywhere else (as by a local of the training loop, or by the frames of the
    # exception that a SIGTERM's stop raises), the iterator is destroyed on the
    # training's own thread when that reference goes, waiting there for tf.data's
    # autotuner (1.4 s at the end of most digits_cnn runs before this was fixed).
    import gc
    import os
    import signal

    import keras
    from conftest import TINY

    import trainkit

    others: list[int] = []

    def release(owner):
        gc.collect()
        others.append(sys.getrefcount(owner[0]) - 2)  # (less the list's reference and getrefcount's own)
        return real(owner)

    class Terminate(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            os.kill(os.getpid(), signal.SIGTERM)  # (trainkit's handler is in place while it trains)

    real = teardown.release_in_background
    monkeypatch.setattr(teardown, "release_in_background", release)
    recipe = trainkit.load_recipe("digits_mlp", overrides=TINY)
    if stopped:
        with pytest.raises(trainkit.Terminated):
            trainkit.train(recipe, run_dir=tmp_path / "run", callbacks=[Terminate()])
    else:
        trainkit.train(recipe, run_dir=tmp_path / "run")
    assert others == [0]
