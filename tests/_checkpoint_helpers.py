"""Shared pieces of the checkpoint tests: one small exact recipe, runs, weights.

A run that is killed, signalled or held is a real ``trainkit`` subprocess; the
others (the reference, a resume) run the same command in the test process.
``BASE`` is digits_cnn made exactly reproducible on CPU (deterministic ops;
Dropout and shuffling stay on), three epochs of 23 steps (69 steps), a
checkpoint every 10 steps, the best kept by validation accuracy, and a constant
learning rate (a cosine schedule's length depends on the budget; these tests
change nothing that it depends on anyway).
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from conftest import checkout_env

TESTS = Path(__file__).resolve().parent
STEPS = 69  # 3 epochs x 23 steps

BASE = [
    "digits_cnn",
    "-c",
    "digits_cnn_smoke",
    "runtime.deterministic=true",
    "optimizer.schedule=null",
    "trainer.epochs=3",
    "trainer.log_every_steps=5",
    "trainer.checkpoint.every_steps=10",
    "trainer.checkpoint.monitor=val_accuracy",
    # The smoke config is quiet, which silences resume notices too; these tests read them.
    "trainer.progress=true",
]

# TensorFlow's C++ start-up chatter, printed before any trainkit code runs.
_NOISE = re.compile(r"^(WARNING: All log messages before absl|[IWE]\d{4} \d\d:\d\d:\d\d)")


def command(*args: str, faults: tuple[str, ...] = ()) -> list[str]:
    if faults:
        return [sys.executable, str(TESTS / "_fault_runner.py"), *faults, "--", *args]
    return [sys.executable, "-m", "trainkit.cli", *args]


def train(run_dir: Path, *extra: str, faults: tuple[str, ...] = (), base: list[str] = BASE, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``trainkit train BASE --run-dir RUN_DIR EXTRA`` in a subprocess, with optional faults."""
    args = ["train", *base, "--run-dir", str(run_dir), *extra]
    return subprocess.run(command(*args, faults=faults), cwd=cwd or run_dir.parent, capture_output=True, text=True, timeout=300, env=checkout_env())


def train_here(run_dir: Path, *extra: str, base: list[str] = BASE, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The same command as :func:`train`, through ``trainkit.cli.main`` in this process.

    For the trainings whose process is not what a test is about: a reference run,
    a resume after a kill (the killed run was a process of its own; nothing of it
    is in this one), a refusal. Saves a TensorFlow import per training.
    """
    from conftest import cli

    return cli("train", *base, "--run-dir", str(run_dir), *extra, cwd=cwd or run_dir.parent)


def start(run_dir: Path, *extra: str, faults: tuple[str, ...] = (), base: list[str] = BASE) -> subprocess.Popen:
    args = ["train", *base, "--run-dir", str(run_dir), *extra]
    return subprocess.Popen(command(*args, faults=faults), cwd=run_dir.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=checkout_env())


def messages(stderr: str) -> list[str]:
    """The lines trainkit wrote to stderr (TensorFlow's start-up chatter left out)."""
    return [line for line in stderr.splitlines() if line.strip() and not _NOISE.match(line)]


def weights(run_dir: Path) -> dict[str, np.ndarray]:
    """Every array in ``model.keras``'s weights file, by its path in the file."""
    import h5py

    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(run_dir / "model.keras") as archive:
        data = archive.read("model.weights.h5")
    with h5py.File(io.BytesIO(data), "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert len(wa) >= 6  # conv, conv, dense, dense kernels and biases at least
    different = [k for k in wa if not np.array_equal(wa[k], wb[k])]
    assert not different, f"weights differ from the uninterrupted run: {different}"


def snapshot(directory: Path) -> dict[str, str]:
    """Each file under ``directory`` with a digest of its bytes."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def kept_steps(directory: Path) -> list[int]:
    return sorted(int(p.name[5:-6]) for p in directory.glob("ckpt-*.index"))


_reference: dict[str, Path] = {}


def reference_run(tmp_path_factory) -> Path:
    """The uninterrupted BASE run, trained once per test session (read-only: copy it to change it)."""
    if "run" not in _reference:
        run = tmp_path_factory.mktemp("reference") / "run"
        result = train_here(run)
        assert result.returncode == 0, result.stderr
        _reference["run"] = run
    return _reference["run"]


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".lock"))
    return target


def wait_for_training(run: Path, process, timeout: float = 120) -> None:
    """Until the process logs a training step (its signal handlers are in place by then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = run / "metrics.jsonl"
        if log.is_file() and '"split": "train"' in log.read_text():
            return
        assert process.poll() is None, process.communicate()[1]
        time.sleep(0.02)
    raise AssertionError("the run did not start training")
