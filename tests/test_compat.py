"""Each shim of ``trainkit/compat.py`` still works on the installed TensorFlow and Keras.

Checked on TensorFlow 2.21 and Keras 3.15 (``compat.CHECKED_ON``). A failure
here after an upgrade names the private API that moved: fix that shim, and
only that module.
"""

from __future__ import annotations

import subprocess
import textwrap

import pytest
from conftest import run_python as run_checkout_python

from trainkit import compat


def run_python(code: str) -> subprocess.CompletedProcess:
    """``code`` (indented or not) in a fresh Python with this checkout's trainkit."""
    return run_checkout_python(textwrap.dedent(code), timeout=120)


def test_the_checked_versions_are_named_and_the_installed_ones_reported():
    import keras
    import tensorflow as tf

    assert compat.CHECKED_ON == {"tensorflow": "2.21", "keras": "3.15"}
    installed = {"tensorflow": tf.__version__, "keras": keras.__version__}
    print(f"compat shims checked on {compat.CHECKED_ON}; installed: {installed}")


def test_op_determinism_can_be_read_and_switched_off_again():
    code = """
        import tensorflow as tf
        from trainkit import compat
        assert compat.op_determinism_enabled() is False
        tf.config.experimental.enable_op_determinism()
        assert compat.op_determinism_enabled() is True
        compat.disable_op_determinism()
        assert compat.op_determinism_enabled() is False
        print("ok")
    """
    # In a child: op determinism is process-wide, and forbids tf.timestamp in later tests.
    result = run_python(code)
    assert result.stdout.strip() == "ok", result.stderr


def test_the_random_seed_state_round_trips():
    import keras
    import tensorflow as tf

    before = compat.random_seed_state()
    try:
        keras.utils.set_random_seed(1234)
        seeded = compat.random_seed_state()
        assert seeded[0] == 1234 and seeded[1] == 1234  # TensorFlow's and Keras's global seeds
        first = keras.random.uniform((3,), seed=keras.random.SeedGenerator(7))
        compat.restore_random_seed_state(before)
        compat.restore_random_seed_state(seeded)
        again = keras.random.uniform((3,), seed=keras.random.SeedGenerator(7))
        assert tf.reduce_all(first == again)
    finally:
        compat.restore_random_seed_state(before)
    assert compat.random_seed_state()[:2] == before[:2]


def test_keras_name_scopes_left_open_are_closed():
    import keras

    depth = compat.name_scope_depth()
    scope = keras.name_scope("left_open")
    scope.__enter__()  # (never exited, as when TensorFlow refuses the scope's name)
    assert compat.name_scope_depth() == depth + 1
    compat.close_name_scopes_above(depth)
    assert compat.name_scope_depth() == depth
    dense = keras.layers.Dense(1)
    dense.build((None, 2))
    assert dense.kernel.path == f"{dense.name}/kernel"


def test_a_pending_restore_of_a_child_is_forgotten(tmp_path):
    import keras
    import tensorflow as tf

    def model():
        inputs = keras.Input((2,))
        return keras.Model(inputs, keras.layers.Dense(1, name="d")(inputs))

    trained = model()
    trained.compile(optimizer="adam", loss="mse")
    trained.fit(tf.ones((4, 2)), tf.ones((4, 1)), verbose=0)  # the optimizer's moments are not 0
    path = tf.train.Checkpoint(model=trained).write(str(tmp_path / "ckpt"))
    restored = model()  # not compiled: the restore of its optimizer waits for one
    tf.train.Checkpoint(model=restored).restore(path).expect_partial()
    assert "optimizer" in restored._deferred_dependencies
    compat.forget_pending_restore(restored, "optimizer")
    assert "optimizer" not in restored._deferred_dependencies
    restored.compile(optimizer="adam", loss="mse")
    restored.optimizer.build(restored.trainable_variables)
    moments = [v for v in restored.optimizer.variables if "momentum" in v.path]
    assert moments and not any(v.numpy().any() for v in moments)


def test_a_function_is_frozen_with_its_variables_as_constants():
    import tensorflow as tf

    weight = tf.Variable([2.0, 3.0])
    function = tf.function(lambda x: x * weight, input_signature=[tf.TensorSpec([2], tf.float32)])
    frozen = compat.freeze_function(function.get_concrete_function())
    ops = {op.type for op in frozen.graph.get_operations()}
    assert "ReadVariableOp" not in ops and "Const" in ops
    assert frozen(tf.constant([1.0, 1.0]))[0].numpy().tolist() == [2.0, 3.0]


def test_exit_handlers_run_before_a_hard_exit():
    code = """
        import atexit, os
        from trainkit import compat
        atexit.register(lambda: print("handler ran", flush=True))
        compat.run_exit_handlers()
        os._exit(0)
    """
    result = run_python(code)
    assert result.stdout.strip() == "handler ran", result.stderr


@pytest.mark.parametrize(
    "component, section",
    [
        (lambda keras: keras.optimizers.Adam(beta_1="abc"), "optimizer"),
        (lambda keras: keras.losses.SparseCategoricalCrossentropy(), "loss"),
        (lambda keras: keras.metrics.Precision(), "metrics"),
    ],
)
def test_a_keras_components_source_file_names_its_recipe_section(component, section):
    import inspect

    import keras

    assert compat.keras_section_of(inspect.getfile(type(component(keras)))) == section
    assert compat.keras_section_of("/home/me/my_layers.py") is None


def test_all_sublayers_reaches_the_layers_a_subclassed_layer_keeps_as_attributes():
    import keras

    from trainkit.compat import all_sublayers

    class Outer(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.inner = keras.layers.Dense(3, name="hidden_projection")

        def call(self, x):
            return self.inner(x)

    inputs = keras.Input((4,))
    model = keras.Model(inputs, Outer()(inputs))
    names = [layer.name for layer in all_sublayers(model)]
    assert "hidden_projection" in names
    assert "hidden_projection" not in [layer.name for layer in model.layers]


def test_the_worker_coordination_service_is_configured_with_our_heartbeat_timeout():
    code = """
        import tensorflow as tf
        from trainkit import compat
        assert compat.coordination_config() is None
        spec = tf.train.ClusterSpec({"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2", "127.0.0.1:3"]})
        compat.configure_worker_coordination(spec, heartbeat_timeout_s=60)
        config = compat.coordination_config()
        assert config.heartbeat_timeout_in_ms == 60000 and config.service_type == "standalone"
        assert config.service_leader == "/job:chief/replica:0/task:0"
        assert [(job.name, job.num_tasks) for job in config.coordinated_job_list] == [("chief", 1), ("worker", 2)]
        compat.configure_worker_coordination(spec, heartbeat_timeout_s=5)  # configured once: kept
        assert compat.coordination_config().heartbeat_timeout_in_ms == 60000
        compat.abort_collectives("worker 1 was killed by SIGKILL")  # TensorFlow still takes the call
        print("ok")
    """
    # In a child: the coordination service is configured once per process.
    result = run_python(code)
    assert result.stdout.strip() == "ok", result.stderr
