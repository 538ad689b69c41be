"""What a sidecar evaluator costs the training beside it: steps/s with and without one.

    python benchmarks/sidecar_cost.py [--repeats 3] [RECIPE] [KEY=VALUE ...]

Each mode trains the recipe (default: the full ``digits_cnn``) into a fresh
temporary run directory, ``--repeats`` times, with in-loop validation off
(``trainer.validation.every_epochs=null``) and a checkpoint at every epoch end:

- ``validation off``: the training alone;
- ``sidecar``: the same training, with ``trainkit eval RUN --watch
  --until-finished`` started beside it as soon as the run directory exists,
  evaluating every checkpoint on the validation split.

The figure is the training's own steps per second (``steps_per_second`` in
``run.json``, timed by trainkit over the training loop), median over repeats.
The issue's bar: with the sidecar, at least 90% of the steps/s without it. The
sidecar takes CPU time of its own: on a machine with fewer cores than the two
processes can use, that shows here, as it would in a real job. Run it on a
quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["trainer.progress=false", "trainer.validation.every_epochs=null", "trainer.checkpoint.every_epoch=true"]
MODES = ("validation off", "sidecar")


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "TRAINKIT_HOME": str(ROOT),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }


def run_once(recipe: str, overrides: list[str], workdir: Path, *, sidecar: bool, nice: int = 0) -> dict:
    """Train once (with a sidecar evaluator beside it if asked); run.json and the evaluations made."""
    run_dir = workdir / "run"
    trainkit = [sys.executable, "-m", "trainkit.cli"]
    training = subprocess.Popen(
        [*trainkit, "train", recipe, "--run-dir", str(run_dir), *COMMON, *overrides],
        cwd=workdir, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    evaluator = None
    if sidecar:
        while not (run_dir / "config.yaml").exists() and training.poll() is None:
            time.sleep(0.1)
        evaluator = subprocess.Popen(
            [*(["nice", "-n", str(nice)] if nice else []), *trainkit, "eval", str(run_dir), "--watch", "--until-finished", "--every-seconds", "1"],
            cwd=workdir, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
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
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default="digits_cnn")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE overrides applied to both modes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    parser.add_argument("--nice", type=int, default=0, help="run the sidecar at this niceness (e.g. 19: the training first)")
    args = parser.parse_args(argv)

    results = {}
    print(f"{'mode':<16} {'steps/s':>9} {'min':>9} {'max':>9} {'evaluated':>10}")
    for mode in MODES:
        rows = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="trainkit-sidecar-cost-") as tmp:
                rows.append(run_once(args.recipe, args.overrides, Path(tmp), sidecar=mode == "sidecar", nice=args.nice))
        rates = [r["steps_per_second"] for r in rows]
        results[mode] = {
            "steps_per_second": statistics.median(rates), "min": min(rates), "max": max(rates),
            "steps": rows[0]["step"], "evaluated": [r["evaluated"] for r in rows],
        }
        row = results[mode]
        print(f"{mode:<16} {row['steps_per_second']:>9.1f} {row['min']:>9.1f} {row['max']:>9.1f} {str(row['evaluated']):>10}")
    ratio = results["sidecar"]["steps_per_second"] / results["validation off"]["steps_per_second"]
    print(f"with the sidecar: {ratio:.1%} of the steps/s without it (bar: 90% or more)")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"recipe": args.recipe, "repeats": args.repeats, "results": results, "ratio": ratio}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
