"""The cluster a process belongs to: ``TF_CONFIG`` (or a cluster resolver), each task's role.

A cluster is read from ``TF_CONFIG`` (what ``trainkit launch`` sets for local
workers, and what Kubernetes or any scheduler sets on each machine), or from a
cluster resolver handed to :func:`set_cluster_resolver` (Slurm, GCE, or
``SimpleClusterResolver`` in tests). :class:`Role` says who writes the run
directory: only the chief. Imports no TensorFlow at module level.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from trainkit.errors import ConfigError, TrainkitError, first_line

#: The docs that show how to describe a cluster.
DOCS = "docs/distributed.md"

#: The ``runtime.strategy`` values that span a cluster of processes.
CLUSTER_STRATEGIES = ("multi_worker_mirrored", "parameter_server")

#: How long the coordination service of a multi_worker_mirrored job waits for a
#: task's heartbeat before it declares the task dead and aborts the job. A task
#: sends one every half of it, with half of it as the call's deadline, so a task
#: may stall for about half of it. TensorFlow's default, 10 s, ended jobs whose
#: processes were only stalled for more than about 5 s (a loaded machine, a paused
#: VM; reproduced by stopping a worker for 12-14 s). A peer that really dies is
#: mostly noticed sooner: its connections are reset, and under ``trainkit launch``
#: the launcher tells the survivors (:data:`PEER_LOST`).
HEARTBEAT_TIMEOUT_SECONDS = 60.0

#: Set by ``trainkit launch`` in each task's environment: the number of a file
#: descriptor (a pipe) on which the launcher writes news of the job, a line each.
LAUNCHER_CHANNEL = "TRAINKIT_LAUNCHER_CHANNEL"

#: The launcher's message that another task of the job has died: ``peer-lost <why>``.
PEER_LOST = "peer-lost"

_resolver_override = None


class WorkerLost(TrainkitError):
    """Another task of the cluster died or became unreachable mid-run."""

    exit_code = 4


def set_cluster_resolver(resolver: Any | None) -> None:
    """Use ``resolver`` (any ``tf.distribute.cluster_resolver``) instead of TF_CONFIG.

    For clusters described by something other than TF_CONFIG (Slurm, GCE
    instance groups) and for in-process test clusters. ``None`` goes back to
    TF_CONFIG.
    """
    global _resolver_override
    _resolver_override = resolver


@dataclass(frozen=True)
class ClusterInfo:
    """The cluster a process belongs to and its own task in it."""

    cluster: dict[str, list[str]]
    task_type: str | None
    task_id: int
    source: str

    @property
    def num_workers(self) -> int:
        return len(self.cluster.get("worker", [])) + len(self.cluster.get("chief", []))

    @property
    def is_chief(self) -> bool:
        """The chief writes the run directory: ``chief``, else ``worker`` 0."""
        if "chief" in self.cluster:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_id == 0

    @property
    def address(self) -> str | None:
        tasks = self.cluster.get(self.task_type or "", [])
        return tasks[self.task_id] if self.task_id < len(tasks) else None

    @property
    def name(self) -> str:
        return f"{self.task_type} {self.task_id}"


def read_tf_config(environ: dict[str, str] | None = None) -> ClusterInfo | None:
    """The cluster in ``TF_CONFIG``, checked; ``None`` when it is unset or empty."""
    text = (environ if environ is not None else os.environ).get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
    except ValueError as err:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({err}); see {DOCS}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise ConfigError(f'TF_CONFIG has no "cluster" (a dict of task type -> addresses); see {DOCS}')
    for task_type, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(isinstance(a, str) and ":" in a for a in addresses):
            raise ConfigError(f'TF_CONFIG: cluster "{task_type}" must be a list of "host:port" strings')
    task = config.get("task") or {}
    task_type, task_id = task.get("type"), task.get("index", 0)
    if task_type is None:
        raise ConfigError(f'TF_CONFIG has no "task" (e.g. {{"type": "worker", "index": 0}}); see {DOCS}')
    if task_type not in cluster:
        raise ConfigError(f'TF_CONFIG: task type "{task_type}" is not in the cluster ({", ".join(cluster)})')
    if not isinstance(task_id, int) or not 0 <= task_id < len(cluster[task_type]):
        raise ConfigError(
            f'TF_CONFIG: task index {task_id!r} is out of range for "{task_type}" '
            f"({len(cluster[task_type])} task(s): 0..{len(cluster[task_type]) - 1})"
        )
    return ClusterInfo({k: list(v) for k, v in cluster.items()}, task_type, task_id, "TF_CONFIG")


def cluster_info() -> ClusterInfo | None:
    """This process's cluster: from :func:`set_cluster_resolver`, else TF_CONFIG."""
    if _resolver_override is not None:
        spec = _resolver_override.cluster_spec().as_dict()
        cluster = {k: list(v.values()) if isinstance(v, dict) else list(v) for k, v in spec.items()}
        return ClusterInfo(
            cluster, _resolver_override.task_type, int(_resolver_override.task_id or 0), "cluster resolver"
        )
    return read_tf_config()


def cluster_resolver(info: ClusterInfo):
    """The resolver TensorFlow's cluster strategies get for ``info``."""
    import tensorflow as tf

    if _resolver_override is not None:
        return _resolver_override
    return tf.distribute.cluster_resolver.TFConfigClusterResolver()


