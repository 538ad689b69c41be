"""The runtime section made real: devices, seeds, determinism, precision, strategy.

:func:`configure` must run before any other TensorFlow op of a run (datasets
included): logical CPU devices can only be set before TensorFlow initialises
its devices, and the global seed must be set before a dataset is built.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from trainkit import compat
from trainkit.compat import op_determinism_enabled
from trainkit.console import warn
from trainkit.errors import ConfigError
from trainkit.recipe import RuntimeSection
from trainkit.startup import quiet_tensorflow as quiet_tensorflow
from trainkit.startup import startup_noise_filtered as startup_noise_filtered

log = logging.getLogger(__name__)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def split_cpu(count: int) -> None:
    """Expose ``count`` logical CPU devices (MirroredStrategy on a CPU-only machine)."""
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    current = tf.config.get_logical_device_configuration(cpus[0])
    have = len(current) if current else 1
    if have >= count:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError:
        raise ConfigError(
            f"runtime.cpu_devices: {count} logical CPUs were asked for, but TensorFlow "
            f"already started with {len(tf.config.list_logical_devices('CPU'))} in this "
            "process; set it before any TensorFlow op runs (in a notebook: restart the kernel)"
        ) from None


_determinism_set_by_us = False


def _set_op_determinism(wanted: bool) -> None:
    """Op determinism for this run only.

    TensorFlow's switch is process-wide and sticky: a deterministic run in a
    notebook (or a test session) would otherwise leave every later run
    deterministic too, which forbids ``tf.timestamp`` and so the input-wait
    measurement. Only a switch trainkit turned on is turned off again; one the
    user set by hand stays as they left it.
    """
    global _determinism_set_by_us
    import tensorflow as tf

    if wanted:
        if not op_determinism_enabled():
            tf.config.experimental.enable_op_determinism()
            _determinism_set_by_us = True
    elif _determinism_set_by_us:
        compat.disable_op_determinism()
        _determinism_set_by_us = False


def configure(runtime: RuntimeSection, *, seed: int):
    """Apply the runtime section and return the ``tf.distribute.Strategy`` to use.

    The strategy comes first: MultiWorkerMirroredStrategy configures the
    collective ops of the eager context, which must happen before any other op.
    """
    quiet_tensorflow()
    import keras

    if runtime.cpu_devices:
        split_cpu(runtime.cpu_devices)
    from trainkit.distribution.strategies import make_strategy

    strategy = make_strategy(runtime)
    keras.utils.set_random_seed(seed)
    _set_op_determinism(runtime.deterministic)
    keras.mixed_precision.set_global_policy(runtime.precision)
    for warning in slow_option_warnings(runtime, strategy):
        warn(f"warning: {warning}")
    return strategy


#: Measured here (2-core Xeon with AMX, TF 2.21, digits_cnn, steady steps after
#: the first): how many times slower a training step ran with the option, on a CPU.
CPU_SLOWDOWN = {"mixed_float16": 150.0, "jit_compile": 11.0}


def slow_option_warnings(runtime: RuntimeSection, strategy) -> list[str]:
    """One line per chosen option that makes training slower on this hardware.

    float16 pays off only where the hardware computes in it (GPUs with tensor
    cores); a CPU emulates it, op by op. bfloat16 ran *faster* than float32
    here, on a CPU with bfloat16 instructions (AMX); without them it is
    emulated too. XLA compiled a small CNN slower than TensorFlow's own CPU
    kernels (oneDNN).
    """
    if not on_cpu(strategy):
        return []
    out = []
    if runtime.precision == "mixed_float16":
        out.append(
            f"runtime.precision=mixed_float16 on a CPU: a small CNN trained about {CPU_SLOWDOWN['mixed_float16']:.0f}x "
            "slower than with float32 here; use float32 (or mixed_bfloat16 on a CPU with AMX) unless a GPU runs this recipe"
        )
    if runtime.precision == "mixed_bfloat16" and not _cpu_has_bfloat16():
        out.append(
            "runtime.precision=mixed_bfloat16 on a CPU without bfloat16 instructions (avx512_bf16, amx_bf16): "
            "TensorFlow emulates it, slower than float32; use float32 unless a TPU or GPU runs this recipe"
        )
    if runtime.jit_compile:
        out.append(
            f"runtime.jit_compile=true on a CPU: a small CNN trained about {CPU_SLOWDOWN['jit_compile']:.0f}x slower "
            "than without XLA here; set runtime.jit_compile=false unless a GPU or TPU runs this recipe"
        )
    return out


def _cpu_has_bfloat16() -> bool:
    """Whether this CPU has bfloat16 instructions (True where that cannot be read)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # not Linux: say nothing rather than guess
    return "avx512_bf16" in flags or "amx_bf16" in flags


def on_cpu(strategy) -> bool:
    """Whether ``strategy`` computes on CPUs only (no GPU and not a TPU)."""
    import tensorflow as tf

    if type(strategy).__name__.startswith("TPUStrategy"):
        return False
    return not tf.config.list_logical_devices("GPU")


def leaves_process_as_it_was(function: Callable) -> Callable:
    """``function`` (which builds a recipe, and so applies its runtime section to the
    process) run with seeds, determinism, precision policy and Keras serializables
    restored after it (:func:`preserved_process_state`)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        quiet_tensorflow()
        with preserved_process_state():
            return function(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def preserved_process_state() -> Iterator[None]:
    """Run a block (a training) and leave the process's global state as it found it.

    :func:`configure` sets process-wide things (seeds, op determinism, the mixed
    precision policy); a notebook that trains one recipe and then another, or
    does its own work in between, should not inherit them. Keras serializables
    registered during the block are dropped again, except trainkit's own
    (registered once, when their module is first imported, and needed to load
    every model trainkit saves); Keras name scopes that a failure left open are
    closed (:func:`trainkit.compat.close_name_scopes_above`).
    """
    import random

    import keras
    import numpy as np
    import tensorflow as tf

    python_random, numpy_random = random.getstate(), np.random.get_state()
    seeds = compat.random_seed_state()
    policy = keras.mixed_precision.global_policy()
    deterministic = op_determinism_enabled()
    custom_objects = dict(keras.saving.get_custom_objects())
    scopes = compat.name_scope_depth()
    try:
        yield
    finally:
        compat.close_name_scopes_above(scopes)
        random.setstate(python_random)
        np.random.set_state(numpy_random)
        compat.restore_random_seed_state(seeds)
        keras.mixed_precision.set_global_policy(policy)
        if deterministic and not op_determinism_enabled():
            tf.config.experimental.enable_op_determinism()
        elif not deterministic:
            _restore_nondeterminism()
        registered = keras.saving.get_custom_objects()
        for name in [n for n in registered if n not in custom_objects and not n.startswith("trainkit>")]:
            del registered[name]


def _restore_nondeterminism() -> None:
    global _determinism_set_by_us
    if op_determinism_enabled():
        compat.disable_op_determinism()
    _determinism_set_by_us = False
