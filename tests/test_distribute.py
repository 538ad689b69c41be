"""Strategies beyond one device: clusters of real processes on loopback ports.

Multi-worker and parameter-server runs happen in subprocesses (``trainkit
launch``, or a script hosting an in-process cluster), never in the pytest
process: a strategy that joins a cluster cannot be undone in the process that
made it. Every subprocess has a timeout.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _checkpoint_helpers import kept_steps
from conftest import ROOT, checkout_env, cli, run_cli

import trainkit
from trainkit.distribution import cluster, strategies
from trainkit.errors import ConfigError
from trainkit.launch import plan_cluster, tf_config
from trainkit.recipe import RuntimeSection

QUIET = {"trainer.progress": False}
# A short deterministic run: no dropout (its random masks differ per replica).
EXACT = ["trainer.epochs=null", "trainer.steps=40", "model.dropout=0.0", "runtime.deterministic=true"]


def _env(tmp_path: Path) -> dict:
    # Scratch directories of non-chief workers go here, so the test can see them cleaned up.
    scratch = tmp_path / "tmp"
    scratch.mkdir(exist_ok=True)
    return {"TMPDIR": str(scratch)}


def _weights(path: Path) -> list[np.ndarray]:
    import keras

    return [np.asarray(w) for w in keras.models.load_model(path).get_weights()]


# ---------------------------------------------------------------- cluster descriptions


def test_tf_config_mistakes_are_one_line_errors():
    cases = {
        "{not json": "TF_CONFIG is not valid JSON",
        '{"task": {"type": "worker", "index": 0}}': 'TF_CONFIG has no "cluster"',
        '{"cluster": {"worker": ["127.0.0.1:1"]}}': 'TF_CONFIG has no "task"',
        '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "chief", "index": 0}}': 'task type "chief" is not in the cluster',
        '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}': "task index 3 is out of range",
        '{"cluster": {"worker": ["nohostport"]}, "task": {"type": "worker", "index": 0}}': '"host:port"',
    }
    for text, expected in cases.items():
        with pytest.raises(ConfigError, match=expected):
            cluster.read_tf_config({"TF_CONFIG": text})
    assert cluster.read_tf_config({}) is None


def test_launcher_plans_clusters_on_distinct_loopback_ports():
    tasks = plan_cluster(3, parameter_server=False)
    assert [t.name for t in tasks] == ["worker 0", "worker 1", "worker 2"]
    assert len({t.address for t in tasks}) == 3 and all(t.address.startswith("127.0.0.1:") for t in tasks)
    info = cluster.read_tf_config({"TF_CONFIG": tf_config(tasks, tasks[1])})
    assert info.num_workers == 3 and info.task_id == 1 and not info.is_chief
    ps = plan_cluster(2, parameter_server=True, ps=1)
    assert [t.name for t in ps] == ["chief", "worker 0", "worker 1", "ps 0"]
    chief = cluster.read_tf_config({"TF_CONFIG": tf_config(ps, ps[0])})
    assert chief.is_chief and sorted(chief.cluster) == ["chief", "ps", "worker"]


# ------------------------------------------------------- missing hardware or cluster


@pytest.mark.parametrize(
    ("runtime", "tf_config_value", "expected"),
    [
        ({"strategy": "multi_worker_mirrored"}, None, "multi_worker_mirrored needs a cluster, but TF_CONFIG is not set"),
        ({"strategy": "parameter_server"}, None, "parameter_server needs a cluster"),
        (
            {"strategy": "parameter_server"},
            {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}},
            "needs 'chief', 'worker' and 'ps' tasks in the cluster; TF_CONFIG has worker (missing: chief, ps)",
        ),
        (
            {"strategy": "multi_worker_mirrored"},
            {"cluster": {"worker": ["127.0.0.1:1"], "ps": ["127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}},
            "use runtime.strategy=parameter_server",
        ),
        (
            {"strategy": "multi_worker_mirrored", "communication": "nccl"},
            {"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}},
            "runtime.communication: nccl needs GPUs",
        ),
        ({"strategy": "tpu"}, None, "runtime.strategy: tpu, but this machine has no TPU devices"),
        ({"strategy": "tpu", "tpu": "grpc://127.0.0.1:9"}, None, "runtime.tpu: no TPU answers at grpc://127.0.0.1:9"),
        ({"strategy": "tpu", "tpu": "my-tpu"}, None, "'my-tpu' is a Cloud TPU name, which only resolves on Google Cloud"),
    ],
)
def test_missing_cluster_or_hardware_fails_before_anything_is_created(monkeypatch, runtime, tf_config_value, expected):
    if tf_config_value is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config_value))
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")) as err:
        strategies.make_strategy(RuntimeSection(**runtime))
    assert "\n" not in str(err.value)


def test_tpu_without_a_tpu_exits_2_at_once_from_the_command_line(tmp_path):
    # The subprocess timeout is the "does not hang" check: TensorFlow's own
    # resolver would wait on Google Cloud metadata for a Cloud TPU name, the case
    # run as a process; the other is the same command through the same main().
    command = ("train", "digits_mlp", "--run-dir", "run", "runtime.strategy=tpu")
    for result in (cli(*command, cwd=tmp_path), run_cli(*command, "runtime.tpu=my-tpu", cwd=tmp_path, timeout=90)):
        assert result.returncode == 2, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "tpu" in errors[0], result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_scaling_rule_needs_a_reference_batch():
    with pytest.raises(ConfigError, match="runtime.reference_batch_size"):
        trainkit.load_recipe("digits_mlp", overrides={"runtime.scale_learning_rate": "linear"})


# ------------------------------------------------------------------ batch semantics


def test_global_batch_split_per_replica_and_linear_learning_rate_rule(tmp_path, capsys):
    recipe = trainkit.load_recipe(
        "digits_mlp",
        overrides={
            "trainer.epochs": None,
            "trainer.steps": 2,
            "data.batch_size": 64,
            "runtime.strategy": "mirrored",
            "runtime.cpu_devices": 2,
            "runtime.scale_learning_rate": "linear",
            "runtime.reference_batch_size": 32,
        },
    )
    run = trainkit.train(recipe, run_dir=tmp_path / "run")
    plan = json.loads((run.run_dir / "run.json").read_text())["distribution"]
    assert plan["global_batch"] == 64 and plan["replicas"] == 2 and plan["per_replica_batch"] == 32
    assert plan["learning_rate"] == pytest.approx(2e-3) and plan["learning_rate_rule"] == "linear"
    header = capsys.readouterr().out.splitlines()[0]
    assert "global batch 64 (32 per replica)" in header and "learning rate 0.002 (linear rule" in header
    # the optimizer trained with the scaled rate (the recipe says 1e-3)
    import keras

    assert float(keras.ops.convert_to_numpy(run._built.trainer.optimizer.learning_rate)) == pytest.approx(2e-3)


# --------------------------------------------------------------- multi-worker mirrored


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One ``trainkit launch -n 2`` of :data:`EXACT` digits_mlp (a cluster costs a
    TensorFlow start per worker), read by the tests that only read its run."""
    tmp_path = tmp_path_factory.mktemp("two_workers")
    launched = run_cli("launch", "-n", "2", "digits_mlp", *EXACT, "--run-dir", "multi", cwd=tmp_path, timeout=240, env=_env(tmp_path))
    assert launched.returncode == 0, launched.stdout[-3000:]
    return tmp_path, launched


