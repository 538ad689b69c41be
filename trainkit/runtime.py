"""The runtime section made real: devices, seeds, determinism, precision, strategy.

:func:`configure` must run before any other TensorFlow op of a run (datasets
included): logical CPU devices can only be set before TensorFlow initialises
its devices, and the global seed must be set before a dataset is built.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from trainkit.errors import ConfigError
from trainkit.recipe import RuntimeSection

log = logging.getLogger(__name__)


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up chatter off the user's terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
        from tensorflow.python.framework import config as tf_config

        tf_config.disable_op_determinism()
        _determinism_set_by_us = False


def op_determinism_enabled() -> bool:
    """Whether TensorFlow's op determinism is on (it has a public setter, no getter)."""
    try:
        from tensorflow.python.framework.config import is_op_determinism_enabled
    except ImportError:
        return False
    return bool(is_op_determinism_enabled())


def configure(runtime: RuntimeSection, *, seed: int):
    """Apply the runtime section and return the ``tf.distribute.Strategy`` to use.

    The strategy comes first: MultiWorkerMirroredStrategy configures the
    collective ops of the eager context, which must happen before any other op.
    """
    quiet_tensorflow()
    import keras

    if runtime.cpu_devices:
        split_cpu(runtime.cpu_devices)
    from trainkit.distribute import make_strategy

    strategy = make_strategy(runtime)
    keras.utils.set_random_seed(seed)
    _set_op_determinism(runtime.deterministic)
    keras.mixed_precision.set_global_policy(runtime.precision)
    for warning in slow_option_warnings(runtime, strategy):
        print(f"warning: {warning}", file=sys.stderr, flush=True)
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
