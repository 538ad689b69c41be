"""How much of training waits for input, for the reference CNN recipes at full size.

Trains, each in a fresh process with the recipe's own data settings (batch,
cache, transforms) and default trainer:

- ``digits_cnn`` (sklearn digits, in memory), the whole recipe;
- ``mnist_cnn`` on ``tfds.testing.mock_data`` (random MNIST-shaped examples,
  no download) with ``--examples`` examples, for ``--epochs`` epochs: batch 128,
  ``cache: memory``, as the recipe says.

and reports trainkit's own measurement (``input_wait_fraction``: the time the
training loop spent blocked on ``next(iterator)`` over the loop's time), for
the whole run and for each epoch (``metrics.jsonl``): the first epoch of a
cached pipeline reads and decodes the source, the later ones replay the cache.
Mock data is generated in Python as it is read, which is slower than reading a
prepared TFDS dataset, so the first epoch of ``mnist_cnn`` here is a pessimistic
case. Results go to ``benchmarks/input_wait.json``.

Run:  PYTHONPATH=. python benchmarks/input_wait.py [--examples 12800] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def worker(name: str, examples: int, epochs: int, run_dir: str) -> None:
    import contextlib

    import trainkit

    overrides = {"trainer.progress": False, "export.formats": []}
    mock = contextlib.nullcontext()
    if name == "mnist_cnn":
        import tensorflow_datasets as tfds

        overrides["trainer.epochs"] = epochs
        mock = tfds.testing.mock_data(num_examples=examples)
    with mock:
        trainkit.train(trainkit.load_recipe(name, overrides=overrides), run_dir=run_dir)


def measure(name: str, examples: int, epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT), "TRAINKIT_HOME": str(ROOT)}
        argv = [sys.executable, __file__, "--worker", name, str(examples), str(epochs), str(run_dir)]
        out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
        if out.returncode != 0:
            raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
        status = json.loads((run_dir / "run.json").read_text())
        events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        per_epoch = [e["input_wait_fraction"] for e in events if e["split"] == "epoch" and "input_wait_fraction" in e]
        return {
            "steps": status["step"],
            "train_seconds": status["train_seconds"],
            "input_wait_fraction": status["input_wait_fraction"],
            "per_epoch": per_epoch,
            "after_first_epoch": max(per_epoch[1:]) if len(per_epoch) > 1 else None,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=12800, help="mock MNIST examples per split")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, examples, epochs, run_dir = args.worker
        worker(name, int(examples), int(epochs), run_dir)
        return
    results = {name: measure(name, args.examples, args.epochs) for name in ("digits_cnn", "mnist_cnn")}
    (HERE / "input_wait.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'recipe':12} {'steps':>6} {'seconds':>8} {'input wait':>11} {'per epoch':>30}")
    for name, r in results.items():
        epochs = " ".join(f"{f:.1%}" for f in r["per_epoch"][:6]) + (" ..." if len(r["per_epoch"]) > 6 else "")
        print(f"{name:12} {r['steps']:>6} {r['train_seconds']:>8.1f} {r['input_wait_fraction']:>11.1%} {epochs:>30}")


if __name__ == "__main__":
    main()