@pytest.mark.slow
def test_two_workers_match_one_process_and_only_the_chief_writes(two_workers):
    tmp_path, launched = two_workers
    assert "[worker 0] training digits_mlp" in launched.stdout
    assert "MultiWorkerMirroredStrategy (2 workers, 2 replicas), global batch 32 (16 per replica)" in launched.stdout
    # Where the run is and what to do next is said once, by the chief that wrote it (the
    # other workers' lines are streamed too: the restart in the killed-worker test shows one).
    assert "[worker 0] run directory: multi" in launched.stdout and "[worker 0] next:" in launched.stdout
    assert "[worker 1] run directory" not in launched.stdout and "[worker 1] next:" not in launched.stdout
    single = cli("train", "digits_mlp", *EXACT, "runtime.strategy=one_device", "--run-dir", "one", cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]

    multi, one = tmp_path / "multi", tmp_path / "one"
    for a, b in zip(_weights(multi / "model.keras"), _weights(one / "model.keras"), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    # The evaluation was split across the workers; each example counted once.
    multi_eval, one_eval = (json.loads((d / "eval.json").read_text()) for d in (multi, one))
    for split in ("validation", "test"):
        assert multi_eval[split]["accuracy"] == pytest.approx(one_eval[split]["accuracy"], abs=1e-7)
        assert multi_eval[split]["loss"] == pytest.approx(one_eval[split]["loss"], abs=1e-5)
    status = json.loads((multi / "run.json").read_text())
    assert status["status"] == "completed" and status["step"] == 40
    assert status["distribution"]["workers"] == 2 and status["distribution"]["per_replica_batch"] == 16
    # Only the chief wrote the run directory (one writer per file: one header in
    # metrics.jsonl's steps); the other worker's scratch directory is gone.
    assert sorted(p.name for p in multi.iterdir()) == sorted(p.name for p in one.iterdir())
    assert not list((tmp_path / "tmp").glob("trainkit-*"))
    # A cluster's run is evaluated in one process.
    evaluated = cli("eval", "multi", "--split", "test", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["test"] == pytest.approx(multi_eval["test"], rel=1e-5)


@pytest.mark.slow
def test_a_multi_worker_runs_model_restores_in_one_process_as_evaluate_does(two_workers):
    tmp_path, _ = two_workers
    run = trainkit.load_run(tmp_path / "multi")
    model = run.model  # a plain process: no TF_CONFIG, no cluster, and no --recipe hint
    x = trainkit.dataset(trainkit.load_run(tmp_path / "multi").recipe, "test")
    features = next(iter(x))[0]
    evaluated = trainkit.restore(tmp_path / "multi", "final")  # restore_plan's model: what trainkit.evaluate measures
    np.testing.assert_allclose(model.predict(features, verbose=0), evaluated.predict(features, verbose=0), atol=1e-6)
    assert trainkit.evaluate(tmp_path / "multi", split="test", checkpoint="final")["accuracy"] == pytest.approx(
        json.loads((tmp_path / "multi" / "eval.json").read_text())["test"]["accuracy"], abs=1e-7
    )


def test_launch_refuses_a_bad_recipe_before_starting_workers(tmp_path):
    result = cli("launch", "-n", "2", "digits_mlp", "trainer.epoch=3", "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 2
    assert "did you mean 'epochs'" in result.stderr and "[launch]" not in result.stdout
    assert not (tmp_path / "run").exists()


def test_the_errors_a_dead_peer_causes_become_one_line_and_others_pass_through():
    # What a survivor prints (exit code 4) when TensorFlow reports the loss of another task.
    import tensorflow as tf

    # As TensorFlow words it from a compiled step: a header, the frames that defined the op, the reason.
    aborted = tf.errors.UnavailableError(
        None, None, "Graph execution error:\n\nDetected at node CollectiveReduceV2 defined at (most recent call "
        'last):\n  File "step.py", line 3, in step\n\nCollective ops is aborted by: recvmsg:Connection reset by '
        "peer\n\t [[{{node CollectiveReduceV2}}]] [Op:__inference_step_91]"
    )
    lost = cluster.as_worker_lost(aborted, _two_worker_strategy())
    assert isinstance(lost, cluster.WorkerLost) and lost.exit_code == 4
    assert str(lost) == (
        "lost contact with another task of the cluster (UnavailableError: Collective ops is aborted by: "
        "recvmsg:Connection reset by peer); the job cannot continue -- restart it to resume from the last checkpoint"
    )
    # An older wording, the function's name in braces on the first line.
    older = tf.errors.UnavailableError(None, None, "{{function_node __inference_step_91}} Socket closed\nmore")
    assert "(UnavailableError: Socket closed);" in str(cluster.as_worker_lost(older, _two_worker_strategy()))
    # A long function name is dropped before the line is cut to length, not after.
    named = "{{function_node __inference_multi_step_on_iterator_" + "x" * 150 + "}} "
    heartbeat = tf.errors.AbortedError(None, None, named + "Unexpected heartbeat request from an already-in-error task")
    assert "(AbortedError: Unexpected heartbeat request from an already-in-error task);" in str(
        cluster.as_worker_lost(heartbeat, _two_worker_strategy())
    )
    # A bug of the user's is not reported as a lost worker, nor is anything off a cluster.
    assert cluster.as_worker_lost(tf.errors.InvalidArgumentError(None, None, "bad shape"), _two_worker_strategy()) is None
    assert cluster.as_worker_lost(aborted, tf.distribute.get_strategy()) is None


def test_a_launched_task_hears_from_the_launcher_when_a_peer_died(monkeypatch):
    told: list[str] = []
    monkeypatch.delenv(cluster.LAUNCHER_CHANNEL, raising=False)
    assert cluster.watch_launcher(told.append) is None  # not started by trainkit launch
    news, launcher = os.pipe()
    os.write(launcher, b"hello\npeer-lost worker 1 was killed by SIGKILL\n")
    os.close(launcher)
    monkeypatch.setenv(cluster.LAUNCHER_CHANNEL, str(news))
    cluster.watch_launcher(told.append).join(timeout=10)
    assert told == ["worker 1 was killed by SIGKILL"]  # other lines are not news of a death
    assert cluster.LAUNCHER_CHANNEL not in os.environ  # (the processes it starts have no such pipe)


# A task of a launched job (no TensorFlow): worker 1 fails, worker 0 waits as if in a collective.
_TASK = """
import json, os, pathlib, signal, sys, time
sys.path.insert(0, sys.argv[1])
from trainkit.distribution import cluster
ready = pathlib.Path(sys.argv[3])
if json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 1:
    while not ready.exists():
        time.sleep(0.05)
    time.sleep(120 if sys.argv[2] == "stopping" else 0)  # then fails at once, or when asked to stop
    sys.exit(3)
signal.signal(signal.SIGTERM, lambda *_: print("asked to stop", flush=True))  # a training records it

def told(why):
    print("told:", why, flush=True)
    time.sleep(1)  # (as a training reports it: any SIGTERM sent meanwhile shows)
    os._exit(4)

cluster.watch_launcher(told)
ready.touch()
print("training", flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("stopping", [False, True], ids=["training", "stopping on Ctrl-C"])
def test_the_launcher_tells_the_other_tasks_at_once_when_one_fails(tmp_path, stopping):
    from trainkit import launch
    from trainkit.signals import SignalRecorder

    script = tmp_path / "task.py"
    script.write_text(_TASK)
    tasks, said, stop = plan_cluster(2, parameter_server=False), [], SignalRecorder()

    def press_ctrl_c_once_training() -> None:  # the launcher then asks every task to stop (SIGTERM)
        while "[worker 0] training" not in said:
            time.sleep(0.05)
        stop.signum = signal.SIGINT

    if stopping:
        threading.Thread(target=press_ctrl_c_once_training, daemon=True).start()
    mode = "stopping" if stopping else "training"
    command = [sys.executable, str(script), str(ROOT), mode, str(tmp_path / "worker-0-ready")]
    try:
        code = launch._run_tasks(tasks, command, said.append, stop, None, parameter_server=False)
    finally:
        launch._close_channels(tasks)
    for task in tasks:
        task.reader.join(timeout=10)
    why = "was killed by SIGTERM" if stopping else "exited with code 3"
    assert code == (128 + signal.SIGINT if stopping else 3)
    assert stopping or f"[launch] worker 1 {why}; stopping the other tasks" in said
    # Worker 0 was told why, and stopped by itself: it was not killed at the end of the grace period.
    assert f"[worker 0] told: worker 1 {why}" in said, "\n".join(said)
    assert tasks[0].process.returncode == 4
    # Once told, it was not also asked to save and stop (which needs its dead peer): a SIGTERM
    # there would end a training as it writes its status (SIGTERM's default, once the training
    # has stopped recording it). Asked only when the job was stopping anyway.
    assert ("[worker 0] asked to stop" in said) == stopping


def _two_worker_strategy():
    """What ``is_multi_worker`` reads of a MultiWorkerMirroredStrategy on two workers."""
    import tensorflow as tf

    class TwoWorkerStrategy:
        cluster_resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec({"worker": ["127.0.0.1:1", "127.0.0.1:2"]}), task_type="worker", task_id=0
        )

    return TwoWorkerStrategy()


def _run_json_text(run_dir: Path) -> str:
    """A run's run.json (its ``error`` holds TensorFlow's whole message), for a failure's output."""
    path = run_dir / "run.json"
    return "\nrun.json: " + path.read_text() if path.exists() else ""


@pytest.mark.slow
def test_a_killed_worker_fails_the_job_quickly_and_a_restart_resumes(tmp_path):
    env = checkout_env(_env(tmp_path))
    args = [
        "digits_mlp", "--run-dir", "run", "trainer.epochs=null", "trainer.checkpoint.every_steps=50",
        "trainer.steps_per_execution=10", "trainer.log_every_steps=1000",
    ]
    log = tmp_path / "launch.log"
    with open(log, "w") as out:
        job = subprocess.Popen(
            [sys.executable, "-m", "trainkit.cli", "launch", "-n", "2", *args, "trainer.steps=100000"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    checkpoints = tmp_path / "run" / "checkpoints"

    def newest_checkpoint() -> int:
        return max(kept_steps(checkpoints), default=0)

    def wait_for_a_checkpoint_after(step: int) -> int:
        deadline = time.monotonic() + 180
        while newest_checkpoint() <= step:
            assert job.poll() is None, log.read_text()[-3000:] + _run_json_text(tmp_path / "run")
            assert time.monotonic() < deadline, f"no checkpoint after step {step} within 180 s"
            time.sleep(0.2)
        return newest_checkpoint()

    def pid_of(worker: int) -> int:
        line = next(x for x in log.read_text().splitlines() if f"[launch] worker {worker}: pid" in x)
        return int(line.split("pid ")[1].split(",")[0])

    try:
        first = wait_for_a_checkpoint_after(0)
        # A worker stalled for longer than TensorFlow's default heartbeat timeout (10 s) -- a
        # loaded machine, a paused VM -- does not end the job: it goes on once the stall ends.
        os.kill(pid_of(0), signal.SIGSTOP)  # worker 0 also hosts the coordination service
        time.sleep(12)
        os.kill(pid_of(0), signal.SIGCONT)
        wait_for_a_checkpoint_after(first)
        os.kill(pid_of(1), signal.SIGKILL)
        killed = time.monotonic()
        code = job.wait(timeout=120)
        stopped_after = time.monotonic() - killed
        print(f"the job stopped {stopped_after:.1f} s after the kill")
    finally:
        if job.poll() is None:
            job.kill()
    output = log.read_text()
    assert code != 0
    assert stopped_after < 60, f"the job took {stopped_after:.0f} s to stop"  # the documented bound
    assert "[launch] worker 1 was killed by SIGKILL; stopping the other tasks" in output
    # The survivor stopped with its own one clear line (exit code 4), not a traceback or a
    # hang: the launcher told it at once that its peer died (cluster.watch_launcher), and
    # its collective was aborted -- it does not wait for the coordination service's
    # heartbeats. run.json holds TensorFlow's whole error when it did not.
    run_json = tmp_path / "run" / "run.json"
    said = "[worker 0] error: lost contact with another task of the cluster" in output
    assert said, output[-4000:] + _run_json_text(tmp_path / "run")
    assert json.loads(run_json.read_text())["status"] == "failed"  # written by the survivor as it ended
    assert "the job failed" in output and "resume from the last checkpoint" in output
    assert "Traceback" not in output
    saved = newest_checkpoint()

    # The same job again (a shorter budget is an allowed change): it resumes and finishes.
    again = run_cli("launch", "-n", "2", *args, "trainer.steps=200", cwd=tmp_path, timeout=240, env=_env(tmp_path))
    assert again.returncode == 0, again.stdout[-3000:]
    assert f"[worker 0] resumed from run/checkpoints/ckpt-{saved} at step {saved}" in again.stdout
    # Worker 1 resumes from its scratch copy of the chief's checkpoints: the same step.
    assert re.search(rf"\[worker 1\] resumed from \S+/ckpt-{saved} at step {saved}", again.stdout)
    status = json.loads((tmp_path / "run" / "run.json").read_text())
    assert status["status"] == "completed" and status["step"] == 200 and len(status["resumed_at"]) == 1


# ------------------------------------------------------------------ parameter server


@pytest.mark.slow
def test_parameter_server_with_one_worker_equals_one_process_and_resumes_from_its_checkpoint(tmp_path):
    # Asynchronous training has no race with one worker: the same stream, the same updates.
    # A cluster inside one process (a worker and a ps server beside the chief), run twice:
    # 40 steps, then the same run given 80, which resumes from its final checkpoint.
    env = checkout_env()
    env.pop("TF_CONFIG", None)

    def cluster_run(steps: int) -> tuple[str, dict]:
        result = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "_ps_in_process.py"), "ps", *EXACT, f"trainer.steps={steps}"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        line = next(x for x in result.stdout.splitlines() if x.startswith("METRICS "))
        return result.stdout, json.loads(line[len("METRICS "):])

    def one_process(steps: int):
        overrides = [*EXACT, f"trainer.steps={steps}", "runtime.strategy=one_device", "trainer.progress=false"]
        return trainkit.train(trainkit.load_recipe("digits_mlp", overrides=overrides), run_dir=tmp_path / f"one-{steps}")

    for steps in (40, 80):
        out, metrics = cluster_run(steps)
        assert "ParameterServerStrategy (1 worker, 1 parameter server, asynchronous)" in out
        if steps == 80:
            assert "resumed from ps/checkpoints/ckpt-40 at step 40" in out
        assert json.loads((tmp_path / "ps" / "run.json").read_text())["step"] == steps
        one = one_process(steps)
        for a, b in zip(_weights(tmp_path / "ps" / "model.keras"), _weights(one.run_dir / "model.keras"), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=0, err_msg=f"after {steps} steps")
        ps_eval = json.loads((tmp_path / "ps" / "eval.json").read_text())
        for split in ("validation", "test"):
            assert ps_eval[split] == pytest.approx(one.metrics[split], rel=1e-5) == metrics[split]


@pytest.mark.slow
def test_launch_runs_a_parameter_server_recipe_with_chief_workers_and_ps(tmp_path):
    result = run_cli(
        "launch", "-n", "2", "digits_mlp", "runtime.strategy=parameter_server", "trainer.epochs=6",
        "--run-dir", "run", cwd=tmp_path, timeout=240, env=_env(tmp_path),
    )
    assert result.returncode == 0, result.stdout[-3000:]
    for name in ("chief", "worker 0", "worker 1", "ps 0"):
        assert f"[launch] {name}: pid" in result.stdout
    assert "[chief] training digits_mlp" in result.stdout
    assert "ParameterServerStrategy (2 workers, 1 parameter server, asynchronous)" in result.stdout
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["test"]["accuracy"] >= 0.85
