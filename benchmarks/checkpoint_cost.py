"""What checkpointing costs: the share of training time spent saving, on digits_cnn.

    python benchmarks/checkpoint_cost.py [--repeats 3] [RECIPE] [KEY=VALUE ...]

Each policy trains the recipe (default: the full ``digits_cnn``) into a fresh
temporary run directory, ``--repeats`` times, in one process each. trainkit
times every save itself (``checkpoint_seconds`` in ``run.json``, all kinds:
the rotation, ``best/`` and ``final/``), so the cost is that time over the
training time of the same run -- a ratio that does not depend on how busy the
machine is, unlike a difference of two wall-clock runs.

Policies measured: the default (every 60 s, the final state, and the best by
``val_loss`` -- ``monitor: auto`` with a validation split), the same without a
best checkpoint, saving at every epoch end, and the best by ``val_accuracy``.
The issue's bar: at most 3% at the default policy.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import options

ROOT = Path(__file__).resolve().parent.parent

POLICIES = {
    "default (every 60 s + final + best by val_loss)": [],
    "no best (monitor: null)": ["trainer.checkpoint.monitor=null"],
    "every epoch": ["trainer.checkpoint.every_epoch=true"],
    "best by val_accuracy": ["trainer.checkpoint.monitor=val_accuracy"],
}


def run_once(recipe: str, overrides: list[str], workdir: Path) -> dict:
    run_dir = workdir / "run"
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "TRAINKIT_HOME": str(ROOT),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    command = [sys.executable, "-m", "trainkit.cli", "train", recipe, "--run-dir", str(run_dir), "trainer.progress=false", *overrides]
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"training failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return json.loads((run_dir / "run.json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = options.parser(__doc__)
    parser.add_argument("recipe", nargs="?", default="digits_cnn")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE overrides applied to every policy")
    parser.add_argument("--repeats", type=options.count, default=3)
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args(argv)

    results = {}
    print(f"{args.recipe} {' '.join(args.overrides)}".rstrip() + f": median of {args.repeats} runs per policy")
    width = max(map(len, POLICIES)) + 2
    print(f"{'policy':<{width}} {'saves':>5} {'save s':>8} {'train s':>8} {'cost':>7}")
    for name, policy in POLICIES.items():
        rows = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="trainkit-ckpt-cost-") as tmp:
                status = run_once(args.recipe, [*args.overrides, *policy], Path(tmp))
            rows.append(status)
        cost = [r["checkpoint_seconds"] / r["train_seconds"] for r in rows]
        summary = {
            "saves": rows[0]["checkpoints_saved"],
            "checkpoint_seconds": statistics.median(r["checkpoint_seconds"] for r in rows),
            "train_seconds": statistics.median(r["train_seconds"] for r in rows),
            "cost_median": statistics.median(cost),
            "cost_max": max(cost),
            "steps": rows[0]["step"],
        }
        results[name] = summary
        print(
            f"{name:<{width}} {summary['saves']:>5} {summary['checkpoint_seconds']:>8.3f} "
            f"{summary['train_seconds']:>8.2f} {summary['cost_median']:>6.2%}  (max {summary['cost_max']:.2%})"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"recipe": args.recipe, "repeats": args.repeats, "results": results}, indent=2) + "\n")
    default, without_best = (results[name]["cost_max"] for name in list(POLICIES)[:2])
    print(f"default policy: {default:.2%} of training time; without the best checkpoint: {without_best:.2%} (bar: 3%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
