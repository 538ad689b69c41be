"""Distribution: the strategy a runtime section names, the cluster, and each process's role.

:func:`make_strategy` turns ``runtime.strategy`` into a ``tf.distribute.Strategy``
and fails fast -- one :class:`~trainkit.errors.ConfigError` line, before any
training -- when the hardware or the cluster it needs is missing: no TF_CONFIG
for ``multi_worker_mirrored``, no ``ps``/``chief`` task for
``parameter_server``, no TPU for ``tpu``. (A TPU that is not there must not be
waited for: TensorFlow's resolver would query Google Cloud metadata and retry.)

A cluster is read from ``TF_CONFIG`` (what ``trainkit launch`` sets for local
workers, and what Kubernetes or any scheduler sets on each machine), or from a
cluster resolver handed to :func:`set_cluster_resolver` (Slurm, GCE, or
``SimpleClusterResolver`` in tests).

Every worker of ``multi_worker_mirrored`` runs the same loop in lock step, so
anything that involves a collective (reading a metric, saving a checkpoint,
the number of steps in a call) must happen on all of them in the same order.
Decisions a worker takes from its own clock or its own signals are therefore
agreed on first (:class:`Consensus`). :class:`Role` says who writes the run
directory: only the chief.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainkit.errors import ConfigError, TrainkitError
from trainkit.recipe import DataSection, Recipe, RuntimeSection
from trainkit.training.sinks import say

if TYPE_CHECKING:
    from trainkit.training.run_dir import RunDir

#: The docs that show how to describe a cluster.
DOCS = "docs/distributed.md"

#: How long a parameter-server or worker task keeps serving once its chief is
#: unreachable, before it concludes that the job is over and exits.
CHIEF_GONE_SECONDS = 10.0

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


# --------------------------------------------------------------------------- cluster


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


def _resolver(info: ClusterInfo):
    import tensorflow as tf

    if _resolver_override is not None:
        return _resolver_override
    return tf.distribute.cluster_resolver.TFConfigClusterResolver()


# -------------------------------------------------------------------------- strategies


def make_strategy(runtime: RuntimeSection) -> Any:
    """The ``tf.distribute.Strategy`` of a runtime section (create it before any other op)."""
    import tensorflow as tf

    kind = runtime.strategy
    if kind == "auto":
        if runtime.tpu or _local_tpus():
            return _tpu_strategy(runtime)
        gpus = _gpus()
        if len(gpus) > 1:
            return tf.distribute.MirroredStrategy(gpus)
        return _one_device(gpus)
    if kind == "one_device":
        return _one_device(_gpus())
    if kind == "mirrored":
        return _mirrored(runtime)
    if kind == "multi_worker_mirrored":
        return _multi_worker(runtime)
    if kind == "parameter_server":
        return _parameter_server(runtime)
    if kind == "tpu":
        return _tpu_strategy(runtime)
    raise ConfigError(f"runtime.strategy: unknown strategy '{kind}'")  # the schema prevents this


def _one_device(gpus: list[str]) -> Any:
    """One GPU pinned by OneDeviceStrategy; without a GPU, TensorFlow's default strategy.

    Measured here (TF 2.21, 2-core CPU): a small convnet trained at about 9
    steps/s under ``OneDeviceStrategy("/cpu:0")`` and about 16 under the default
    strategy, and once a process had trained under the former, everything it
    trained afterwards stayed at the slower speed. The default strategy offers
    everything the loop uses (scope, run, replica all-reduce, distributed
    datasets), so on a CPU there is nothing to gain from the other.
    """
    import tensorflow as tf

    if gpus:
        return tf.distribute.OneDeviceStrategy(gpus[0])
    return tf.distribute.get_strategy()


def _gpus() -> list[str]:
    import tensorflow as tf

    return [d.name for d in tf.config.list_logical_devices("GPU")]


def _cpus() -> list[str]:
    import tensorflow as tf

    return [d.name for d in tf.config.list_logical_devices("CPU")]


def _local_tpus() -> list:
    import tensorflow as tf

    return tf.config.list_physical_devices("TPU")


def _mirrored(runtime: RuntimeSection):
    import tensorflow as tf

    gpus, cpus = _gpus(), _cpus()
    devices = gpus or cpus[: runtime.cpu_devices or len(cpus)]
    return tf.distribute.MirroredStrategy(
        devices, cross_device_ops=None if gpus else tf.distribute.ReductionToOneDevice()
    )


def _multi_worker(runtime: RuntimeSection):
    import tensorflow as tf

    info = cluster_info()
    if info is None:
        raise ConfigError(
            "runtime.strategy: multi_worker_mirrored needs a cluster, but TF_CONFIG is not set; "
            f"start local workers with `trainkit launch -n N RECIPE`, or set TF_CONFIG on each machine ({DOCS})"
        )
    if "ps" in info.cluster:
        raise ConfigError(
            "runtime.strategy: multi_worker_mirrored, but the cluster has 'ps' tasks (a parameter-server "
            "cluster); use runtime.strategy=parameter_server or drop the ps tasks"
        )
    if info.task_type not in ("worker", "chief"):
        raise ConfigError(
            f"runtime.strategy: multi_worker_mirrored runs on 'worker' and 'chief' tasks; this is a "
            f"'{info.task_type}' task"
        )
    implementation = {
        "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
        "ring": tf.distribute.experimental.CommunicationImplementation.RING,
        "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
    }[runtime.communication]
    if runtime.communication == "nccl" and not tf.config.list_physical_devices("GPU"):
        raise ConfigError("runtime.communication: nccl needs GPUs and this machine has none; use auto or ring")
    options = tf.distribute.experimental.CommunicationOptions(implementation=implementation)
    return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=_resolver(info), communication_options=options)


def _parameter_server(runtime: RuntimeSection):
    import tensorflow as tf

    info = cluster_info()
    if info is None:
        raise ConfigError(
            "runtime.strategy: parameter_server needs a cluster with chief, worker and ps tasks, but "
            f"TF_CONFIG is not set; start one locally with `trainkit launch -n N RECIPE` ({DOCS})"
        )
    missing = [t for t in ("chief", "worker", "ps") if not info.cluster.get(t)]
    if missing:
        raise ConfigError(
            f"runtime.strategy: parameter_server needs 'chief', 'worker' and 'ps' tasks in the cluster; "
            f"{info.source} has {', '.join(sorted(info.cluster))} (missing: {', '.join(missing)})"
        )
    if info.task_type != "chief":
        raise ConfigError(
            f"runtime.strategy: parameter_server trains on the chief; this is '{info.name}', which only "
            "serves (trainkit train does that by itself on worker and ps tasks)"
        )
    # Let the coordinator, not gRPC, handle an unreachable worker (TensorFlow's advice).
    os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
    strategy = tf.distribute.ParameterServerStrategy(_resolver(info))
    tf.distribute.coordinator.ClusterCoordinator(strategy)  # one per strategy; kept on it
    return strategy


def _tpu_strategy(runtime: RuntimeSection):
    """TPUStrategy, after checking the TPU is there (never wait for one that is not)."""
    import tensorflow as tf

    name = runtime.tpu or "local"
    if name == "local":
        if not _local_tpus():
            raise ConfigError(
                "runtime.strategy: tpu, but this machine has no TPU devices; set runtime.tpu to a TPU "
                "name or grpc://HOST:PORT address, or use one_device, mirrored or auto"
            )
        tpu_arg = "local"
    elif name.startswith("grpc://"):
        host, _, port = name[len("grpc://") :].rpartition(":")
        if not port.isdigit() or not _reachable(host or "localhost", int(port), timeout=3.0):
            raise ConfigError(f"runtime.tpu: no TPU answers at {name} (nothing listens there); check the address")
        tpu_arg = name
    else:
        # A Cloud TPU name is resolved through the GCE metadata server, which
        # TensorFlow asks without a timeout: ask it first, briefly.
        if not _gce_metadata_answers(timeout=2.0):
            raise ConfigError(
                f"runtime.tpu: '{name}' is a Cloud TPU name, which only resolves on Google Cloud "
                "(no metadata server answers here); use grpc://HOST:PORT for a TPU reachable from here"
            )
        tpu_arg = name
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_arg)
        if tpu_arg != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    except Exception as err:  # (resolvers raise URLError, KeyError, ValueError, OpError, ...)
        first = (getattr(err, "message", None) or str(err)).strip().splitlines()
        raise ConfigError(f"runtime.tpu: cannot use TPU '{name}': {first[0] if first else type(err).__name__}") from None


def _gce_metadata_answers(*, timeout: float) -> bool:
    """Whether the GCE metadata server (where Cloud TPU names resolve) answers."""
    import urllib.request

    endpoint = os.environ.get("GCE_METADATA_HOST") or os.environ.get("GCE_METADATA_IP", "metadata.google.internal")
    request = urllib.request.Request(
        f"http://{endpoint}/computeMetadata/v1/project/project-id", headers={"Metadata-Flavor": "Google"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def _reachable(host: str, port: int, *, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def is_tpu(strategy) -> bool:
    return type(strategy).__name__.startswith("TPUStrategy")


def is_parameter_server(strategy) -> bool:
    return type(strategy).__name__.startswith("ParameterServerStrategy")


def is_multi_worker(strategy) -> bool:
    """Several processes run the loop in lock step (multi_worker_mirrored on 2+ workers)."""
    return not is_parameter_server(strategy) and _tasks(strategy, "chief", "worker") > 1


def _tasks(strategy, *task_types: str) -> int:
    """How many tasks of these types the strategy's cluster has (0 without a cluster)."""
    resolver = None if is_tpu(strategy) else getattr(strategy, "cluster_resolver", None)
    if resolver is None:  # (a TPU resolver's cluster is the TPU's hosts, never workers of ours)
        return 0
    spec = resolver.cluster_spec().as_dict()
    return sum(len(spec.get(task_type, [])) for task_type in task_types)


