"""Test set-up: offline, quiet TensorFlow, two logical CPUs for MirroredStrategy.

The CPU is split into two logical devices before any TensorFlow op runs, so
in-process tests can compare ``mirrored`` (2 replicas) with ``one_device``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Nothing in the tests may reach the network.
os.environ["NO_GCE_CHECK"] = "true"
# A Cloud TPU name makes trainkit ask the GCE metadata server first: in tests that
# question goes to a closed loopback port, never off the machine.
os.environ["GCE_METADATA_HOST"] = "127.0.0.1:9"
os.environ["GCE_METADATA_IP"] = "127.0.0.1:9"
os.environ.setdefault("TFDS_DATA_DIR", "/nonexistent-tfds-data-dir")

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)


#: Wall seconds of each file's tests under xdist, (not marked slow, marked slow), for the files of 8 s or more.
#: ``make test`` hands whole files to its workers in collection order; sending the
#: heaviest of the selected part first leaves short files for the end, so that the
#: workers finish together instead of one working alone on a long file picked up last.
FILE_SECONDS = {
    "test_distribute.py": (20, 229), "test_exact_resume.py": (47, 159), "test_sweeps.py": (2, 166),
    "test_recipes.py": (16, 142), "test_sidecar.py": (73, 81), "test_docs.py": (0, 133),
    "test_finetune_hub.py": (0, 108), "test_text.py": (20, 85), "test_notebook.py": (45, 41),
    "test_training.py": (82, 0), "test_faults.py": (53, 21), "test_serving.py": (39, 34),
    "test_data_cli.py": (69, 0), "test_finetune.py": (45, 23), "test_text_tokenizers.py": (6, 47),
    "test_job_costs.py": (33, 18), "test_hardening_surfaces.py": (40, 9), "test_run_dir_rules.py": (15, 30),
    "test_checkpoints.py": (32, 8), "test_bad_input.py": (32, 1), "test_tracking.py": (8, 24),
    "test_timeseries.py": (1, 30), "test_data_pipeline.py": (23, 0), "test_data_batched_parse.py": (22, 0),
    "test_callback_parity.py": (20, 0), "test_compat.py": (20, 0), "test_runs.py": (20, 0),
    "test_data_cache.py": (20, 0), "test_hardening.py": (4, 14), "test_cli.py": (17, 0),
    "test_sequence_builders.py": (13, 0), "test_launch_security.py": (1, 12), "test_data_sources.py": (10, 0),
    "test_benchmarks.py": (8, 25),
}


def pytest_collection_modifyitems(config, items):
    selected = config.getoption("markexpr").replace(" ", "")
    part = {"notslow": (0,), "slow": (1,)}.get(selected, (0, 1))  # `make test`, `make test-slow`, else both
    seconds = {name: sum(both[i] for i in part) for name, both in FILE_SECONDS.items()}
    items.sort(key=lambda item: -seconds.get(item.path.name, 0))  # stable: file order kept otherwise


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Each test runs in its own directory, so default run directories never collide."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRAINKIT_HOME", str(ROOT))


@pytest.fixture(autouse=True)
def _leaves_the_process_as_it_was():
    """A test that leaves op determinism on or another precision policy fails itself:
    otherwise every later test in its worker runs changed (deterministic runs measure
    no input wait), and fails far from the cause."""
    import keras

    from trainkit.compat import disable_op_determinism, op_determinism_enabled

    yield
    leaked = {"op determinism": op_determinism_enabled(), "precision policy": keras.mixed_precision.global_policy().name}
    if leaked["op determinism"]:  # (put back first, so that only this test fails)
        disable_op_determinism()
    keras.mixed_precision.set_global_policy("float32")
    assert leaked == {"op determinism": False, "precision policy": "float32"}, "the test changed the process for the tests after it"


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """The uninterrupted checkpoint-test run that resumed runs are compared with."""
    from _checkpoint_helpers import reference_run

    return reference_run(tmp_path_factory)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """``trainkit ARGS`` in a subprocess, as a user runs it."""
    return _run_checkout([sys.executable, "-m", "trainkit.cli", *args], cwd, timeout, env)


def run_python(code: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -c CODE`` in a fresh interpreter that imports this checkout's trainkit."""
    return _run_checkout([sys.executable, "-c", code], cwd, timeout, env)


def checkout_env(extra: dict | None = None, *, quiet: bool = True) -> dict[str, str]:
    """The environment of a subprocess that runs this checkout's trainkit, whatever is
    installed; ``quiet``: TensorFlow's C++ log at level 3 (else as this process has it)."""
    env = {
        **os.environ,
        "TRAINKIT_HOME": str(ROOT),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    if quiet:
        env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return {**env, **(extra or {})}


def _run_checkout(command: list[str], cwd: Path | None, timeout: float, env: dict | None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=checkout_env(env))


#: Python's own warning filters, as a fresh ``python -m trainkit.cli`` has them.
_PROCESS_WARNING_FILTERS = [
    ("default", DeprecationWarning, "__main__"),
    ("ignore", DeprecationWarning, ""),
    ("ignore", PendingDeprecationWarning, ""),
    ("ignore", ImportWarning, ""),
    ("ignore", ResourceWarning, ""),
]


def cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """``trainkit ARGS`` through :func:`trainkit.cli.main` in this process.

    For tests of what a command does and says (exit code, output, files), not of
    the process itself: a subprocess pays a TensorFlow import (4 s on two idle
    cores, far more under load) on every call. The result reads like
    :func:`run_cli`'s: ``main``'s exit code (argparse's for ``--help`` and usage
    errors), stdout and stderr as a user's terminal would show them, Python
    warnings included. An exception that escapes ``main`` is what a process
    would print: a ``Traceback`` on stderr and exit 1. Tests of exit behaviour,
    signals, kills, environment at start-up or several processes keep
    :func:`run_cli`.
    """
    import contextlib
    import io
    import traceback
    import warnings

    from trainkit import cli as command_line

    command_line._STARTED = time.time()  # the "process" starts now: run.json's start-up phase is the command's own
    out, err = io.StringIO(), io.StringIO()
    saved_env = dict(os.environ)  # what the command sets in its environment ends with it, as with a process
    os.environ.update(env or {})
    try:
        with contextlib.chdir(cwd or os.getcwd()), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings():
            warnings.resetwarnings()
            for action, category, module in reversed(_PROCESS_WARNING_FILTERS):
                warnings.filterwarnings(action, category=category, module=module)
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
                warnings.formatwarning(message, category, filename, lineno, line)
            )
            try:
                code = command_line.main(list(args))
            except SystemExit as stop:  # argparse: --help, usage errors
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            except Exception:  # noqa: BLE001 -- what the process would have printed
                traceback.print_exc()
                code = 1
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["trainkit", *args], code, out.getvalue(), err.getvalue())


#: The smallest training for tests that only need a run to exist.
TINY = ["trainer.epochs=null", "trainer.steps=3", "trainer.progress=false", "export.formats=[]"]


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The one error line of a command that refused its input: exit 2, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.startswith(("error:", "warning:", "note:"))]
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr[-2000:]
    return lines[0]
