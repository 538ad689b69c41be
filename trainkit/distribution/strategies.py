"""The strategy factory: one :func:`make_strategy` for every ``runtime.strategy``.

:func:`make_strategy` turns ``runtime.strategy`` into a ``tf.distribute.Strategy``
(as Model Garden's ``get_distribution_strategy``) and fails fast -- one
:class:`~trainkit.errors.ConfigError` line, before any training -- when the
hardware or the cluster it needs is missing: no TF_CONFIG for
``multi_worker_mirrored``, no ``ps``/``chief`` task for ``parameter_server``, no
TPU for ``tpu``. (A TPU that is not there must not be waited for: TensorFlow's
resolver would query Google Cloud metadata and retry.)
"""

from __future__ import annotations

import os
from typing import Any

from trainkit import compat
from trainkit.distribution.cluster import (
    CLUSTER_STRATEGIES,
    DOCS,
    HEARTBEAT_TIMEOUT_SECONDS,
    cluster_info,
    cluster_resolver,
    is_multi_worker,
    is_parameter_server,
    is_tpu,
    num_workers,
    reachable,
    task_count,
    watch_launcher,
)
from trainkit.errors import ConfigError, first_line
from trainkit.recipe import DataSection, Recipe, RuntimeSection


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
    resolver = cluster_resolver(info)
    compat.configure_worker_coordination(resolver.cluster_spec(), heartbeat_timeout_s=HEARTBEAT_TIMEOUT_SECONDS)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver, communication_options=options)
    watch_launcher(compat.abort_collectives)
    return strategy


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
    strategy = tf.distribute.ParameterServerStrategy(cluster_resolver(info))
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
        if not port.isdigit() or not reachable(host or "localhost", int(port), timeout=3.0):
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
        raise ConfigError(f"runtime.tpu: cannot use TPU '{name}': {first_line(err)}") from None


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


def coordinator(strategy) -> Any:
    """The ``ClusterCoordinator`` of a parameter-server strategy."""
    import tensorflow as tf

    return tf.distribute.coordinator.ClusterCoordinator(strategy)


def describe(strategy) -> str:
    """``MultiWorkerMirroredStrategy (2 workers, 2 replicas)`` and the like."""
    replicas = strategy.num_replicas_in_sync
    parts = []
    workers = num_workers(strategy)
    if workers > 1 or is_multi_worker(strategy) or is_parameter_server(strategy):
        parts.append(f"{workers} worker{'s' if workers != 1 else ''}")
    if is_parameter_server(strategy):
        ps = task_count(strategy, "ps")
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


def in_one_process(recipe: Recipe) -> Recipe:
    """``recipe`` with a cluster strategy replaced by ``auto``: for one-process commands
    (``trainkit eval``) on the run of a cluster, which needs no cluster to be read."""
    if recipe.runtime.strategy in CLUSTER_STRATEGIES:
        runtime = recipe.runtime.model_copy(update={"strategy": "auto"})
        return recipe.model_copy(update={"runtime": runtime})
    return recipe