def coordinator(strategy) -> Any:
    """The ``ClusterCoordinator`` of a parameter-server strategy."""
    import tensorflow as tf

    return tf.distribute.coordinator.ClusterCoordinator(strategy)


def num_workers(strategy) -> int:
    """The worker processes that train: a parameter server's workers, or every
    worker (and chief) of multi_worker_mirrored; 1 on one process."""
    if is_parameter_server(strategy):
        return _tasks(strategy, "worker")
    return max(1, _tasks(strategy, "chief", "worker"))


def describe(strategy) -> str:
    """``MultiWorkerMirroredStrategy (2 workers, 2 replicas)`` and the like."""
    replicas = strategy.num_replicas_in_sync
    parts = []
    workers = num_workers(strategy)
    if workers > 1 or is_multi_worker(strategy) or is_parameter_server(strategy):
        parts.append(f"{workers} worker{'s' if workers != 1 else ''}")
    if is_parameter_server(strategy):
        ps = _tasks(strategy, "ps")
        parts.append(f"{ps} parameter server{'s' if ps != 1 else ''}, asynchronous")
    else:
        parts.append(f"{replicas} replica{'s' if replicas != 1 else ''}")
    return f"{strategy_name(strategy)} ({', '.join(parts)})"


def strategy_name(strategy) -> str:
    """The public name of a strategy (TensorFlow's classes have internal names)."""
    name = type(strategy).__name__
    if name.startswith("CollectiveAllReduceStrategy"):
        return "MultiWorkerMirroredStrategy"
    if name.startswith("ParameterServerStrategy"):
        return "ParameterServerStrategy"
    if name.startswith("TPUStrategy"):
        return "TPUStrategy"
    if name == "_DefaultDistributionStrategy":
        return "one device (CPU, TensorFlow's default strategy)"
    return name


