"""The whole job, as a user pays for it: trainkit against plain Keras ``fit`` and a hand-written loop.

Run with ``make bench`` (or ``python benchmarks/job.py [--repeats 5] [--quick]``).

Each job is one fresh process, timed from its launch to its exit: imports,
data, model, training with validation every epoch, the final evaluation of the
validation and test splits, and saving the model. Three ways of doing the same
job on the same data (scikit-learn's digits, 80/10/10), model, optimizer,
batch size and number of epochs:

- ``trainkit``: ``trainkit train RECIPE`` (the reference recipe as shipped, its
  progress lines off), which also writes checkpoints, metrics.jsonl,
  TensorBoard scalars and run.json;
- ``keras_fit``: the job as a Keras user writes it: NumPy arrays,
  ``model.fit(..., validation_data=...)``, ``model.evaluate`` per split,
  ``model.save``;
- ``hand_loop``: a ``tf.function`` training step and evaluation step over
  ``tf.data`` pipelines, one step per call, validation every epoch,
  evaluation, ``model.save``.

Methods alternate within each repeat; the table shows medians with their
spread (min..max) and the median peak RSS of the job's process. The results
replace the "Whole job" section of ``BENCHMARKS.md``; raw numbers go to
``benchmarks/job.json``.
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

import options
from machine import Others, provenance, ratio, verdict
from markdown_section import replace_section

_STARTED = time.time()  # in a worker: the counterpart of trainkit's start-up clock (cli.py)
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
METHODS = ["trainkit", "keras_fit", "hand_loop"]
# The reference recipes, and what a Keras user would write for the same job.
JOBS = {
    # Overhead-bound: a tiny MLP, 45 steps an epoch, validation every epoch.
    "digits_mlp": {"epochs": 40, "batch": 32, "scale": "standard", "learning_rate": 1e-3},
    # Compute-bound (for this machine): a small convnet on 8x8 images.
    "digits_cnn": {"epochs": 30, "batch": 64, "scale": "minmax", "learning_rate": 2e-3, "warmup": 50},
}
TARGETS = {"digits_mlp": 3.0, "digits_cnn": 2.0}  # issue 21
BEGIN, END = "<!-- job: written by benchmarks/job.py -->", "<!-- /job -->"


# ----------------------------------------------------------------------------- the job without trainkit


def digits(job: dict):
    """Digits split 80/10/10 and scaled on the training split, as the recipes do."""
    import numpy as np
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = x.astype("float32"), y.astype("int32")
    order = np.random.default_rng(0).permutation(len(x))
    n_train, n_val = int(0.8 * len(x)), int(0.1 * len(x))
    parts = np.split(order, [n_train, n_train + n_val])
    train = x[parts[0]]
    if job["scale"] == "standard":
        offset, spread = train.mean(0), train.std(0)
    else:
        offset, spread = train.min(0), train.max(0) - train.min(0)
    spread = np.where(spread > 0, spread, 1.0)
    shape = (-1, 8, 8, 1) if job["scale"] == "minmax" else (-1, 64)
    return [(((x[p] - offset) / spread).reshape(shape), y[p]) for p in parts]


def model_and_optimizer(name: str, job: dict, steps: int):
    import keras

    if name == "digits_mlp":
        inputs = keras.Input((64,), name="features")
        x = inputs
        for units in (128, 64):
            x = keras.layers.Dropout(0.2)(keras.layers.Dense(units, activation="relu")(x))
        learning_rate = job["learning_rate"]
    else:
        inputs = keras.Input((8, 8, 1), name="features")
        x = inputs
        for width in (32, 64):
            x = keras.layers.MaxPooling2D()(keras.layers.Conv2D(width, 3, padding="same", activation="relu")(x))
        x = keras.layers.Dropout(0.3)(keras.layers.Dense(128, activation="relu")(keras.layers.Flatten()(x)))
        learning_rate = keras.optimizers.schedules.CosineDecay(
            0.0, max(1, steps - job["warmup"]), warmup_target=job["learning_rate"], warmup_steps=job["warmup"]
        )
    outputs = keras.layers.Dense(10, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs), keras.optimizers.Adam(learning_rate)


def seeded_job(name: str):
    """``(job, training arrays, validation, test, model, optimizer)``, the same for every method."""
    import keras

    job = JOBS[name]
    keras.utils.set_random_seed(0)
    (x, y), val, test = digits(job)
    steps = job["epochs"] * -(-len(x) // job["batch"])
    model, optimizer = model_and_optimizer(name, job, steps)
    return job, (x, y), val, test, model, optimizer


def keras_fit_job(name: str, out: Path) -> None:
    job, (x, y), val, test, model, optimizer = seeded_job(name)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=job["batch"], epochs=job["epochs"], validation_data=val, verbose=0)
    for split in (val, test):
        model.evaluate(*split, batch_size=job["batch"], verbose=0)
    model.save(out / "model.keras")


def hand_loop_job(name: str, out: Path) -> None:
    import keras
    import tensorflow as tf

    job, (x, y), val, test, model, optimizer = seeded_job(name)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    train_loss, val_loss = keras.metrics.Mean(), keras.metrics.Mean()
    train_acc, val_acc = keras.metrics.SparseCategoricalAccuracy(), keras.metrics.SparseCategoricalAccuracy()
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).batch(job["batch"]).prefetch(tf.data.AUTOTUNE)

    def batches(split):
        return tf.data.Dataset.from_tensor_slices(split).batch(job["batch"]).prefetch(tf.data.AUTOTUNE)

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            pred = model(xb, training=True)
            loss = loss_fn(yb, pred)
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        train_loss.update_state(loss)
        train_acc.update_state(yb, pred)

    @tf.function
    def test_step(xb, yb):
        pred = model(xb, training=False)
        val_loss.update_state(loss_fn(yb, pred))
        val_acc.update_state(yb, pred)

    def evaluate(split) -> tuple[float, float]:
        val_loss.reset_state()
        val_acc.reset_state()
        for xb, yb in batches(split):
            test_step(xb, yb)
        return float(val_loss.result()), float(val_acc.result())

    for _ in range(job["epochs"]):
        train_loss.reset_state()
        train_acc.reset_state()
        for xb, yb in train:
            train_step(xb, yb)
        evaluate(val)
    evaluate(val)
    evaluate(test)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.save(out / "model.keras")


# ----------------------------------------------------------------------------- timing fresh processes


def run_once(method: str, name: str, *, epochs: int | None) -> dict:
    """One job in a fresh process: wall seconds from launch to exit, and the process's peak RSS."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT), "TRAINKIT_HOME": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        if method == "trainkit":
            argv = [sys.executable, "-m", "trainkit.cli", "train", name, "--run-dir", f"{tmp}/run", "trainer.progress=false"]
            if epochs:
                argv.append(f"trainer.epochs={epochs}")
        else:
            argv = [sys.executable, __file__, "--worker", method, name, tmp] + ([str(epochs)] if epochs else [])
        with Others() as others:
            start = time.perf_counter()
            process = subprocess.Popen(argv, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            _, status, usage = os.wait4(process.pid, 0)
            seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout, stderr = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{method}/{name} failed ({process.returncode}):\n{stderr.decode()[-3000:]}")
        result = {"seconds": seconds, "rss_mb": usage.ru_maxrss / 1024, "loads": [others.cores]}
        if method == "trainkit":
            result["phases"] = json.loads((Path(tmp) / "run" / "run.json").read_text()).get("phases", {})
            result["start_up"] = result["phases"].get("start_up", 0.0)
        else:
            result["start_up"] = json.loads(stdout.decode().strip().splitlines()[0])["start_up"]
        result["after_start_up"] = seconds - result["start_up"]
        return result


def summarise(samples: dict) -> dict:
    table = {}
    for name, by_method in samples.items():
        table[name] = {
            method: {
                "median": statistics.median(r["seconds"] for r in runs),
                "min": min(r["seconds"] for r in runs),
                "max": max(r["seconds"] for r in runs),
                "start_up": statistics.median(r["start_up"] for r in runs),
                "after": statistics.median(r["after_start_up"] for r in runs),
                "after_min": min(r["after_start_up"] for r in runs),
                "after_max": max(r["after_start_up"] for r in runs),
                "rss_mb": statistics.median(r["rss_mb"] for r in runs),
                "loads": [v for r in runs for v in r.get("loads", [])],
            }
            for method, runs in by_method.items()
        }
        phases = [r["phases"] for r in by_method["trainkit"] if r.get("phases")]
        if phases:
            table[name]["trainkit"]["phases"] = {k: statistics.median(p[k] for p in phases if k in p) for k in phases[0]}
    return table


def report(table: dict, repeats: int, note: str) -> str:
    lines = [
        BEGIN,
        "## Whole job (`benchmarks/job.py`)",
        "",
        "Each job is a fresh process timed from launch to exit: imports, data, model, training with validation",
        "every epoch, evaluation of the validation and test splits, saving the model (trainkit also writes its",
        f"checkpoints, metrics and run.json). Median of {repeats} runs, methods alternating. {note}",
        "Every method ends the same way: trainkit's CLI leaves by `os._exit` after flushing its output (no",
        "interpreter teardown), and so do the Keras fit and hand-loop scripts.",
        "",
        provenance([v for rows in table.values() for row in rows.values() for v in row["loads"]]),
        "",
        "\"Start-up\" is the process's start until TensorFlow is imported (trainkit: `phases.start_up`), a cost",
        "every method pays alike; \"after start-up\" is the job's own part, the one a framework can change.",
        "",
        "| recipe | method | whole job s (median) | spread | start-up s | after start-up s | spread | trainkit's speed-up: whole / after start-up | peak RSS (MB) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, rows in table.items():
        ours = rows["trainkit"]
        for method in METHODS:
            row = rows[method]
            lines.append(
                f"| {name} | {method} | {row['median']:.2f} | {row['min']:.2f}..{row['max']:.2f} | {row['start_up']:.2f} | "
                f"{row['after']:.2f} | {row['after_min']:.2f}..{row['after_max']:.2f} | "
                f"{ratio(row['median'] / ours['median'], row['loads'] + ours['loads'])} / "
                f"{ratio(row['after'] / ours['after'], row['loads'] + ours['loads'])} | {row['rss_mb']:.0f} |"
            )
    lines += ["", "Where trainkit's job time goes (`phases` in run.json, medians, seconds):", ""]
    names = list(table)
    keys = list(table[names[0]]["trainkit"].get("phases", {}))
    if keys:
        lines += ["| phase | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
        for key in keys:
            lines.append(f"| {key} | " + " | ".join(f"{table[n]['trainkit']['phases'].get(key, 0):.2f}" for n in names) + " |")
    lines += _targets(table)
    lines += ["", END]
    return "\n".join(lines)




def _targets(table: dict) -> list[str]:
    """The goals of issue 21 against the whole-job figures."""
    lines = ["", "| target | result | met? |", "| --- | --- | --- |"]
    for name, target in TARGETS.items():
        if name not in table:
            continue
        rows = table[name]
        for span, key in (("whole job", "median"), ("job after start-up", "after")):
            vs_fit = rows["keras_fit"][key] / rows["trainkit"][key]
            vs_loop = rows["hand_loop"][key] / rows["trainkit"][key]
            loads = [v for row in rows.values() for v in row["loads"]]
            lines.append(f"| {name}, {span}: >= {target}x Keras fit | {ratio(vs_fit, loads)} | {verdict(vs_fit >= target, loads)} |")
            lines.append(f"| {name}, {span}: not below the hand-written loop | {ratio(vs_loop, loads)} | {verdict(vs_loop >= 1, loads)} |")
    return lines


def main() -> None:
    parser = options.parser(__doc__)
    parser.add_argument("--repeats", type=options.count, default=5)
    parser.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    parser.add_argument("--note", default="", help="a sentence for the report, e.g. the machine's load")
    parser.add_argument("--quick", action="store_true", help="one repeat of 3 epochs, nothing written: a check that it runs")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        method, name, out, *epochs = args.worker
        if epochs:
            JOBS[name]["epochs"] = int(epochs[0])
        import keras  # noqa: F401  (imports TensorFlow: the start-up every method pays)

        print(json.dumps({"start_up": time.time() - _STARTED}), flush=True)
        (keras_fit_job if method == "keras_fit" else hand_loop_job)(name, Path(out))
        # End as trainkit's CLI does (trainkit.teardown): output flushed, then os._exit,
        # so that no method pays for interpreter teardown and the others do not.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    epochs = 3 if args.quick else None
    repeats = 1 if args.quick else args.repeats
    samples = {name: {m: [] for m in METHODS} for name in args.jobs}
    for repeat in range(repeats):
        for name in args.jobs:
            order = METHODS[repeat % len(METHODS) :] + METHODS[: repeat % len(METHODS)]
            for method in order:
                result = run_once(method, name, epochs=epochs)
                samples[name][method].append(result)
                print(f"[{repeat + 1}/{repeats}] {name:10} {method:10} {result['seconds']:6.2f} s  {result['rss_mb']:.0f} MB", flush=True)
    table = summarise(samples)
    if not args.quick:  # a check's numbers are not kept
        (HERE / "job.json").write_text(json.dumps({"samples": samples, "table": table}, indent=2))
        replace_section(BEGIN, END, report(table, repeats, args.note))
    print(json.dumps(table, indent=2))


if __name__ == "__main__":
    options.run(main)
