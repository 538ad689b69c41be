"""Training into an existing run directory: resume, allowed and refused changes,
``--restart``, and one process at a time."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest
from _checkpoint_helpers import (
    STEPS,
    assert_same_weights,
    copy_run,
    kept_steps,
    messages,
    snapshot,
    start,
    train_here,
    wait_for_training,
)

import trainkit


def test_the_same_recipe_resumes_and_says_so(tmp_path, reference):
    run = copy_run(reference, tmp_path / "run")
    result = train_here(run)
    assert result.returncode == 0, result.stderr
    assert f"resumed from {run / 'checkpoints' / f'ckpt-{STEPS}'} at step {STEPS} " in result.stdout
    assert "already trained" in result.stdout
    assert json.loads((run / "run.json").read_text())["resumed_at"]


def test_a_longer_budget_is_an_allowed_change_that_is_listed(tmp_path, reference):
    run = copy_run(reference, tmp_path / "run")
    result = train_here(run, "trainer.epochs=4", "trainer.log_every_steps=7")
    assert result.returncode == 0, result.stderr
    assert "resuming with changed settings: trainer.epochs, trainer.log_every_steps" in result.stdout
    assert f"at step {STEPS} " in result.stdout
    assert kept_steps(run / "checkpoints" / "final") == [92]
    assert "epochs: 4" in (run / "config.yaml").read_text()


def test_a_forbidden_change_is_refused_in_one_line_and_changes_nothing(tmp_path, reference):
    run = copy_run(reference, tmp_path / "run")
    before = snapshot(run)
    result = train_here(run, "optimizer.learning_rate=0.01", "model.dropout=0.5")
    assert result.returncode == 2
    lines = messages(result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"error: {run} holds a run of a different recipe")
    assert "model.dropout" in lines[0] and "optimizer.learning_rate" in lines[0] and "--restart" in lines[0]
    assert snapshot(run) == before


def test_restart_moves_the_old_run_aside_whole_and_starts_over(tmp_path, reference):
    run = copy_run(reference, tmp_path / "run")
    before = snapshot(run)
    result = train_here(run, "optimizer.learning_rate=0.01", "--restart")
    assert result.returncode == 0, result.stderr
    (old,) = tmp_path.glob("run.old-*")
    assert f"was moved to {old}" in result.stdout
    assert "resumed from" not in result.stdout
    assert snapshot(old) == before
    assert "learning_rate: 0.01" in (run / "config.yaml").read_text()
    assert json.loads((run / "run.json").read_text())["status"] == "completed"



@pytest.mark.slow
def test_a_second_process_is_refused_at_once_and_a_killed_ones_lock_is_taken_over(tmp_path, reference):
    run = tmp_path / "run"
    first = start(run, faults=("slow:0.5",))  # holds the directory for 35 s or more (69 steps)
    try:
        wait_for_training(run, first)
        for extra in ((), ("--restart",)):  # --restart must not move a live run either
            second = train_here(run, *extra)
            assert second.returncode == 2
            lines = messages(second.stderr)
            assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
            assert lines[0].startswith(f"error: {run} is in use by process {first.pid} ")
            assert first.poll() is None  # the first one trains on
        assert not list(tmp_path.glob("run.old-*"))
        assert trainkit.load_run(run).status == "running"  # (the lock is probed, not taken)
        deadline = time.monotonic() + 120
        while not kept_steps(run / "checkpoints") and time.monotonic() < deadline:
            time.sleep(0.1)  # a checkpoint to resume from
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    assert (run / ".lock").is_file()  # left behind by the killed process: stale
    # run.json still says running (a killed process writes nothing); the run is seen as killed.
    assert json.loads((run / "run.json").read_text())["status"] == "running"
    assert trainkit.load_run(run).status == "killed" and "status='killed'" in repr(trainkit.load_run(run))

    third = train_here(run)
    assert third.returncode == 0, third.stderr
    assert f"stale lock of process {first.pid}" in third.stderr
    assert "resumed from" in third.stdout
    assert_same_weights(run, reference)  # and the run ends as if nothing had happened
    assert not (run / ".lock").exists() and trainkit.load_run(run).status == "completed"


def test_the_lock_is_probed_without_being_taken(tmp_path):
    from trainkit.rundir import RunDir

    directory = RunDir(tmp_path / "run")
    directory.path.mkdir()
    assert directory.in_use() is False  # no lock file
    directory.acquire()
    try:
        assert directory.in_use() is True
        assert directory.in_use() is True  # (the probe let go: it does not take the lock either)
    finally:
        directory.release()
    assert directory.in_use() is False
    directory.lock_file.write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "since": "then"}))
    assert directory.in_use() is False  # a killed process's file: no flock on it
    directory.lock_file.write_text(json.dumps({"pid": 1, "host": "another-machine", "since": "then"}))
    assert directory.in_use() is None  # cannot be told from here
    directory.lock_file.unlink()
    directory.lock_file.symlink_to(tmp_path / "elsewhere")
    assert directory.in_use() is None  # never read through a link
    directory.lock_file.unlink()
    os.mkfifo(directory.lock_file)
    assert directory.in_use() is None  # nor waited on: a FIFO would block the open and the read
    directory.lock_file.unlink()


def test_a_status_probe_at_the_moment_a_training_starts_does_not_have_it_refused(tmp_path):
    """``in_use`` holds a shared flock for microseconds; taking the lock waits that out
    (it refused at once before: 3 starts in 300 beside a polling ``load_run``)."""
    import fcntl
    import threading

    from trainkit.rundir import RunDir

    directory = RunDir(tmp_path / "run")
    directory.path.mkdir()
    directory.lock_file.write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "since": "then"}))
    probe = os.open(directory.lock_file, os.O_RDONLY)
    fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a probe, caught in the middle
    threading.Timer(0.05, os.close, [probe]).start()
    directory.acquire()
    try:
        assert directory.in_use() is True
    finally:
        directory.release()


@pytest.mark.slow
def test_a_run_stopped_early_stays_stopped_when_trained_again(tmp_path):
    run = tmp_path / "run"
    # Never "improves" by 10: stops at the end of the second epoch (step 46 of 115).
    stopper = "trainer.callbacks=[{type: EarlyStopping, monitor: loss, patience: 0, min_delta: 10}]"
    first = train_here(run, "trainer.epochs=5", stopper)
    assert first.returncode == 0, first.stderr
    assert json.loads((run / "run.json").read_text())["stopped_early"] is True
    assert kept_steps(run / "checkpoints" / "final") == [46]
    again = train_here(run, "trainer.epochs=5", stopper)
    assert again.returncode == 0, again.stderr
    assert "the run stopped early at step 46; not training further" in again.stdout
    assert max(kept_steps(run / "checkpoints")) == 46  # no step trained after it
