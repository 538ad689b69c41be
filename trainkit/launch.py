"""``trainkit launch -n N RECIPE``: a local cluster of N workers, one job.

The launcher is how a multi-worker recipe is tried on one machine, and what
the tests use: it starts N ``trainkit train`` processes, each with a
``TF_CONFIG`` naming free loopback ports and its own task, and runs them as one
job:

- ``runtime.strategy`` becomes ``multi_worker_mirrored`` unless the recipe asks
  for ``parameter_server``, in which case the cluster is a chief (which trains),
  N workers and ``--ps`` parameter servers;
- every line a process prints is streamed with its name: ``[worker 1] ...``;
- if any process fails, the others are told at once (a worker waiting for the
  dead one in a collective aborts it and ends with one line) and stopped: the
  workers of a synchronous job stop by themselves, other tasks get SIGTERM, and
  whatever is still alive after :data:`STOP_GRACE_SECONDS` is killed; the
  launcher exits non-zero -- a job with a dead worker never hangs. Running the
  same command again resumes from the last checkpoint;
- Ctrl-C (or SIGTERM) is passed on to every process: the workers agree on a
  step, save a checkpoint there and stop;
- ``--evaluator`` adds an ``evaluator`` task: a sidecar that evaluates each
  checkpoint as the workers write it (:mod:`trainkit.sidecar`). It never stops
  the job: when it fails the training goes on, and when the training ends it
  finishes evaluating the last checkpoint before the job ends.

It imports no TensorFlow: the processes do. On a real cluster each machine runs
``trainkit train`` itself with its own TF_CONFIG (docs/distributed.md).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from trainkit import private_network
from trainkit.distribution.cluster import LAUNCHER_CHANNEL, PEER_LOST
from trainkit.errors import ConfigError
from trainkit.signals import SignalRecorder
from trainkit.training import sinks

#: After one process fails, how long the others get to stop by themselves. A
#: worker blocked in a collective learns of the death from the launcher at once
#: (``peer-lost`` on a pipe of its own: it aborts its collectives and ends with
#: its own one-line error and a final run.json status); this bounds the wait for
#: one that does not (stalled, or busy outside TensorFlow) before it is killed.
STOP_GRACE_SECONDS = 30.0


@dataclass
class Task:
    """One process of the local cluster."""

    task_type: str
    index: int
    address: str
    process: subprocess.Popen | None = None
    reader: threading.Thread | None = None
    lines: list[str] = field(default_factory=list)
    channel: int | None = None  # the write end of the pipe the task reads news of the job from

    @property
    def name(self) -> str:
        return "chief" if self.task_type == "chief" else f"{self.task_type} {self.index}"


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held open together, then released)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def plan_cluster(workers: int, *, parameter_server: bool, ps: int = 1, evaluator: bool = False) -> list[Task]:
    """The tasks of a local cluster, each on its own free loopback port."""
    if workers < 1:
        raise ConfigError(f"-n: the number of workers must be 1 or more, got {workers}")
    if parameter_server and ps < 1:
        raise ConfigError(f"--ps: a parameter-server cluster needs 1 or more ps tasks, got {ps}")
    kinds = [("chief", 1), ("worker", workers), ("ps", ps)] if parameter_server else [("worker", workers)]
    kinds += [("evaluator", 1)] if evaluator else []
    ports = iter(free_ports(sum(n for _, n in kinds)))
    return [Task(kind, i, f"127.0.0.1:{next(ports)}") for kind, n in kinds for i in range(n)]


def tf_config(tasks: Sequence[Task], task: Task) -> str:
    """The TF_CONFIG of ``task`` in the cluster ``tasks``."""
    cluster: dict[str, list[str]] = {}
    for t in tasks:
        cluster.setdefault(t.task_type, []).append(t.address)
    return json.dumps({"cluster": cluster, "task": {"type": task.task_type, "index": task.index}})


def launch(
    recipe: str,
    *,
    workers: int,
    configs: Sequence[str] = (),
    overrides: Sequence[str] = (),
    run_dir: str | None = None,
    restart: bool = False,
    ps: int = 1,
    evaluator: bool = False,
    out=None,
) -> int:
    """Run ``recipe`` on a local cluster; returns the job's exit code (0: every task succeeded)."""
    from trainkit.api import default_run_dir
    from trainkit.loader import load_recipe

    out = out or sys.stdout
    overrides = list(overrides)
    resolved = load_recipe(recipe, configs=list(configs), overrides=overrides)  # mistakes: exit 2, nothing started
    parameter_server = resolved.runtime.strategy == "parameter_server"
    if not parameter_server and resolved.runtime.strategy != "multi_worker_mirrored":
        overrides.append("runtime.strategy=multi_worker_mirrored")
    run_dir = str(run_dir or default_run_dir(resolved))
    tasks = plan_cluster(workers, parameter_server=parameter_server, ps=ps, evaluator=evaluator)
    command = [sys.executable, "-m", "trainkit.cli", "train", recipe]
    for config in configs:
        command += ["-c", config]
    command += [*overrides, "--run-dir", run_dir]
    if restart:
        command.append("--restart")

    lock = threading.Lock()

    def say(text: str) -> None:
        with lock:
            sinks.say(text, out)

    kind = "parameter-server cluster" if parameter_server else "multi-worker cluster"
    network, why_not = private_network.start()
    where = "127.0.0.1 in a private network (loopback only)" if network else "127.0.0.1"
    say(f"[launch] {resolved.name}: {kind} of {', '.join(_counts(tasks))} on {where}, run directory {run_dir}")
    if network is None:
        say(
            f"[launch] warning: {why_not}; TensorFlow's gRPC servers listen on every interface of this "
            "machine, without authentication: use it only on a trusted network (docs/security.md)"
        )
    stop = SignalRecorder()
    try:
        with stop:
            code = _run_tasks(tasks, command, say, stop, network, parameter_server=parameter_server)
    finally:
        if network is not None:
            network.close()
        _close_channels(tasks)
    for task in tasks:
        if task.reader:
            task.reader.join(timeout=5)
    return code


