"""A killed or interrupted run, trained again, ends bit-identical to an uninterrupted one.

Each case kills a real ``trainkit train`` process at a chosen moment (see
``_fault_runner.py``), trains again into the same directory with the same
command (in the test process: nothing of the killed one is there), and compares every array of the final ``model.keras`` with the
uninterrupted run's, bit for bit.
"""

from __future__ import annotations

import json
import random
import signal
import time

import pytest
from _checkpoint_helpers import (
    BASE,
    STEPS,
    assert_same_weights,
    kept_steps,
    messages,
    start,
    train,
    train_here,
    wait_for_training,
)


def _kill_then_resume(run, fault: str, reference, *, resumes: bool = True) -> str:
    killed = train(run, faults=(fault,))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert json.loads((run / "run.json").read_text())["status"] == "running"  # died without a word
    resumed = train_here(run)
    assert resumed.returncode == 0, resumed.stderr
    assert ("resumed from" in resumed.stdout) == resumes
    assert_same_weights(run, reference)
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    # The best checkpoint is the same one the uninterrupted run kept.
    assert kept_steps(run / "checkpoints" / "best") == kept_steps(reference / "checkpoints" / "best")
    assert kept_steps(run / "checkpoints" / "final") == [STEPS]
    return resumed.stdout + resumed.stderr


def test_sigkill_mid_epoch_resumes_bit_identical(tmp_path, reference):
    # Killed after step 33 (epoch 2), 3+ steps after the checkpoint at step 30.
    out = _kill_then_resume(tmp_path / "run", "kill-after-train:33", reference)
    assert "resumed from" in out and "at step 30 " in out


def test_sigkill_in_a_checkpoint_save_with_a_torn_index_resumes_bit_identical(tmp_path, reference):
    # ckpt-50.index half written when the process dies: detected, skipped, moved aside.
    run = tmp_path / "run"
    out = _kill_then_resume(run, "torn-save:50", reference)
    assert "ckpt-50" in out and "cannot be read back" in out
    assert (run / "checkpoints" / "corrupt" / "ckpt-50.index").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault",
    [
        "kill-after-train:46",  # exactly at the end of epoch 2, before its validation
        "kill-in-eval:2",  # during the validation at the end of epoch 2
        "kill-in-save:50",  # ckpt-50 written, not yet in TensorFlow's checkpoint list
        "kill-after-train:69",  # after the last step, before the final save
    ],
)
def test_sigkill_campaign_resumes_bit_identical(tmp_path, reference, fault):
    _kill_then_resume(tmp_path / "run", fault, reference)


@pytest.mark.slow
def test_sigkill_before_the_first_checkpoint_starts_over_and_ends_identical(tmp_path, reference):
    _kill_then_resume(tmp_path / "run", "kill-after-train:3", reference, resumes=False)


@pytest.mark.slow
def test_killed_twice_then_resumed_is_still_bit_identical(tmp_path, reference):
    run = tmp_path / "run"
    assert train(run, faults=("kill-after-train:17",)).returncode == -signal.SIGKILL
    assert train(run, faults=("kill-after-train:25",)).returncode == -signal.SIGKILL  # now at ~step 35+
    assert train_here(run).returncode == 0
    assert_same_weights(run, reference)


@pytest.mark.slow
def test_sigkill_from_outside_at_a_random_moment_resumes_bit_identical(tmp_path, reference):
    run = tmp_path / "run"
    process = start(run, faults=("slow:0.05",))  # the same maths, just slower
    deadline = time.monotonic() + 120
    while not (run / "checkpoints").is_dir() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(random.uniform(0.0, 1.5))
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    resumed = train_here(run)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(run, reference)



@pytest.mark.parametrize(
    "signum, code",
    [(signal.SIGTERM, 143), pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow)],
)
def test_signal_saves_exits_with_its_code_and_resumes_bit_identical(tmp_path, reference, signum, code):
    run = tmp_path / "run"
    process = start(run, faults=("slow:0.05",))  # the same maths, slow enough to signal mid-run
    wait_for_training(run, process)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    lines = messages(stderr)
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    name = signal.Signals(signum).name
    assert lines[0].startswith(f"interrupted: stopped by {name} at step ")
    step = int(lines[0].split(" at step ")[1].split(";")[0])
    assert 0 < step < STEPS
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "interrupted" and status["step"] == step
    assert max(kept_steps(run / "checkpoints")) == step  # saved where it stopped
    assert not (run / ".lock").exists()

    resumed = train_here(run)
    assert resumed.returncode == 0, resumed.stderr
    assert f"at step {step} " in resumed.stdout
    assert_same_weights(run, reference)


@pytest.mark.slow
def test_mirrored_strategy_on_two_cpus_resumes_bit_identical(tmp_path):
    mirrored = [*BASE[:2], "digits_cnn_mirrored", *BASE[3:]]  # same overrides, 2 replicas
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert train_here(reference, base=mirrored).returncode == 0
    killed = train(run, base=mirrored, faults=("kill-after-train:33",))
    assert killed.returncode == -signal.SIGKILL
    # (its rehearsal's evaluation step is eager on purpose: no advice to wrap it in a tf.function)
    assert "eagerly has significant overhead" not in killed.stderr, killed.stderr
    resumed = train_here(run, base=mirrored)
    assert resumed.returncode == 0, resumed.stderr
    assert "at step 30 " in resumed.stdout
    assert_same_weights(run, reference)
