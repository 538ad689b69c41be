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
case.

Each recipe is also trained with its training stream replaced by its first
batch held in memory and repeated (``--ready``): a pipeline that is always
ready. What that run still measures is the *handover floor*: the cost of
handing a ready batch to the step (the iterator's get-next op, scheduled among
the model's own threads; about 40 us on an idle core, a few hundred under a
2-core convnet). The share the pipeline itself adds is the difference.
Results go to ``benchmarks/input_wait.json``; ``make bench`` runs this too.

Run:  PYTHONPATH=. python benchmarks/input_wait.py [--examples 12800] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import options

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def worker(name: str, examples: int, epochs: int, run_dir: str, ready: bool) -> None:
    import contextlib

    import trainkit

    if ready:
        from trainkit.data.pipeline import PreparedData

        stream = PreparedData.training_stream
        PreparedData.training_stream = lambda self, **kw: stream(self, **kw).take(1).cache().repeat()

    overrides = {"trainer.progress": False, "export.formats": []}
    mock = contextlib.nullcontext()
    if name == "mnist_cnn":
        import tensorflow_datasets as tfds

        overrides["trainer.epochs"] = epochs
        mock = tfds.testing.mock_data(num_examples=examples)
    with mock:
        trainkit.train(trainkit.load_recipe(name, overrides=overrides), run_dir=run_dir)


def measure(name: str, examples: int, epochs: int, *, ready: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT), "TRAINKIT_HOME": str(ROOT)}
        argv = [sys.executable, __file__, "--worker", name, str(examples), str(epochs), str(run_dir), str(int(ready))]
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
            "after_first_epoch": statistics.median(per_epoch[1:]) if len(per_epoch) > 1 else None,
        }


def main() -> None:
    parser = options.parser(__doc__)
    parser.add_argument("--examples", type=options.count, default=12800, help="mock MNIST examples per split")
    parser.add_argument("--epochs", type=options.count, default=3, help="epochs of mnist_cnn (digits_cnn trains its recipe's own)")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, examples, epochs, run_dir, ready = args.worker
        worker(name, int(examples), int(epochs), run_dir, ready == "1")
        return
    results = {}
    for name in ("digits_cnn", "mnist_cnn"):
        run = measure(name, args.examples, args.epochs)
        floor = measure(name, args.examples, args.epochs, ready=True)
        run["handover_floor"] = floor["input_wait_fraction"]
        run["handover_floor_after_first_epoch"] = floor["after_first_epoch"]
        run["pipeline_share"] = round(max(0.0, run["input_wait_fraction"] - floor["input_wait_fraction"]), 4)
        results[name] = run
    print(report(results))
    if (args.examples, args.epochs) == (parser.get_default("examples"), parser.get_default("epochs")):
        (HERE / "input_wait.json").write_text(json.dumps(results, indent=2) + "\n")
    else:  # the kept figures are the reference sizes'
        print("(input_wait.json not written: --examples or --epochs differ from the reference run)")


def report(results: dict) -> str:
    """A Markdown table of :func:`main`'s results (BENCHMARKS.md includes it)."""

    def pct(value) -> str:
        return f"{value:.1%}" if value is not None else "-"

    lines = [
        "| recipe | steps | input wait: whole run | handover floor | pipeline's share | "
        "after epoch 1 (median) | floor after epoch 1 | pipeline's share after epoch 1 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        later, later_floor = r["after_first_epoch"], r.get("handover_floor_after_first_epoch")
        later_share = max(0.0, later - later_floor) if later is not None and later_floor is not None else None
        lines.append(
            f"| {name} | {r['steps']} | {pct(r['input_wait_fraction'])} | {pct(r['handover_floor'])} | "
            f"{pct(r['pipeline_share'])} | {pct(later)} | {pct(later_floor)} | {pct(later_share)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    options.run(main)