# ------------------------------------------------------------------------------ roles


@dataclass(frozen=True)
class Role:
    """What this process does in a run: the chief writes the run directory."""

    is_chief: bool = True
    task_type: str | None = None
    task_id: int = 0

    @property
    def name(self) -> str:
        return f"{self.task_type}-{self.task_id}" if self.task_type else "chief"


def role(strategy) -> Role:
    """This process's role under ``strategy`` (everything single-process is the chief)."""
    if not is_multi_worker(strategy):
        return Role()
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    chief = task_type == "chief" or (not has_chief and task_type == "worker" and task_id == 0)
    return Role(chief, task_type, task_id)


def serve_if_server_task(runtime: RuntimeSection) -> bool:
    """On a parameter-server cluster's worker or ps task: serve until the chief is gone.

    Returns False (at once) on every other process. Worker and ps tasks run no
    loop of their own: the chief's coordinator sends them work. They exit once
    the chief has been unreachable for :data:`CHIEF_GONE_SECONDS`, so a job
    (a Kubernetes Indexed Job, ``trainkit launch``) ends when its chief does.
    """
    if runtime.strategy != "parameter_server":
        return False
    info = cluster_info()
    if info is None or info.task_type not in ("worker", "ps"):
        return False
    import tensorflow as tf

    os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
    server = tf.distribute.Server(
        tf.train.ClusterSpec(info.cluster), job_name=info.task_type, task_index=info.task_id, protocol="grpc", start=True
    )
    say(f"{info.name} serving at {info.address} for the parameter-server chief")
    chief = info.cluster["chief"][0]
    host, _, port = chief.rpartition(":")
    seen, gone_since = False, None
    while True:
        time.sleep(1.0)
        if _reachable(host, int(port), timeout=1.0):
            seen, gone_since = True, None
        elif seen:
            gone_since = gone_since or time.monotonic()
            if time.monotonic() - gone_since >= CHIEF_GONE_SECONDS:
                say(f"{info.name}: the chief at {chief} is gone; stopping")
                del server
                return True