@dataclass(frozen=True)
class Role:
    """What this process does in a run: the chief writes the run directory."""

    is_chief: bool = True
    task_type: str | None = None
    task_id: int = 0

    @property
    def name(self) -> str:
        return f"{self.task_type}-{self.task_id}" if self.task_type else "chief"


def reachable(host: str, port: int, *, timeout: float) -> bool:
    """Whether something accepts a TCP connection at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# ------------------------------------------------- the cluster a strategy spans


def is_tpu(strategy) -> bool:
    return type(strategy).__name__.startswith("TPUStrategy")


def is_parameter_server(strategy) -> bool:
    return type(strategy).__name__.startswith("ParameterServerStrategy")


def is_multi_worker(strategy) -> bool:
    """Several processes run the loop in lock step (multi_worker_mirrored on 2+ workers)."""
    return not is_parameter_server(strategy) and task_count(strategy, "chief", "worker") > 1


def task_count(strategy, *task_types: str) -> int:
    """How many tasks of these types the strategy's cluster has (0 without a cluster)."""
    if is_tpu(strategy):  # (a TPU resolver's cluster is the TPU's hosts, never workers of ours)
        return 0
    if is_parameter_server(strategy):
        # Its cluster_resolver property is None (TF 2.21): the cluster is the one it was made from.
        info = cluster_info()
        spec = info.cluster if info is not None else {}
    else:
        resolver = getattr(strategy, "cluster_resolver", None)
        if resolver is None:
            return 0
        spec = resolver.cluster_spec().as_dict()
    return sum(len(spec.get(task_type, [])) for task_type in task_types)


def num_workers(strategy) -> int:
    """The worker processes that train: a parameter server's workers, or every
    worker (and chief) of multi_worker_mirrored; 1 on one process."""
    if is_parameter_server(strategy):
        return task_count(strategy, "worker")
    return max(1, task_count(strategy, "chief", "worker"))


def role(strategy) -> Role:
    """This process's role under ``strategy`` (everything single-process is the chief)."""
    if not is_multi_worker(strategy):
        return Role()
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    chief = task_type == "chief" or (not has_chief and task_type == "worker" and task_id == 0)
    return Role(chief, task_type, task_id)


_LOST_ERRORS = ("UnavailableError", "DeadlineExceededError", "AbortedError", "CancelledError")


def as_worker_lost(err: BaseException, strategy) -> WorkerLost | None:
    """A one-line :class:`WorkerLost` for the errors a dead peer causes, else None."""
    if strategy is None or not (is_multi_worker(strategy) or is_parameter_server(strategy)):
        return None
    if type(err).__name__ not in _LOST_ERRORS:
        return None
    detail = re.sub(r"\{\{[^}]*\}\}\s*", "", first_line(err))[:160].rstrip(" :")
    return WorkerLost(
        f"lost contact with another task of the cluster ({type(err).__name__}: {detail}); "
        "the job cannot continue -- restart it to resume from the last checkpoint"
    )


def watch_launcher(abort: Callable[[str], None], stream: IO[str] | None = None) -> threading.Thread | None:
    """Under ``trainkit launch``, call ``abort(why)`` when the launcher says a peer died.

    A worker blocked in a collective with a dead peer otherwise waits for the
    coordination service to miss the peer's heartbeats (:data:`HEARTBEAT_TIMEOUT_SECONDS`);
    the launcher sees the death at once. ``abort`` runs on a daemon thread reading
    the launcher's pipe (``stream`` in tests); returns that thread, or None outside
    a launched job. Once per process: the variable is taken out of the environment,
    so that processes this one starts do not look for a pipe they do not have.
    """
    channel = os.environ.pop(LAUNCHER_CHANNEL, None)
    if channel is None:
        return None
    if stream is None:
        try:
            os.set_inheritable(int(channel), False)
            stream = os.fdopen(int(channel), "r", encoding="utf-8", errors="replace")
        except (ValueError, OSError) as err:
            warnings.warn(f"{LAUNCHER_CHANNEL}={channel!r} is not an open pipe ({err}); not watching", stacklevel=2)
            return None
    thread = threading.Thread(target=_read_news, args=(stream, abort), name="trainkit-launcher-channel", daemon=True)
    thread.start()
    return thread


def _read_news(stream: IO[str], abort: Callable[[str], None]) -> None:
    try:
        for line in stream:  # until the launcher closes the pipe (or dies)
            word, _, why = line.strip().partition(" ")
            if word == PEER_LOST:
                abort(why or "another task of the job died")
    except Exception as err:  # a traceback from this thread would read as the training's
        warnings.warn(f"the launcher's news could not be acted on: {first_line(err)}", stacklevel=1)


def is_evaluator_task() -> bool:
    """Whether this process is the cluster's ``evaluator`` task (it evaluates
    checkpoints beside the training: :mod:`trainkit.sidecar`)."""
    info = cluster_info()
    return info is not None and info.task_type == "evaluator"


def has_evaluator() -> bool:
    """Whether the cluster this process belongs to has an ``evaluator`` task."""
    info = cluster_info()
    return info is not None and bool(info.cluster.get("evaluator"))
