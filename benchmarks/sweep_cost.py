"""What a sweep costs: trials in one process against one process per training, and what pruning saves.

    python benchmarks/sweep_cost.py [--part cost|pruning|both] [--trials 20] [--reference-trials N]

**cost** (needs a quiet machine: it compares times): ``--trials`` digits_mlp
trials of 2 epochs in one process (``trainkit.sweep``, random sampler, no
pruning), against the same trainings (the trials' own recipes) run one per
process with ``trainkit train``. Start-up is excluded on both sides: the
one-process time is the ``trainkit.sweep`` call after ``import trainkit`` and
one warm-up training; each training process counts its wall time less its
``run.json`` start-up phase (Python, TensorFlow and trainkit imported). The
target (issue 20): the one-process total within 1.1 times the sum of the others.
It also checks that no "triggered tf.function retracing" warning is logged.

**pruning** (counts steps, so load does not matter): the reference sweep
(``sweeps/digits_mlp_sweep.yaml``, seeded) with the median pruner and with none.
The target: the pruned sweep's best ``val_accuracy`` within 0.005 of the
unpruned one's, in at most 60% of its training steps.

The results replace this script's section of BENCHMARKS.md; raw numbers go to
``benchmarks/sweep_cost.json``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import options
from markdown_section import replace_section

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- sweeps: benchmarks/sweep_cost.py -->"
END = "<!-- /sweeps -->"
COST_SWEEP = {
    "base": "digits_mlp",
    "metric": "val_accuracy",
    "sampler": "random",
    "pruner": "none",
    "seed": 1,
    "overrides": {"trainer.epochs": 2},
    "space": {
        "optimizer.learning_rate": {"loguniform": [1.0e-4, 1.0e-2]},
        "model.dropout": {"uniform": [0.0, 0.5]},
    },
}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TRAINKIT_HOME": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}


def measure_cost(trials: int, work: Path) -> dict:
    import yaml

    import trainkit

    path = work / "cost.yaml"
    path.write_text(yaml.safe_dump({**COST_SWEEP, "trials": trials}))
    warm = trainkit.load_recipe("digits_mlp", overrides={"trainer.epochs": 1, "trainer.progress": False})
    trainkit.train(warm, run_dir=work / "warm-up")  # TensorFlow's own first-use costs, paid once
    log = io.StringIO()
    logging.getLogger("tensorflow").addHandler(logging.StreamHandler(log))
    started = time.perf_counter()
    result = trainkit.sweep(path, sweep_dir=work / "one-process")
    one_process = time.perf_counter() - started
    per_process = []
    for row in result.rows():
        config = work / f"trial-{row['number']}.yaml"
        recipe = trainkit.load_run(row["run_dir"]).recipe
        config.write_text(recipe.to_yaml())
        begun = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "trainkit.cli", "train", str(config), "--run-dir", str(work / f"alone-{row['number']}")],
            check=True, capture_output=True, env=_env(), cwd=work,
        )
        wall = time.perf_counter() - begun
        start_up = json.loads((work / f"alone-{row['number']}" / "run.json").read_text())["phases"]["start_up"]
        per_process.append(wall - start_up)
    return {
        "trials": trials,
        "one_process_seconds": round(one_process, 2),
        "per_process_seconds": round(sum(per_process), 2),
        "ratio": round(one_process / sum(per_process), 3),
        "retracing_warnings": log.getvalue().count("retracing"),
    }


def measure_pruning(work: Path, trials: int | None = None) -> dict:
    import trainkit

    out = {}
    for pruner in ("median", "none"):
        import yaml

        spec = yaml.safe_load((ROOT / "sweeps" / "digits_mlp_sweep.yaml").read_text())
        spec["pruner"] = pruner
        spec["trials"] = trials or spec["trials"]
        path = work / f"reference-{pruner}.yaml"
        path.write_text(yaml.safe_dump(spec))
        result = trainkit.sweep(path, sweep_dir=work / f"reference-{pruner}")
        rows = result.rows()
        out[pruner] = {
            "best_val_accuracy": round(result.best_trial().value, 4),
            "steps": sum(r["steps"] or 0 for r in rows),
            "pruned": sum(r["state"] == "PRUNED" for r in rows),
        }
    out["steps_fraction"] = round(out["median"]["steps"] / out["none"]["steps"], 3)
    out["best_difference"] = round(out["none"]["best_val_accuracy"] - out["median"]["best_val_accuracy"], 4)
    return out


def section(results: dict) -> str:
    lines = [BEGIN, "## Sweeps (issue 20, `benchmarks/sweep_cost.py`)", ""]
    cost = results.get("cost")
    if cost:
        lines += [
            f"{cost['trials']} digits_mlp trials of 2 epochs: {cost['one_process_seconds']} s in one process, "
            f"{cost['per_process_seconds']} s one per process (start-up excluded): ratio **{cost['ratio']}** "
            f"(target <= 1.1); retracing warnings: {cost['retracing_warnings']}.",
            "",
        ]
    pruning = results.get("pruning")
    if pruning:
        median, none = pruning["median"], pruning["none"]
        lines += [
            "| reference sweep (sweeps/digits_mlp_sweep.yaml) | best val_accuracy | training steps | pruned trials |",
            "|---|---|---|---|",
            f"| median pruner | {median['best_val_accuracy']} | {median['steps']} | {median['pruned']} |",
            f"| no pruning | {none['best_val_accuracy']} | {none['steps']} | 0 |",
            "",
            f"Median pruning: {pruning['steps_fraction']:.0%} of the steps (target <= 60%), best metric "
            f"{pruning['best_difference']:+.4f} from no pruning (target within 0.005).",
            "",
        ]
    return "\n".join([*lines, END])


def main() -> None:
    parser = options.parser(__doc__)
    parser.add_argument("--part", choices=["cost", "pruning", "both"], default="both")
    parser.add_argument("--trials", type=options.count, default=20, help="trials of the cost part (default 20)")
    parser.add_argument("--reference-trials", type=options.count, help="fewer trials of the reference sweep (a smoke run; default: its 20)")
    args = parser.parse_args()
    os.environ.update({"TRAINKIT_HOME": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"})
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.chdir(work)
        if args.part in ("cost", "both"):
            results["cost"] = measure_cost(args.trials, work)
        if args.part in ("pruning", "both"):
            results["pruning"] = measure_pruning(work, args.reference_trials)
    print(json.dumps(results, indent=2))
    (ROOT / "benchmarks" / "sweep_cost.json").write_text(json.dumps(results, indent=2) + "\n")
    replace_section(BEGIN, END, section(results))


if __name__ == "__main__":
    options.run(main)