# ------------------------------------------------------------------------- consensus


class Consensus:
    """Decisions all workers of a synchronous cluster must take together.

    On one process every method returns its arguments. Under
    ``multi_worker_mirrored`` one small all-reduce per call makes the workers
    agree: a flag is set if any worker set it (one worker's SIGTERM stops all of
    them at the same step, with a checkpoint), and a number is the chief's
    (steps per call are timed on each worker but must be the same everywhere).
    """

    def __init__(self, strategy):
        self.strategy = strategy
        self.active = is_multi_worker(strategy)
        self._fn = None

    def agree(self, *, chief_value: int, flags: tuple[bool, ...]) -> tuple[int, tuple[bool, ...]]:
        """``(the chief's value, each flag or-ed over workers)``."""
        if not self.active:
            return chief_value, tuple(bool(f) for f in flags)
        is_chief = role(self.strategy).is_chief
        values = [chief_value if is_chief else 0, *(1 if f else 0 for f in flags)]
        total = self._sum(values)
        return int(total[0]), tuple(t > 0 for t in total[1:])

    def same_everywhere(self, value: int) -> bool:
        """True when every worker passed the same ``value``."""
        if not self.active:
            return True
        n = num_workers(self.strategy)
        total = self._sum([value, value * value])
        return total[0] == n * value and total[1] == n * value * value

    def _sum(self, values: list[int]) -> list[int]:
        import tensorflow as tf

        strategy = self.strategy
        if self._fn is None:
            local = max(1, strategy.num_replicas_in_sync // num_workers(strategy))

            @tf.function
            def reduce_sum(v):
                per_replica = strategy.run(lambda: tf.identity(v))
                return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None) / local

            self._fn = reduce_sum
        out = self._fn(tf.constant(values, tf.float64)).numpy()
        return [int(round(x)) for x in out]


def check_same_start(strategy, step: int) -> None:
    """All workers must resume from the same step: the run directory must be shared."""
    if not Consensus(strategy).same_everywhere(step):
        raise ConfigError(
            f"the workers found different checkpoints to resume from (this one: step {step}); "
            "the run directory must be on storage every worker reads (a shared volume or a bucket)"
        )


# ------------------------------------------------------------------ batch and lr rules


def data_section_for(section: DataSection, strategy) -> DataSection:
    """The data section as ``strategy`` needs it: TPUs compile static shapes (full batches)."""
    if is_tpu(strategy):
        replicas = strategy.num_replicas_in_sync
        if section.batch_size % replicas:
            raise ConfigError(
                f"data.batch_size: {section.batch_size} does not divide among the TPU's {replicas} cores; "
                f"use a multiple of {replicas}"
            )
        if not section.drop_remainder:
            return section.model_copy(update={"drop_remainder": True})
    return section


def learning_rate(recipe: Recipe) -> float:
    """``optimizer.learning_rate``, scaled by ``runtime.scale_learning_rate``."""
    base = recipe.optimizer.learning_rate
    if recipe.runtime.scale_learning_rate == "linear":
        return base * recipe.data.batch_size / recipe.runtime.reference_batch_size
    return base


