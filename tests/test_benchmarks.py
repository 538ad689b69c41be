"""The benchmark scripts' cheap paths: what they do on a machine that cannot run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_accelerator_benchmark_says_in_one_line_that_there_is_no_gpu_and_exits_0():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "accelerator.py")], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["accelerator.py: no GPU on this machine; nothing to time."]
    assert not (ROOT / "benchmarks" / "accelerator.json").exists()  # nothing written
