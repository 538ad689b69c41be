"""On a GPU: trainkit against Keras ``fit`` per recipe and precision (float32,
mixed_float16, mixed_bfloat16, XLA).

Run with ``python benchmarks/accelerator.py [--steps 200] [--repeats 3] [--quick]``.
On a machine without a GPU it prints one line saying so and exits 0.

For each recipe (``digits_cnn``, the CIFAR ResNet smoke config on TFDS mock data,
and the text recipes ``text_lstm`` / ``text_transformer``; every TFDS recipe reads TFDS mock
data of the same shapes, as the device machine has no network) and each
mode (``runtime.precision`` float32 / mixed_float16 / mixed_bfloat16, and float32
with ``runtime.jit_compile=true``), one fresh process per method times the same span
with the same clock (``time.perf_counter``): from the recipe resolved to ``--steps``
training steps done, i.e. data pipeline, model, optimizer, tracing and the steps.
``trainkit`` is ``trainkit.train`` (no final evaluation, no export); ``keras_fit`` is
``model.fit`` on the same recipe's model (built by trainkit's plan under the same
precision policy), loss, optimizer and training pipeline, ``jit_compile`` as the mode
says. Each process repeats the job ``--repeats`` times (the first pays for tracing);
the report shows steps/s as median (min..max). Bounded to fit in 10 minutes on one
GPU: modes left when ``--budget`` seconds have passed are reported as skipped.
Writes the "Accelerator" section of BENCHMARKS.md and ``benchmarks/accelerator.json``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import options
from machine import Others, provenance, ratio, spread
from markdown_section import replace_section

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BEGIN, END = "<!-- accelerator: written by benchmarks/accelerator.py -->", "<!-- /accelerator -->"
RECIPES = {  # name -> config layers
    "digits_cnn": [],
    "cifar10_resnet": ["cifar10_resnet_smoke"],
    "text_lstm": [],
    "text_transformer": [],
}
MODES = {
    "float32": {"runtime.precision": "float32"},
    "mixed_float16": {"runtime.precision": "mixed_float16"},
    "mixed_bfloat16": {"runtime.precision": "mixed_bfloat16"},
    "xla": {"runtime.precision": "float32", "runtime.jit_compile": True},
}
METHODS = ["trainkit", "keras_fit"]


def has_gpu() -> bool:
    """Whether TensorFlow sees a GPU; a machine with no GPU device file, or with every GPU
    hidden by ``CUDA_VISIBLE_DEVICES``, is answered at once, without starting TensorFlow."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return False
    if not any(glob.glob(pattern) for pattern in ("/dev/nvidia[0-9]*", "/dev/dxg", "/dev/kfd")):
        return False  # no NVIDIA (or WSL, or ROCm) device for TensorFlow to open
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def recipe_exists(name: str) -> bool:
    return (ROOT / "recipes" / f"{name}.py").exists()


def _recipe(name: str, mode: str, steps: int):
    import trainkit

    overrides = {"trainer.steps": steps, "trainer.progress": False, "trainer.evaluate": [], "export.formats": [], **MODES[mode]}
    return trainkit.load_recipe(name, configs=RECIPES[name], overrides=overrides)


def _trainkit_once(name: str, mode: str, steps: int) -> float:
    import trainkit

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        trainkit.train(_recipe(name, mode, steps), run_dir=Path(tmp) / "run")
        return time.perf_counter() - start


def _fit_once(name: str, mode: str, steps: int) -> float:
    from trainkit import plan

    start = time.perf_counter()
    recipe = _recipe(name, mode, steps)
    built = plan.build(recipe)
    model = built.model
    with built.strategy.scope():
        model.compile(optimizer=built.trainer.optimizer, loss=plan.make_loss(recipe, per_example=False), jit_compile=recipe.runtime.jit_compile)
    model.fit(built.data.training_stream(), steps_per_epoch=steps, epochs=1, verbose=0)
    return time.perf_counter() - start


def worker(method: str, name: str, mode: str, steps: int, repeats: int) -> None:
    """Print the seconds of each repeat as one JSON line (TFDS recipes read mock data)."""
    import contextlib

    mock = contextlib.nullcontext()
    if _recipe(name, mode, steps).data.source.type == "tfds":  # the device machine has no network
        import tensorflow_datasets as tfds

        mock = tfds.testing.mock_data(num_examples=max(256, steps * 4))
    once = _trainkit_once if method == "trainkit" else _fit_once
    with mock:
        seconds = [once(name, mode, steps) for _ in range(repeats)]
    print(json.dumps({"seconds": seconds}), flush=True)


