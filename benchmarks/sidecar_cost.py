"""What a sidecar evaluator costs the training beside it: steps/s with and without one.

    python benchmarks/sidecar_cost.py [--repeats 3] [--threads N] [--nice idle|N] [RECIPE] [KEY=VALUE ...]

Each repeat trains the recipe (default: the full ``digits_cnn``) into a fresh
temporary run directory once in each mode, the modes taking turns (so a machine
that gets busier or quieter in between weighs on all of them alike), with in-loop
validation off (``trainer.validation.every_epochs=null``) and a checkpoint at every
epoch end (KEY=VALUE overrides change that). The full ``digits_cnn`` trains for
about 3 s: the evaluator's start-up then weighs more than it does on any run worth
a sidecar. BENCHMARKS.md reports a 50 times longer one, with a checkpoint every
230 steps (10 epochs)::

    python benchmarks/sidecar_cost.py --repeats 3 digits_cnn trainer.epochs=150 \
        trainer.checkpoint.every_epoch=false trainer.checkpoint.every_steps=230

- ``validation off``: the training alone;
- ``sidecar, with the training``: an evaluator started at the same moment as the
  training, as ``trainkit launch --evaluator`` and a cluster's ``evaluator`` task
  start one (:func:`trainkit.sidecar.watch` waiting for the run directory): its
  start-up (importing TensorFlow and Keras, some seconds of CPU) overlaps the
  training's own;
- ``sidecar, at the first step``: ``trainkit eval RUN --watch --until-finished``
  started once the run directory exists, which is when the training takes its
  first step: the evaluator's whole start-up falls inside the timed training.

Both evaluators look every second and evaluate every checkpoint on the validation
split, with ``--threads`` and ``--nice`` (default: trainkit's, 1 thread at nice 10).

The figure is the training's own steps per second (``steps_per_second`` in
``run.json``, timed by trainkit over the training loop: the same span in every
mode), median over repeats. The issue's bar: with the sidecar, at least 90% of the
steps/s without it. The sidecar takes CPU time of its own: on a machine with fewer
cores than the two processes can use, that shows here, as it would in a real job.
Each run also records the cores other processes took meanwhile (benchmarks/machine.py):
run it on a quiet machine.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import options
from machine import Others, comparable, provenance

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["trainer.progress=false", "trainer.validation.every_epochs=null", "trainer.checkpoint.every_epoch=true"]
MODES = ("validation off", "sidecar, with the training", "sidecar, at the first step")
# What a cluster's evaluator task runs (trainkit.api), with the look every second of the other mode.
WITH_TRAINING = (
    "import sys, time; from trainkit.sidecar import watch; "
    "watch(sys.argv[1], until_finished=True, every_seconds=1.0, wait_for_run=True, ended_after=time.time(), "
    "threads=int(sys.argv[2]), nice=sys.argv[3])"
)


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "TRAINKIT_HOME": str(ROOT),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }


def _start_evaluator(mode: str, run_dir: Path, training: subprocess.Popen, workdir: Path, limits: list[str]):
    if mode == "sidecar, with the training":
        command = [sys.executable, "-c", WITH_TRAINING, str(run_dir), *limits]
    else:
        while not (run_dir / "config.yaml").exists() and training.poll() is None:
            time.sleep(0.1)
        threads, nice = limits
        command = [
            sys.executable, "-m", "trainkit.cli", "eval", str(run_dir), "--watch", "--until-finished",
            "--every-seconds", "1", "--threads", threads, "--nice", nice,
        ]
    return subprocess.Popen(command, cwd=workdir, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def run_once(mode: str, recipe: str, overrides: list[str], workdir: Path, limits: list[str]) -> dict:
    """Train once in ``mode``; run.json, the evaluations made and the cores others took."""
    run_dir = workdir / "run"
    with Others() as others:
        training = subprocess.Popen(
            [sys.executable, "-m", "trainkit.cli", "train", recipe, "--run-dir", str(run_dir), *COMMON, *overrides],
            cwd=workdir, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        evaluator = None if mode == "validation off" else _start_evaluator(mode, run_dir, training, workdir, limits)
        _, err = training.communicate()
        if training.returncode != 0:
            sys.exit(f"training failed ({training.returncode}): {err.strip().splitlines()[-1:]}")
        if evaluator is not None:
            _, err = evaluator.communicate()
            if evaluator.returncode != 0:
                sys.exit(f"the sidecar failed ({evaluator.returncode}): {err.strip().splitlines()[-1:]}")
    status = json.loads((run_dir / "run.json").read_text())
    history = run_dir / "eval_history.jsonl"
    status["evaluated"] = len(history.read_text().splitlines()) if history.exists() else 0
    status["others"] = round(others.cores, 2)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = options.parser(__doc__)
    parser.add_argument("recipe", nargs="?", default="digits_cnn")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE overrides applied to every mode")
    parser.add_argument("--repeats", type=options.count, default=3)
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    parser.add_argument("--threads", type=int, default=1, help="the evaluator's TensorFlow threads (0: one per core)")
    parser.add_argument("--nice", default="10", help="the evaluator's priority: a niceness 0..19 (trainkit's default 10) or idle")
    args = parser.parse_args(argv)
    limits = [str(args.threads), str(args.nice)]

    rows: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for _ in range(args.repeats):
        for mode in MODES:
            with tempfile.TemporaryDirectory(prefix="trainkit-sidecar-cost-") as tmp:
                rows[mode].append(run_once(mode, args.recipe, args.overrides, Path(tmp), limits))
    results = {}
    print(f"{'mode':<28} {'steps/s':>9} {'min':>9} {'max':>9} {'evaluated':>12} {'others':>16}")
    for mode, runs in rows.items():
        rates = [r["steps_per_second"] for r in runs]
        results[mode] = {
            "steps_per_second": statistics.median(rates), "min": min(rates), "max": max(rates),
            "steps": runs[0]["step"], "evaluated": [r["evaluated"] for r in runs], "others": [r["others"] for r in runs],
        }
        row = results[mode]
        print(f"{mode:<28} {row['steps_per_second']:>9.1f} {row['min']:>9.1f} {row['max']:>9.1f} "
              f"{str(row['evaluated']):>12} {str(row['others']):>16}")
    base = results["validation off"]["steps_per_second"]
    ratios = {mode: results[mode]["steps_per_second"] / base for mode in MODES[1:]}
    for mode, ratio in ratios.items():
        print(f"{mode}: {ratio:.1%} of the steps/s without it (bar: 90% or more)")
    loads = [r["others"] for runs in rows.values() for r in runs]
    print(provenance(loads))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "recipe": args.recipe, "overrides": args.overrides, "repeats": args.repeats, "threads": args.threads, "nice": args.nice,
            "results": results, "ratios": ratios, "comparable": comparable(loads),
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