def _run_tasks(
    tasks: list[Task],
    command: list[str],
    say: Callable[[str], None],
    stop: SignalRecorder,
    network: private_network.PrivateNetwork | None,
    *,
    parameter_server: bool,
) -> int:
    """Start every task (each dies with the launcher, even by SIGKILL) and supervise the job."""
    preexec = network.join() if network else private_network.die_with_parent
    for task in tasks:
        news, task.channel = os.pipe()  # the launcher's channel to the task (cluster.watch_launcher)
        env = {
            **os.environ, "TF_CONFIG": tf_config(tasks, task), "PYTHONUNBUFFERED": "1", LAUNCHER_CHANNEL: str(news),
        }
        try:
            task.process = subprocess.Popen(
                command,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                pass_fds=(news,),
                text=True,
                bufsize=1,
                start_new_session=True,  # Ctrl-C reaches the launcher, which passes it on
                preexec_fn=preexec,  # noqa: PLW1509 - forked from the launcher's main thread
            )
        finally:
            os.close(news)  # the task's end: a task that ends closes the pipe
        task.reader = threading.Thread(target=_stream, args=(task, say), daemon=True)
        task.reader.start()
        say(f"[launch] {task.name}: pid {task.process.pid}, {task.address}")
    return _supervise(tasks, say, stop, parameter_server=parameter_server)


def _counts(tasks: Sequence[Task]) -> list[str]:
    counts: dict[str, int] = {}
    for t in tasks:
        counts[t.task_type] = counts.get(t.task_type, 0) + 1
    return [f"{n} {kind}{'s' if n != 1 and kind != 'ps' else ''}" for kind, n in counts.items()]


def _stream(task: Task, say) -> None:
    assert task.process is not None and task.process.stdout is not None
    for line in task.process.stdout:
        say(f"[{task.name}] {line.rstrip()}")


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _supervise(tasks: list[Task], say, stop: SignalRecorder, *, parameter_server: bool) -> int:
    """Wait for the job; stop everything when one task fails. Returns the job's exit code."""
    forwarded = False
    trainers = [t for t in tasks if t.task_type == "chief"] if parameter_server else tasks
    # The workers of a synchronous job act on the launcher's news of a death (cluster.watch_launcher).
    listening = [] if parameter_server else [t for t in tasks if t.task_type != "evaluator"]
    failed_while_stopping: list[Task] = []
    while True:
        if stop.signum is not None and not forwarded:
            say(f"[launch] {signal.Signals(stop.signum).name}: asking every task to save a checkpoint and stop")
            for t in tasks:
                _signal(t, signal.SIGTERM if t in trainers or t.task_type == "evaluator" else signal.SIGKILL)
            forwarded = True
        for task in tasks:
            code = task.process.poll()
            if task.task_type == "evaluator":
                continue  # a sidecar: its end never ends the job (see _end_of_job)
            if code is None or (code == 0 and task in trainers):
                continue
            if code == 0 and not forwarded:  # a ps/worker server that stopped while its chief trains
                say(f"[launch] {task.name} stopped before the chief finished")
                code = 1
            ended = f"{task.name} {_describe_exit(code)}"
            if forwarded:
                # A trainer that failed as the job stops (not 128 + SIGTERM: stopped as asked)
                # leaves the others waiting for it where they agree on the step to stop at.
                if task in trainers and code != 128 + signal.SIGTERM and task not in failed_while_stopping:
                    failed_while_stopping.append(task)
                    _tell_peer_lost(tasks, ended, exclude=task)
                continue
            say(f"[launch] {ended}; stopping the other tasks")
            _tell_peer_lost(tasks, ended, exclude=task)
            # Those told stop by themselves; a SIGTERM (save and stop, which needs the
            # dead peer) could only cut their exit short.
            _stop_all(tasks, say, exclude=task, told=listening)
            say(f"[launch] the job failed: {ended}; run the same command again to resume from the last checkpoint")
            return code if code > 0 else 128 - code
        if all(t.process.poll() is not None for t in trainers):
            return _end_of_job(tasks, trainers, say, stop, forwarded=forwarded)
        time.sleep(0.2)