def batch_plan(recipe: Recipe, strategy) -> dict[str, Any]:
    """How the global batch is split: reported in the start header and run.json."""
    replicas = strategy.num_replicas_in_sync
    global_batch = recipe.data.batch_size
    per_replica = global_batch / replicas
    return {
        "strategy": describe(strategy),
        "workers": num_workers(strategy),
        "replicas": replicas,
        "global_batch": global_batch,
        "per_replica_batch": int(per_replica) if per_replica.is_integer() else round(per_replica, 3),
        "learning_rate": learning_rate(recipe),
        "learning_rate_rule": recipe.runtime.scale_learning_rate,
    }


# ------------------------------------------------------------------------------ faults


_LOST_ERRORS = ("UnavailableError", "DeadlineExceededError", "AbortedError", "CancelledError")


def as_worker_lost(err: BaseException, strategy) -> WorkerLost | None:
    """A one-line :class:`WorkerLost` for the errors a dead peer causes, else None."""
    if strategy is None or not (is_multi_worker(strategy) or is_parameter_server(strategy)):
        return None
    if type(err).__name__ not in _LOST_ERRORS:
        return None
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", getattr(err, "message", None) or str(err)).strip().splitlines()
    detail = text[0][:160].rstrip(" :") if text else type(err).__name__
    return WorkerLost(
        f"lost contact with another task of the cluster ({type(err).__name__}: {detail}); "
        "the job cannot continue -- restart it to resume from the last checkpoint"
    )


def writable_run_dir(directory: RunDir, role_: Role) -> RunDir:
    """Where this process writes: the run directory on the chief, a scratch one elsewhere.

    The other workers must still save checkpoints (saving reads variables
    through collectives), and write their own metrics and TensorBoard events;
    they go to a temporary directory that :func:`remove_scratch` deletes.
    """
    if role_.is_chief:
        return directory
    import tempfile

    from trainkit.training.run_dir import RunDir

    return RunDir(tempfile.mkdtemp(prefix=f"trainkit-{role_.name}-"))


def copy_checkpoints(shared: RunDir, scratch: RunDir) -> None:
    """Give a non-chief worker the chief's checkpoints to resume from.

    Every worker then runs the same restore (the same damaged checkpoints
    skipped, the same best value read back), so their later save decisions,
    which are collective under multi-worker strategies, stay in step. Files the
    chief moves aside while this copies are skipped: the chief skips them too.
    """
    import shutil

    source = shared.checkpoints
    if not source.is_dir():
        return
    for path in source.rglob("*"):
        relative = path.relative_to(source)
        if relative.parts[0] == "corrupt" or not path.is_file():
            continue
        target = scratch.checkpoints / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(path, target)
        except FileNotFoundError:
            continue


def remove_scratch(directory: RunDir, role_: Role) -> None:
    if not role_.is_chief:
        import shutil

        shutil.rmtree(directory.path, ignore_errors=True)


def in_one_process(recipe: Recipe) -> Recipe:
    """``recipe`` with a cluster strategy replaced by ``auto``: for one-process commands
    (``trainkit eval``) on the run of a cluster, which needs no cluster to be read."""
    if recipe.runtime.strategy in ("multi_worker_mirrored", "parameter_server"):
        runtime = recipe.runtime.model_copy(update={"strategy": "auto"})
        return recipe.model_copy(update={"runtime": runtime})
    return recipe


def quiet(recipe: Recipe) -> Recipe:
    """A non-chief worker's copy of the recipe: progress off (the chief reports)."""
    return recipe.model_copy(update={"trainer": recipe.trainer.model_copy(update={"progress": False})})


def batch_text(recipe: Recipe, strategy) -> str:
    """``global batch 64 (32 per replica)`` for the start header, with the lr rule if any."""
    plan = batch_plan(recipe, strategy)
    text = f"global batch {plan['global_batch']} ({plan['per_replica_batch']} per replica)"
    if plan["learning_rate_rule"] == "linear":
        text += (
            f"; learning rate {plan['learning_rate']:g} (linear rule: {recipe.optimizer.learning_rate:g} "
            f"x {recipe.data.batch_size}/{recipe.runtime.reference_batch_size})"
        )
    return text
