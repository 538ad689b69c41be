"""The sidecar evaluator: each checkpoint of a run evaluated once, beside its training."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time

import pytest
from _checkpoint_helpers import kept_steps
from conftest import checkout_env, cli, one_error_line, run_cli, run_python

SMOKE = ["digits_mlp", "-c", "digits_mlp_smoke"]
# One checkpoint per epoch, all kept: every epoch is something to evaluate.
EVERY_EPOCH = ["trainer.checkpoint.every_epoch=true", "trainer.checkpoint.every_seconds=null"]


def _history(run) -> list[dict]:
    from trainkit.sidecar import read_history

    return read_history(run)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished smoke run with a checkpoint at each of its 4 epochs."""
    import trainkit

    recipe = trainkit.load_recipe(
        "digits_mlp", configs=["digits_mlp_smoke"],
        overrides=["trainer.epochs=4", *EVERY_EPOCH, "trainer.checkpoint.keep=10"],
    )
    run = tmp_path_factory.mktemp("sidecar") / "run"
    trainkit.train(recipe, run_dir=run)
    return run


@pytest.fixture
def run(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def _sidecar(run, lines=None, **kwargs):
    from trainkit.sidecar import Sidecar

    return Sidecar(run, report=(lines.append if lines is not None else lambda _: None), **kwargs)


def test_each_checkpoint_is_evaluated_once_in_order_with_the_best_kept(run):
    import trainkit

    kept = kept_steps(run / "checkpoints")
    assert len(kept) == 4
    sidecar = _sidecar(run)
    assert sidecar.poll() == (4, True)  # evaluated, and the run has ended
    assert sidecar.poll() == (0, True)
    history = _history(run)
    assert [r["step"] for r in history] == kept
    assert {r["split"] for r in history} == {"validation"}
    assert history[0]["checkpoint"] == f"checkpoints/ckpt-{kept[0]}"
    # The same numbers `trainkit eval` gives for that checkpoint.
    expected = trainkit.evaluate(run, split="validation", checkpoint=str(kept[1]))
    assert history[1]["metrics"] == pytest.approx(expected, rel=1e-5)
    # best_eval/ holds the checkpoint with the lowest validation loss (the recipe's monitor: auto).
    best = min(history, key=lambda r: r["metrics"]["loss"])
    assert kept_steps(run / "checkpoints" / "best_eval") == [best["step"]]
    assert [r["step"] for r in history if r.get("best")][-1] == best["step"]
    assert list((run / "tensorboard" / "eval").glob("events.out.tfevents.*"))
    assert not list((run / "checkpoints" / ".eval_reading").iterdir())  # no pinned links left behind
    # A second evaluator (a restart) finds nothing new.
    assert _sidecar(run).poll() == (0, True)
    assert [r["step"] for r in _history(run)] == kept


def test_a_poll_that_finds_nothing_changed_reads_nothing_and_sees_the_next_checkpoint(run, monkeypatch):
    import os

    import trainkit.sidecar as sidecar_module
    from trainkit.rundir.checkpoints import write_state

    ckpts = run / "checkpoints"
    sidecar = _sidecar(run, evaluate=lambda path: {"loss": 1.0})
    assert sidecar.poll() == (4, True)
    # Nothing has changed for a minute: the next pass's view of it can be trusted.
    old = time.time() - 60
    for path in (ckpts, ckpts / "checkpoint", run / "run.json", run / "config.yaml"):
        os.utime(path, (old, old))
    assert sidecar.poll() == (0, True)

    def unread(*args, **kwargs):
        raise AssertionError("read although nothing changed")

    with monkeypatch.context() as patched:
        for name in ("candidates", "read_history"):
            patched.setattr(sidecar_module, name, unread)
        for name in ("_check_same_run", "_run_ended", "_listed"):
            patched.setattr(sidecar, name, unread)
        assert sidecar.poll() == (0, True)
    # A resumed training writes a newer checkpoint: the folder's stat shows it.
    last = max(kept_steps(ckpts))
    for file in ckpts.glob(f"ckpt-{last}.*"):
        shutil.copy(file, ckpts / file.name.replace(f"ckpt-{last}.", f"ckpt-{last + 5}."))
    write_state(ckpts, f"ckpt-{last + 5}", [f"ckpt-{s}" for s in [*kept_steps(ckpts)]])
    assert sidecar.poll() == (1, True)
    assert [r["step"] for r in _history(run)][-2:] == [last, last + 5]


def test_the_evaluators_pipeline_runs_on_its_own_few_threads(run):
    sidecar = _sidecar(run, threads=1)
    assert sidecar.poll() == (4, True)
    data = sidecar._evaluate.__self__.built.data
    threading = data.dataset("validation").options().threading
    assert (threading.private_threadpool_size, threading.max_intra_op_parallelism) == (1, 1)


def test_limit_process_sets_the_threads_and_the_priority_once():
    code = (
        "import os, tensorflow as tf\n"
        "from trainkit.sidecar import limit_process\n"
        "before = os.nice(0)\n"
        "limit_process(2, 5)\n"
        "limit_process(2, 5)  # once per process\n"
        "tf.constant(1)\n"
        "print(os.nice(0) - before, tf.config.threading.get_intra_op_parallelism_threads(),"
        " tf.config.threading.get_inter_op_parallelism_threads())\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["5", "2", "2"]


def test_limit_process_after_tensorflow_started_keeps_its_threads_with_a_warning(monkeypatch, capsys):
    # (this process has run TensorFlow ops: its thread pools are made)
    import tensorflow as tf

    from trainkit import sidecar

    tf.constant(1) + 1
    before = (tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads())
    monkeypatch.setattr(sidecar, "_limited", [])  # (the first call in a process; nice 0 keeps the priority)
    sidecar.limit_process(1, 0)
    assert "--threads 1: TensorFlow had started already; it keeps its own thread counts" in capsys.readouterr().err
    assert (tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads()) == before


def test_the_idle_priority_reaches_every_thread_tensorflow_starts():
    code = (
        "import os, threading, time\n"
        "from trainkit.sidecar import limit_process\n"
        "early = threading.Thread(target=time.sleep, args=(30,), daemon=True); early.start()\n"
        "limit_process(1, 'idle')\n"
        "import tensorflow as tf\n"
        "tf.data.Dataset.range(64).map(lambda x: x * 2, num_parallel_calls=2).reduce(tf.constant(0, tf.int64), lambda a, b: a + b)\n"
        "tf.reduce_sum(tf.ones((256, 256)) @ tf.ones((256, 256)))\n"
        "policies = {os.sched_getscheduler(int(t)) for t in os.listdir('/proc/self/task')}\n"
        "print(len(os.listdir('/proc/self/task')), policies == {os.SCHED_IDLE})\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    threads, all_idle = result.stdout.split()
    assert int(threads) > 2 and all_idle == "True"  # the thread started before the call too


@pytest.mark.parametrize("value", ["20", "-1", "low", "1.5"])
def test_a_priority_the_evaluator_cannot_take_is_one_line_before_anything_runs(tmp_path, value):
    result = cli("eval", str(tmp_path / "nowhere"), "--watch", "--nice", value)
    assert result.returncode == 2
    assert one_error_line(result) == (
        "error: --nice: must be 0 (keep the priority), 1..19 (lower it) or idle (only CPU time nothing "
        f"else wants), got {value}"
    )


def test_a_restarted_evaluator_continues_after_the_last_recorded_step(run):
    evaluated = []
    _sidecar(run, evaluate=lambda path: evaluated.append(path) or {"loss": 1.0}).poll()
    history = _history(run)
    # Killed after two evaluations: only those two were recorded.
    (run / "eval_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history[:2]))
    again = []
    assert _sidecar(run, evaluate=lambda path: again.append(path) or {"loss": 0.5}).poll() == (2, True)
    steps = [r["step"] for r in _history(run)]
    assert steps == kept_steps(run / "checkpoints") and len(set(steps)) == len(steps)
    assert [p.rsplit("-", 1)[1] for p in again] == [str(s) for s in steps[2:]]


def test_a_checkpoint_deleted_before_it_was_read_is_skipped_and_said(run):
    kept = kept_steps(run / "checkpoints")
    (run / "checkpoints" / f"ckpt-{kept[1]}.data-00000-of-00001").unlink()  # the rotation, midway
    lines = []
    assert _sidecar(run, lines, evaluate=lambda path: {"loss": 1.0}).poll() == (3, True)
    assert [r["step"] for r in _history(run)] == [kept[0], *kept[2:]]
    assert any(f"skipped ckpt-{kept[1]}: deleted before it could be read" in line for line in lines)


def test_a_checkpoint_being_written_is_waited_for_never_read_torn(run):
    from trainkit.rundir import RunDir
    from trainkit.rundir.checkpoints import write_state

    kept = kept_steps(run / "checkpoints")
    ckpts = run / "checkpoints"
    RunDir(run).update_status(status="running", ended=None)  # the training goes on
    # The newest checkpoint's files are there but it is not listed yet (TensorFlow lists it last),
    # and its data is still short.
    newest = ckpts / f"ckpt-{kept[-1]}.data-00000-of-00001"
    whole = newest.read_bytes()
    newest.write_bytes(whole[: len(whole) // 2])
    write_state(ckpts, f"ckpt-{kept[-2]}", [f"ckpt-{s}" for s in kept[:-1]])
    read = []
    sidecar = _sidecar(run, evaluate=lambda path: read.append(path) or {"loss": 1.0})
    assert sidecar.poll() == (3, False)  # the written ones; the last is waited for
    assert sidecar.poll() == (0, False)
    # The save completes: whole data, then the list.
    newest.write_bytes(whole)
    write_state(ckpts, f"ckpt-{kept[-1]}", [f"ckpt-{s}" for s in kept])
    assert sidecar.poll() == (1, False)
    RunDir(run).update_status(status="completed", ended="2026-01-01T00:00:00+0000")
    assert sidecar.poll() == (0, True)
    assert [r["step"] for r in _history(run)] == kept


def test_an_end_recorded_before_the_evaluator_started_is_an_earlier_trainings(run):
    sidecar = _sidecar(run, evaluate=lambda path: {"loss": 1.0}, ended_after=time.time() + 60)
    assert sidecar.poll() == (4, False)  # a resumed training will write more


def test_a_damaged_checkpoint_is_skipped_with_a_warning(run, capsys):
    kept = kept_steps(run / "checkpoints")
    data = run / "checkpoints" / f"ckpt-{kept[0]}.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    assert _sidecar(run).poll() == (3, True)
    assert f"skipped ckpt-{kept[0]}: it cannot be read back" in capsys.readouterr().err


def test_watch_refuses_what_it_cannot_watch(tmp_path, run):
    result = cli("eval", str(tmp_path / "nowhere"), "--watch")
    assert result.returncode == 2 and "nowhere does not exist" in result.stderr
    result = cli("eval", str(run), "--until-finished")
    assert result.returncode == 2 and "--until-finished goes with --watch" in result.stderr
    result = cli("eval", str(run), "--watch", "--checkpoint", "best")
    assert result.returncode == 2 and "--checkpoint goes without --watch" in result.stderr
    result = cli("eval", str(run), "--threads", "2")
    assert result.returncode == 2 and "--threads goes with --watch" in result.stderr
    result = cli("eval", str(run), "--wait")
    assert result.returncode == 2 and "--wait goes with --watch" in result.stderr
    for option, value, valid in (("--threads", "-1", "0 (TensorFlow's default"), ("--nice", "20", "0 (keep the priority), 1..19")):
        # (a process of its own: were the value taken, it would renice or thread this one)
        result = run_cli("eval", str(run), "--watch", option, value)
        assert result.returncode == 2 and f"error: {option}: must be {valid}" in result.stderr, result.stderr
    from trainkit.rundir.lock import RunLock

    held = RunLock(run / ".eval.lock", run / ".eval.lock")
    held.acquire()  # another evaluator watches this run
    try:
        result = run_cli("eval", str(run), "--watch", "--until-finished")
    finally:
        held.release()
    assert result.returncode == 2 and ".eval.lock is in use by process" in result.stderr
    assert not (run / "eval_history.jsonl").exists()


def test_a_run_restarted_with_another_recipe_stops_the_evaluator(run):
    from trainkit.errors import RunDirError
    from trainkit.loader import load_recipe
    from trainkit.rundir import RunDir

    sidecar = _sidecar(run, evaluate=lambda path: {"loss": 1.0})
    RunDir(run).write_config(load_recipe("digits_mlp", configs=["digits_mlp_smoke"], overrides=["optimizer.learning_rate=0.5"]))
    with pytest.raises(RunDirError, match=r"another recipe \(differs in: optimizer.learning_rate\)"):
        sidecar.poll()


def _spawn(*args: str, log, faults: tuple[str, ...] = ()) -> subprocess.Popen:
    """``trainkit ARGS`` in a process of its own (with ``faults``: through tests/_fault_runner.py)."""
    from _checkpoint_helpers import command

    return subprocess.Popen(command(*args, faults=faults), stdout=log, stderr=subprocess.STDOUT, env=checkout_env())


def _wait_for(condition, timeout=240.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.2)


@pytest.mark.slow
def test_a_sidecar_beside_a_real_training_killed_and_restarted_evaluates_each_kept_checkpoint_once(tmp_path):
    run = tmp_path / "run"
    common = [*SMOKE, *EVERY_EPOCH, "trainer.checkpoint.keep=4", "--run-dir", str(run)]
    assert cli("train", *common, "trainer.epochs=2").returncode == 0
    watch = ["eval", str(run), "--watch", "--every-seconds", "0.3"]
    with open(tmp_path / "eval1.log", "w") as log:
        first = _spawn(*watch, log=log)
    _wait_for(lambda: len(_history(run)) == 2)  # the evaluator is up: the training resumes for more epochs
    with open(tmp_path / "train.log", "w") as log:
        # (a pause after each training call of an epoch: the same training, long enough in
        # wall time that the evaluators work beside it however fast the machine trains)
        training = _spawn("train", *common, "trainer.epochs=40", "trainer.steps_per_execution=45", log=log, faults=("slow:0.1",))
    _wait_for(lambda: len(_history(run)) > 3 or training.poll() is not None)
    first.send_signal(signal.SIGKILL)  # mid-way, between or inside evaluations
    first.wait(timeout=30)
    with open(tmp_path / "eval2.log", "w") as log:
        second = _spawn(*watch, "--until-finished", log=log)
    assert training.wait(timeout=300) == 0, (tmp_path / "train.log").read_text()
    assert second.wait(timeout=300) == 0, (tmp_path / "eval2.log").read_text()
    history = _history(run)
    steps = [r["step"] for r in history]
    assert steps == sorted(set(steps))  # in order, none twice
    assert set(kept_steps(run / "checkpoints")) <= set(steps)  # every kept checkpoint
    status = json.loads((run / "run.json").read_text())
    assert steps[-1] == status["step"]
    ended = time.mktime(time.strptime(status["ended"], "%Y-%m-%dT%H:%M:%S%z"))
    assert any(2 * 45 < r["step"] and r["time"] < ended - 1 for r in history)  # evaluated beside the training
    assert json.loads((run / "eval.json").read_text())["validation"]  # the run's own final evaluation
    assert "(every 0.3 s; 1 thread, nice 10)" in (tmp_path / "eval2.log").read_text()  # the defaults


@pytest.mark.slow
def test_an_evaluator_started_before_its_training_waits_for_it_and_for_its_end(tmp_path):
    run = tmp_path / "run"
    with open(tmp_path / "eval.log", "w") as log:
        evaluator = _spawn("eval", str(run), "--watch", "--wait", "--until-finished", "--every-seconds", "0.3", log=log)
    try:
        _wait_for(lambda: "waiting for" in (tmp_path / "eval.log").read_text() or evaluator.poll() is not None)
        assert f"waiting for {run} to be made" in (tmp_path / "eval.log").read_text()
        # The training's own process is not what this is about: it runs in this one.
        training = cli("train", *SMOKE, *EVERY_EPOCH, "trainer.epochs=6", "--run-dir", str(run))
        assert training.returncode == 0, training.stderr[-3000:]
        assert evaluator.wait(timeout=300) == 0, (tmp_path / "eval.log").read_text()
    finally:
        if evaluator.poll() is None:
            evaluator.kill()
    steps = [r["step"] for r in _history(run)]
    assert steps == sorted(set(steps)) and set(kept_steps(run / "checkpoints")) <= set(steps)
    assert steps[-1] == json.loads((run / "run.json").read_text())["step"]


def test_validation_sidecar_leaves_validation_to_an_evaluator_task_when_the_cluster_has_one(monkeypatch):
    import trainkit
    from trainkit.plan import resolve_validation
    from trainkit.recipe import ValidationPolicy

    recipe = trainkit.load_recipe("digits_mlp", configs=["digits_mlp_smoke"], overrides=["trainer.validation=sidecar"])
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert resolve_validation(recipe).trainer.validation == ValidationPolicy()  # no evaluator: validated in the loop
    cluster = {"worker": ["127.0.0.1:9"], "evaluator": ["127.0.0.1:10"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    assert resolve_validation(recipe).trainer.validation == "sidecar"


@pytest.mark.slow
def test_launch_with_an_evaluator_validates_beside_two_workers_that_never_validate(tmp_path):
    run = tmp_path / "run"
    result = run_cli(
        "launch", "-n", "2", "--evaluator", *SMOKE, "trainer.epochs=3", *EVERY_EPOCH,
        "trainer.validation=sidecar", "--run-dir", str(run), timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[evaluator 0] watching" in result.stdout and "1 thread, nice 10)" in result.stdout
    assert "TensorFlow had started already" not in result.stdout + result.stderr  # its threads were set in time
    steps = [r["step"] for r in _history(run)]
    assert steps == sorted(set(steps)) and set(kept_steps(run / "checkpoints")) <= set(steps)
    assert steps[-1] == json.loads((run / "run.json").read_text())["step"]
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert not [e for e in events if e["split"] == "validation" or "val_loss" in e]  # the workers never validated
    assert json.loads((run / "eval.json").read_text())["validation"]  # the run's own final evaluation


def test_a_split_the_run_lacks_stops_the_evaluator_rather_than_skipping_every_checkpoint(run):
    from trainkit.errors import ConfigError

    with pytest.raises(ConfigError, match="split 'holdout' does not exist"):
        _sidecar(run, split="holdout").poll()
    assert not (run / "eval_history.jsonl").exists()