def _end_of_job(tasks: list[Task], trainers: list[Task], say, stop: SignalRecorder, *, forwarded: bool) -> int:
    """The trainers have ended: stop the servers, let an evaluator finish its last checkpoints."""
    codes = [t.process.returncode for t in trainers]
    evaluators = [t for t in tasks if t.task_type == "evaluator"]
    others = [t for t in tasks if t not in trainers and t not in evaluators]
    _stop_all(others, say, exclude=None, quiet=True)
    if forwarded:
        _stop_all(evaluators, say, exclude=None, quiet=True)
        return 128 + (stop.signum or signal.SIGTERM)
    for task in evaluators:
        if task.process.poll() is None:
            say(f"[launch] training ended; {task.name} evaluates the last checkpoints")
        while task.process.poll() is None and stop.signum is None:
            time.sleep(0.2)
        _stop_all([task], say, exclude=None, quiet=True)
    bad = [c for c in codes if c != 0]
    if bad:
        return bad[0]
    failed = [t for t in evaluators if t.process.returncode != 0]
    if failed:
        say(f"[launch] the training completed, but {failed[0].name} {_describe_exit(failed[0].process.returncode)}")
        code = failed[0].process.returncode
        return code if code > 0 else 128 - code
    return 0


def _signal(task: Task, signum: int) -> None:
    if task.process and task.process.poll() is None:
        try:
            task.process.send_signal(signum)
        except ProcessLookupError:
            pass


def _close_channels(tasks: list[Task]) -> None:
    for task in tasks:
        if task.channel is not None:
            os.close(task.channel)
            task.channel = None


def _tell_peer_lost(tasks: list[Task], why: str, *, exclude: Task) -> None:
    """Tell every other live task that ``exclude`` died: a worker waiting in a
    collective for it then fails at once with ``why`` (cluster.watch_launcher)."""
    message = f"{PEER_LOST} {why}\n".encode()
    for t in tasks:
        if t is exclude or t.channel is None or t.process is None or t.process.poll() is not None:
            continue
        try:
            os.write(t.channel, message)  # one short line: never blocks on an empty pipe
        except OSError:  # it has just ended
            pass


def _stop_all(
    tasks: list[Task], say, *, exclude: Task | None, quiet: bool = False, told: Sequence[Task] = ()
) -> None:
    """SIGTERM every live task but those ``told`` of a peer's death (they stop by
    themselves), SIGKILL those still alive after the grace period."""
    alive = [t for t in tasks if t is not exclude and t.process.poll() is None]
    for t in alive:
        if t not in told:
            _signal(t, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline and any(t.process.poll() is None for t in alive):
        time.sleep(0.2)
    for t in alive:
        if t.process.poll() is None:
            if not quiet:
                say(f"[launch] {t.name} did not stop within {STOP_GRACE_SECONDS:g} s; killing it")
            t.process.kill()
            t.process.wait(timeout=10)


def main_for_cli(args: argparse.Namespace) -> int:
    """The ``trainkit launch`` command (see :mod:`trainkit.cli`)."""
    return launch(
        args.recipe,
        workers=args.workers,
        configs=args.config,
        overrides=args.overrides,
        run_dir=args.run_dir,
        restart=args.restart,
        ps=args.ps,
        evaluator=args.evaluator,
    )

