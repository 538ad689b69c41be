"""Test set-up: offline, quiet TensorFlow, two logical CPUs for MirroredStrategy.

The CPU is split into two logical devices before any TensorFlow op runs, so
in-process tests can compare ``mirrored`` (2 replicas) with ``one_device``.
"""

from __future__ import annotations

import os
import subprocess
import sys
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


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Each test runs in its own directory, so default run directories never collide."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRAINKIT_HOME", str(ROOT))


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """The uninterrupted checkpoint-test run that resumed runs are compared with."""
    from _checkpoint_helpers import reference_run

    return reference_run(tmp_path_factory)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """``trainkit ARGS`` in a subprocess, as a user runs it."""
    full_env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "TRAINKIT_HOME": str(ROOT),
        # The checkout under test, whatever is installed in the environment.
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "trainkit.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


#: The smallest training for tests that only need a run to exist.
TINY = ["trainer.epochs=null", "trainer.steps=3", "trainer.progress=false", "export.formats=[]"]


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The one error line of a command that refused its input: exit 2, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.startswith(("error:", "warning:", "note:"))]
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr[-2000:]
    return lines[0]