def measure(method: str, name: str, mode: str, steps: int, repeats: int, timeout: float) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT), "TRAINKIT_HOME": str(ROOT)}
    argv = [sys.executable, __file__, "--worker", method, name, mode, str(steps), str(repeats)]
    with Others() as others:
        out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=max(timeout, 1))
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1][:200], "loads": [others.cores]}
    seconds = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
    return {"steps_per_second": [steps / s for s in seconds], "loads": [others.cores]}


def run_all(args: argparse.Namespace) -> dict:
    """Every recipe, mode and method until the budget is spent; missing recipes noted."""
    started, results = time.perf_counter(), {}
    for name in RECIPES:
        if not recipe_exists(name):
            results[name] = {"skipped": f"recipe {name} is not in recipes/ (yet)"}
            continue
        results[name] = {}
        for mode in MODES:
            for method in METHODS:
                left = args.budget - (time.perf_counter() - started)
                if left < 20:
                    results[name].setdefault(mode, {})[method] = {"error": "skipped: the time budget was spent"}
                    continue
                try:
                    result = measure(method, name, mode, args.steps, args.repeats, left)
                except subprocess.TimeoutExpired:
                    result = {"error": "stopped: the time budget was spent"}
                results[name].setdefault(mode, {})[method] = result
                print(f"{name:16} {mode:15} {method:10} {result.get('error') or spread(result['steps_per_second'], '.1f')}", flush=True)
    return results


def report(results: dict, args: argparse.Namespace) -> str:
    loads = [v for modes in results.values() if "skipped" not in modes for m in modes.values() for r in m.values() for v in r.get("loads", [])]
    lines = [BEGIN, "## Accelerator (`benchmarks/accelerator.py`)", "", provenance(loads), "",
             f"Steps/s over the same span for both methods (data, model, tracing and {args.steps} steps), median (min..max) "
             f"of {args.repeats} jobs in one process per method.", "",
             "| recipe | mode | trainkit steps/s | Keras fit steps/s | trainkit / fit |", "| --- | --- | ---: | ---: | ---: |"]
    for name, modes in results.items():
        if "skipped" in modes:
            lines.append(f"| {name} | - | {modes['skipped']} | | |")
            continue
        for mode, by_method in modes.items():
            ours, fit = by_method.get("trainkit", {}), by_method.get("keras_fit", {})
            if "steps_per_second" not in ours or "steps_per_second" not in fit:
                lines.append(f"| {name} | {mode} | {ours.get('error', '')} | {fit.get('error', '')} | |")
                continue
            quotient = statistics.median(ours["steps_per_second"]) / statistics.median(fit["steps_per_second"])
            lines.append(f"| {name} | {mode} | {spread(ours['steps_per_second'], '.1f')} | {spread(fit['steps_per_second'], '.1f')} | "
                         f"{ratio(quotient, ours['loads'] + fit['loads'])} |")
    return "\n".join([*lines, "", END])


def main() -> None:
    parser = options.parser(__doc__)
    parser.add_argument("--steps", type=options.count, help="training steps of each job (default 200; 20 with --quick)")
    parser.add_argument("--repeats", type=options.count, help="jobs per process, the first paying for tracing (default 3; 1 with --quick)")
    parser.add_argument("--budget", type=options.seconds, default=540.0, help="seconds for all the runs (default 540)")
    parser.add_argument("--quick", action="store_true", help="20 steps, one repeat, nothing written: a check that it runs")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        method, name, mode, steps, repeats = args.worker
        worker(method, name, mode, int(steps), int(repeats))
        return
    if not has_gpu():
        print("accelerator.py: no GPU on this machine; nothing to time.")
        return
    quick = (20, 1) if args.quick else (200, 3)  # defaults: what is named on the command line stays
    args.steps, args.repeats = args.steps or quick[0], args.repeats or quick[1]
    results = run_all(args)
    if not args.quick:  # a check's numbers are not kept
        (HERE / "accelerator.json").write_text(json.dumps(results, indent=2))
        replace_section(BEGIN, END, report(results, args))


if __name__ == "__main__":
    options.run(main)
