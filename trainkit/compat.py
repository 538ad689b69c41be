"""The one home of the private TensorFlow, Keras and Python internals trainkit needs.

Each shim below stands in for a public API that does not exist (checked on
TensorFlow 2.21 and Keras 3.15; ``tests/test_compat.py`` checks each one on the
installed versions, so an upgrade that moves one fails there, by name).
Everything else in trainkit uses public APIs only
(``tests/test_no_private_internals.py`` enforces it).

Imported lazily by its callers: it imports TensorFlow and Keras inside each
function, so ``import trainkit.compat`` costs nothing.
"""

from __future__ import annotations

from typing import Any

#: The versions these shims were last checked on (``tests/test_compat.py`` names them).
CHECKED_ON = {"tensorflow": "2.21", "keras": "3.15"}


def op_determinism_enabled() -> bool:
    """Whether TensorFlow's op determinism is on (it has a public setter, no getter)."""
    try:
        from tensorflow.python.framework.config import is_op_determinism_enabled
    except ImportError:
        return False
    return bool(is_op_determinism_enabled())


def disable_op_determinism() -> None:
    """Turn TensorFlow's process-wide op determinism off (there is no public switch back)."""
    from tensorflow.python.framework import config as tf_config

    tf_config.disable_op_determinism()


def random_seed_state() -> tuple[Any, Any, Any]:
    """TensorFlow's global seed and Keras's global seed and seed generator, for
    :func:`restore_random_seed_state` (no public getter for any of them)."""
    from keras.src.backend.common import global_state
    from tensorflow.python.eager import context

    return (
        context.global_seed(),
        global_state.get_global_attribute("global_random_seed"),
        global_state.get_global_attribute("global_seed_generator"),
    )


def forget_pending_restore(trackable: Any, child: str) -> None:
    """Drop what a checkpoint restore left waiting for ``trackable``'s ``child`` (the
    values TensorFlow keeps for objects not created yet, matched when they are);
    TensorFlow has no public way to."""
    getattr(trackable, "_deferred_dependencies", {}).pop(child, None)


def name_scope_depth() -> int:
    """How many Keras name scopes are open (``keras.name_scope``'s stack, which has
    no public getter)."""
    from keras.src.backend.common import global_state

    return len(global_state.get_global_attribute("name_scope_stack") or [])


def close_name_scopes_above(depth: int) -> None:
    """Close the Keras name scopes opened above ``depth`` and left open. A scope
    whose TensorFlow half refused its name is pushed on Keras's stack and never
    popped; every variable made afterwards in the process then has its name in
    front of its path (Keras 3.15)."""
    from keras.src.backend.common import global_state

    stack = global_state.get_global_attribute("name_scope_stack")
    if stack:
        del stack[depth:]


def restore_random_seed_state(state: tuple[Any, Any, Any]) -> None:
    """Put back what :func:`random_seed_state` returned."""
    import tensorflow as tf
    from keras.src.backend.common import global_state

    tf_seed, keras_seed, keras_generator = state
    tf.random.set_seed(tf_seed)
    global_state.set_global_attribute("global_random_seed", keras_seed)
    global_state.set_global_attribute("global_seed_generator", keras_generator)


def freeze_function(concrete_function):
    """``concrete_function`` with its variables made constants (for ONNX conversion:
    tf2onnx turns captured variables into graph inputs otherwise)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    return convert_variables_to_constants_v2(concrete_function)


def configure_worker_coordination(cluster_spec: Any, *, heartbeat_timeout_s: float) -> None:
    """Configure the coordination service of a MultiWorkerMirroredStrategy cluster
    (a ``tf.train.ClusterSpec``; called on its chief and worker tasks only, as
    TensorFlow does) with ``heartbeat_timeout_s`` instead of TensorFlow's 10 s,
    before the strategy is made.

    TF 2.21's strategy configures the service itself (chief and worker tasks, the
    default timeout) only when none is configured yet, and takes no timeout. A
    process that stalls longer than the timeout -- a loaded machine, a paused VM --
    is declared dead and the whole job aborts ("Unexpected heartbeat request from an
    already-in-error task"); this widens that margin.
    """
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    if context.context().coordination_service is not None:
        return
    jobs = [
        coordination_config_pb2.CoordinatedJob(name=job, num_tasks=cluster_spec.num_tasks(job))
        for job in ("chief", "worker")
        if job in cluster_spec.jobs
    ]
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(cluster_spec),
        heartbeat_timeout_in_ms=int(heartbeat_timeout_s * 1000),
        coordinated_jobs=jobs,
    )


def coordination_config() -> Any:
    """This process's coordination service configuration (a ``CoordinationServiceConfig``
    proto), or None when none is configured yet."""
    from tensorflow.python.eager import context

    return context.context().coordination_service


def abort_collectives(message: str) -> None:
    """Make every collective op of this process, running or to come, fail at once with
    ``UnavailableError(message)``: what a worker does when told that a peer is gone,
    instead of waiting in a collective for the coordination service's heartbeats."""
    from tensorflow.python.eager import context
    from tensorflow.python.framework import errors

    context.context().abort_collective_ops(errors.UNAVAILABLE, message)


def run_exit_handlers() -> None:
    """Run the ``atexit`` handlers now (before ``os._exit``, which skips them)."""
    import atexit

    atexit._run_exitfuncs()


#: Where Keras keeps each kind of component's source (``keras/src/<part>/...``): a
#: traceback through one of them names the recipe section whose component failed.
KERAS_SOURCE_PARTS = (("/optimizers/", "optimizer"), ("/metrics/", "metrics"), ("/losses/", "loss"))


def keras_section_of(path: str) -> str | None:
    """The recipe section (``optimizer``, ``metrics``, ``loss``) whose Keras source
    file ``path`` is, or None: Keras's source layout, which no API describes."""
    path = path.replace("\\", "/")
    for part, section in KERAS_SOURCE_PARTS:
        if part in path:
            return section
    return None


def all_sublayers(layer) -> list[Any]:
    """Every layer inside ``layer``, however deep, the layers a subclassed layer keeps
    as attributes included (a KerasHub attention layer's query and value projections,
    which ``Model.layers`` does not list). Keras tracks them privately; KerasHub's own
    ``enable_lora`` walks the same list."""
    return list(layer._flatten_layers(include_self=False))
