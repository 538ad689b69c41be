"""trainkit against plain Keras ``fit`` and hand-written TensorFlow loops.

Run with ``make bench`` (or ``python benchmarks/run.py [--repeats 5] [--quick]``).

The same model, data, global batch and number of steps are trained several ways:

- ``trainkit``: ``trainkit.train`` of a recipe with default settings (it also
  writes its run directory: checkpoints, metrics, run.json);
- ``keras_fit``: ``model.compile`` + ``model.fit`` with Keras's defaults;
- ``hand_loop``: a hand-written ``tf.function`` train step over a shuffled,
  batched, prefetching ``tf.data`` pipeline, one step per call (what most
  people write);
- ``hand_loop_tuned``: the same step run 50 times per ``tf.function`` call (the
  practical limit for per-step overhead).

Every method is timed by the same clock (``time.perf_counter``) over the same
span: from the data as NumPy arrays in memory, with TensorFlow and Keras already
imported, to the last step done -- the model, the input pipeline, tracing and the
steps (Keras ``fit`` runs whole epochs: its time is scaled to the common step
count). TensorFlow and Keras are imported before every method's clock starts:
trainkit imports them lazily, inside ``trainkit.train``, which put a ~5 s import
in its figure alone. What only trainkit does stays in its span, because
``trainkit.train`` does it: building from a recipe (one rehearsal step), and its
run directory (config.yaml, run.json, metrics.jsonl, TensorBoard files, the
checkpoint of the last step, eval.json, inference.json): about 0.1-0.3 s here.

Each (workload, method) runs in a fresh subprocess, so peak memory (max RSS) is
its own; methods alternate within each repeat so that drifts in machine load hit
all of them alike. Reported: median steps/s, the spread (min..max), ratios, and
peak RSS. Results go to ``BENCHMARKS.md`` and ``benchmarks/results.png``; raw
numbers to ``benchmarks/results.json``. ``BENCHMARKS.md`` also shows the input
wait that ``benchmarks/input_wait.py`` (run first by ``make bench``) measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import options
from machine import Others, provenance, ratio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

WORKLOADS = {
    # Compute-bound: a small convnet on 28x28x1 images (MNIST-sized).
    "cnn": {"shape": [28, 28, 1], "classes": 10, "examples": 4096, "batch": 128, "steps": 320},
    # Overhead-bound: a tiny MLP where per-step Python/dispatch cost dominates.
    "mlp": {"shape": [20], "classes": 4, "examples": 8192, "batch": 64, "steps": 4000},
}
METHODS = ["trainkit", "keras_fit", "hand_loop", "hand_loop_tuned"]


# ----------------------------------------------------------------------------- workers


def synthetic(workload: dict):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(workload["examples"], *workload["shape"])).astype("float32")
    y = rng.integers(0, workload["classes"], size=workload["examples"]).astype("int32")
    return x, y


def keras_model(name: str, workload: dict):
    import keras

    inputs = keras.Input(tuple(workload["shape"]), name="features")
    if name == "cnn":
        x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
        x = keras.layers.MaxPooling2D()(x)
        x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dense(128, activation="relu")(x)
    else:
        x = keras.layers.Dense(32, activation="relu")(inputs)
        x = keras.layers.Dense(32, activation="relu")(x)
    outputs = keras.layers.Dense(workload["classes"], activation="softmax")(x)
    return keras.Model(inputs, outputs)


def recipe_layers(name: str, workload: dict) -> list:
    if name == "cnn":
        return [
            {"type": "Conv2D", "filters": 32, "kernel_size": 3, "padding": "same", "activation": "relu"},
            "MaxPooling2D",
            {"type": "Conv2D", "filters": 64, "kernel_size": 3, "padding": "same", "activation": "relu"},
            "MaxPooling2D",
            "Flatten",
            {"type": "Dense", "units": 128, "activation": "relu"},
            {"type": "Dense", "units": workload["classes"], "activation": "softmax"},
        ]
    return [
        {"type": "Dense", "units": 32, "activation": "relu"},
        {"type": "Dense", "units": 32, "activation": "relu"},
        {"type": "Dense", "units": workload["classes"], "activation": "softmax"},
    ]


def run_trainkit(name: str, workload: dict) -> float:
    import trainkit

    x, y = synthetic(workload)
    trainkit.register_dataset(f"bench_{name}")(lambda: {"train": (x, y)})
    recipe = trainkit.load_recipe(
        {
            "name": f"bench_{name}",
            "data": {"source": {"type": "arrays", "name": f"bench_{name}"}, "batch_size": workload["batch"]},
            "model": {"type": "sequential", "layers": recipe_layers(name, workload)},
            "loss": "sparse_categorical_crossentropy",
            "metrics": ["accuracy"],
            "optimizer": {"type": "adam"},
            "trainer": {"steps": workload["steps"], "progress": False, "evaluate": [], **json.loads(os.environ.get("TK_TRAINER", "{}"))},
            "export": {"formats": []},
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()  # the same span as the others: model, pipeline, tracing, steps (TF imported)
        trainkit.train(recipe, run_dir=Path(tmp) / "run")
        return time.perf_counter() - start


def run_keras_fit(name: str, workload: dict) -> float:
    import keras

    x, y = synthetic(workload)
    start = time.perf_counter()
    keras.utils.set_random_seed(0)
    model = keras_model(name, workload)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    steps_per_epoch = -(-len(x) // workload["batch"])
    epochs = -(-workload["steps"] // steps_per_epoch)
    model.fit(x, y, batch_size=workload["batch"], epochs=epochs, steps_per_epoch=None, verbose=0)
    seconds = time.perf_counter() - start
    return seconds * workload["steps"] / (epochs * steps_per_epoch)  # scale to the common step count


def run_hand_loop(name: str, workload: dict, *, steps_per_call: int = 1) -> float:
    import keras
    import tensorflow as tf

    x, y = synthetic(workload)
    begun = time.perf_counter()
    keras.utils.set_random_seed(0)
    model = keras_model(name, workload)
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    accuracy = keras.metrics.SparseCategoricalAccuracy()
    mean_loss = keras.metrics.Mean()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).batch(workload["batch"]).repeat()
    iterator = iter(ds.prefetch(tf.data.AUTOTUNE))

    def step(xb, yb):
        with tf.GradientTape() as tape:
            pred = model(xb, training=True)
            loss = loss_fn(yb, pred)
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        mean_loss.update_state(loss)
        accuracy.update_state(yb, pred)

    @tf.function
    def one(iterator):
        step(*next(iterator))

    @tf.function
    def many(iterator, n):
        for _ in tf.range(n):
            step(*next(iterator))

    if steps_per_call == 1:
        for _ in range(workload["steps"]):
            one(iterator)
    else:
        done = 0
        while done < workload["steps"]:
            n = min(steps_per_call, workload["steps"] - done)
            many(iterator, tf.constant(n))
            done += n
    float(mean_loss.result())  # wait for the last step
    return time.perf_counter() - begun


def worker(method: str, name: str) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras  # noqa: F401  (before any clock starts: see the module's docstring)
    import tensorflow  # noqa: F401
    workload = WORKLOADS[name]
    if method == "trainkit":
        seconds = run_trainkit(name, workload)
    elif method == "keras_fit":
        seconds = run_keras_fit(name, workload)
    elif method == "hand_loop":
        seconds = run_hand_loop(name, workload)
    else:
        seconds = run_hand_loop(name, workload, steps_per_call=50)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "steps": workload["steps"], "rss_mb": rss_mb}))


# ----------------------------------------------------------------------------- driver


def measure(method: str, name: str) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    with Others() as others:
        out = subprocess.run(
            [sys.executable, __file__, "--worker", method, name], capture_output=True, text=True, env=env, cwd=ROOT
        )
    if out.returncode != 0:
        raise RuntimeError(f"{method}/{name} failed:\n{out.stderr[-3000:]}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "loads": [others.cores]}


def startup_times(repeats: int) -> dict:
    """``trainkit --help`` against ``import tensorflow``, in fresh processes."""

    def timed(argv: list[str]) -> float:
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        return time.perf_counter() - start

    helps, imports = [], []
    for _ in range(repeats):
        helps.append(timed([sys.executable, "-m", "trainkit.cli", "--help"]))
        imports.append(timed([sys.executable, "-c", "import tensorflow"]))
    return {"help_s": statistics.median(helps), "import_tf_s": statistics.median(imports)}


def summarise(samples: dict) -> dict:
    table = {}
    for name in WORKLOADS:
        rows = {}
        for method in METHODS:
            runs = samples[name][method]
            rates = [r["steps"] / r["seconds"] for r in runs]
            rows[method] = {
                "median": statistics.median(rates),
                "min": min(rates),
                "max": max(rates),
                "rss_mb": statistics.median(r["rss_mb"] for r in runs),
                "loads": [v for r in runs for v in r.get("loads", [])],
            }
        table[name] = rows
    return table


def machine() -> str:
    cores = os.cpu_count()
    try:
        model = next(
            line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    import keras
    import tensorflow as tf

    return f"{model}, {cores} cores, Python {platform.python_version()}, TensorFlow {tf.__version__}, Keras {keras.__version__}, CPU only"


def write_report(table: dict, startup: dict, repeats: int) -> None:
    lines = [
        "# Benchmarks",
        "",
        "Produced by `make bench` (`benchmarks/run.py`); tests never assert times.",
        "",
        f"Machine: {machine()}. Each number is the median of {repeats} runs, methods alternating, each run a fresh process,",
        "every method timed over the same span (data in memory, TensorFlow imported, to the last step: model, pipeline, "
        "tracing, steps; trainkit's also holds its run directory's writes and final checkpoint).",
        "",
        provenance([v for rows in table.values() for row in rows.values() for v in row["loads"]]),
        "",
    ]
    for name, rows in table.items():
        w = WORKLOADS[name]
        best_reference = max(rows["keras_fit"]["median"], rows["hand_loop"]["median"], rows["hand_loop_tuned"]["median"])
        lines += [
            f"## {name}: {w['shape']} inputs, {w['classes']} classes, global batch {w['batch']}, {w['steps']} steps",
            "",
            "| method | steps/s (median) | spread (min..max) | vs keras fit | vs best other | peak RSS (MB) | RSS vs keras fit |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for method, row in rows.items():
            lines.append(
                f"| {method} | {row['median']:.1f} | {row['min']:.1f}..{row['max']:.1f} | "
                f"{ratio(row['median'] / rows['keras_fit']['median'], row['loads'] + rows['keras_fit']['loads'])} | "
                f"{ratio(row['median'] / best_reference, [v for r in rows.values() for v in r['loads']])} | "
                f"{row['rss_mb']:.0f} | {row['rss_mb'] / rows['keras_fit']['rss_mb']:.2f}x |"
            )
        lines.append("")
    lines += [
        "## Start-up",
        "",
        f"- `trainkit --help`: {startup['help_s']:.2f} s; `python -c 'import tensorflow'`: {startup['import_tf_s']:.2f} s "
        f"(ratio {startup['help_s'] / startup['import_tf_s']:.2f}).",
        "",
        "![steps per second](benchmarks/results.png)",
        "",
    ]
    waits = HERE / "input_wait.json"
    if waits.exists():
        from input_wait import report as input_wait_report

        lines += [
            "## Input wait of the reference CNN recipes (`benchmarks/input_wait.py`)",
            "",
            "trainkit's own `input_wait_fraction` for the whole recipe; the handover floor is the same",
            "run fed by one batch repeated from memory (a pipeline that is always ready).",
            "",
            input_wait_report(json.loads(waits.read_text())),
            "",
        ]
    # Keep the hand-written analysis below the marker across runs.
    report = ROOT / "BENCHMARKS.md"
    marker = "<!-- analysis: written by hand, kept by benchmarks/run.py -->"
    old = report.read_text() if report.exists() else ""
    analysis = old[old.index(marker) :] if marker in old else marker + "\n"
    report.write_text("\n".join(lines) + "\n" + analysis)


def plot(table: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(table), figsize=(5 * len(table), 4))
    for ax, (name, rows) in zip(axes, table.items(), strict=True):
        medians = [rows[m]["median"] for m in METHODS]
        errors = [[rows[m]["median"] - rows[m]["min"] for m in METHODS], [rows[m]["max"] - rows[m]["median"] for m in METHODS]]
        ax.bar(METHODS, medians, yerr=errors, capsize=4, color=["#2a6f97", "#999999", "#bbbbbb", "#777777"])
        ax.set_title(name)
        ax.set_ylabel("steps/s (median, min..max)")
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(HERE / "results.png", dpi=120)


def main() -> None:
    parser = options.parser(__doc__)
    parser.add_argument("--repeats", type=options.count, default=5)
    parser.add_argument("--quick", action="store_true", help="one repeat, fewer steps: a check that it runs")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "WORKLOAD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    if args.quick:
        args.repeats = 1
        for w in WORKLOADS.values():
            w["steps"] //= 10
    samples = {name: {m: [] for m in METHODS} for name in WORKLOADS}
    for repeat in range(args.repeats):
        for name in WORKLOADS:
            order = METHODS[repeat % len(METHODS) :] + METHODS[: repeat % len(METHODS)]
            for method in order:
                result = measure(method, name)
                samples[name][method].append(result)
                print(f"[{repeat + 1}/{args.repeats}] {name:4} {method:16} {result['steps'] / result['seconds']:8.1f} steps/s  {result['rss_mb']:.0f} MB", flush=True)
    table = summarise(samples)
    startup = startup_times(args.repeats)
    (HERE / "results.json").write_text(json.dumps({"samples": samples, "table": table, "startup": startup}, indent=2))
    if not args.quick:
        write_report(table, startup, args.repeats)
        plot(table)
    print(json.dumps(table, indent=2))


if __name__ == "__main__":
    options.run(main)
