"""The benchmark scripts' cheap paths: what they do on a machine that cannot run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_accelerator_benchmark_says_in_one_line_that_there_is_no_gpu_and_exits_0():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "accelerator.py")], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["accelerator.py: no GPU on this machine; nothing to time."]
    assert not (ROOT / "benchmarks" / "accelerator.json").exists()  # nothing written


SCRIPTS_WITH_REPEATS = ["accelerator", "checkpoint_cost", "display_cost", "export_cost", "input_pipeline", "job", "run", "scale", "sidecar_cost", "streamed"]


@pytest.mark.parametrize("script", SCRIPTS_WITH_REPEATS)
def test_a_benchmark_refuses_zero_repeats_in_one_line_before_it_runs_or_writes_anything(script):
    before = {p.name: p.stat().st_mtime_ns for p in (ROOT / "benchmarks").iterdir() if p.is_file()}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), "--repeats", "0"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == f"{script}.py: error: argument --repeats: give a whole number, 1 or more, got 0"
    assert {p.name: p.stat().st_mtime_ns for p in (ROOT / "benchmarks").iterdir() if p.is_file()} == before


@pytest.mark.slow  # a TensorFlow process training the text LSTM recipe for 2 steps: ~25 s
def test_the_accelerator_benchmark_times_a_tfds_text_recipe_offline_on_mock_data():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT), "TRAINKIT_HOME": str(ROOT)}
    worker = [sys.executable, str(ROOT / "benchmarks" / "accelerator.py"), "--worker", "trainkit", "text_lstm", "float32", "2", "1"]
    result = subprocess.run(worker, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    (seconds,) = json.loads(result.stdout.splitlines()[-1])["seconds"]
    assert seconds > 0
