"""Export time and size of each format for a recipe (default ``digits_cnn``), and what
the preprocessing layers would cost inside the training step.

    python benchmarks/export_cost.py [--repeats 3] [RECIPE] [KEY=VALUE ...]

Trains the recipe once into a temporary run directory, then runs
``trainkit export RUN_DIR`` (all four formats) ``--repeats`` times, each a fresh
process, plus once with ``--quantize dynamic_range``. Times and sizes are those
``export.json`` records (each format timed alone; LiteRT's time includes writing
the SavedModel it converts when saved_model is not also asked for; here it is).
The table replaces the section between this script's markers in BENCHMARKS.md.

The second measurement compares a training step of the trained model fed the
pipeline's preprocessed batches with one of the same model behind the export's
preprocessing layers fed raw batches (the alternative of training through the
inference model).
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
from markdown_section import replace_section

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("keras", "saved_model", "tflite", "onnx")
BEGIN = "<!-- export: benchmarks/export_cost.py -->"
END = "<!-- /export -->"


def cli(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRAINKIT_HOME": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-m", "trainkit.cli", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(done.stderr[-2000:])


def step_cost(run_dir: Path, steps: int = 200) -> dict[str, float]:
    """Seconds per training step: trained model on piped batches vs inference model on raw ones."""
    sys.path.insert(0, str(ROOT))
    import keras
    import tensorflow as tf

    import trainkit
    from trainkit.serving import spec as inference_spec
    from trainkit.serving.model import inference_model

    recipe = trainkit.load_recipe(str(run_dir / "config.yaml"))
    raw, y = next(iter(trainkit.dataset(recipe, "train", raw=True).unbatch().batch(recipe.data.batch_size)))
    piped, _ = next(iter(trainkit.dataset(recipe, "train").unbatch().batch(recipe.data.batch_size)))
    loaded = keras.models.load_model(run_dir / "model.keras")
    model = next(layer for layer in loaded.layers if isinstance(layer, keras.Model))  # the trained model inside
    spec = inference_spec.read(run_dir)
    wrapped = inference_model(model, spec)
    steps_of = {}
    for name, net, x in (("pipeline preprocessing", model, piped), ("preprocessing layers in the step", wrapped, raw)):
        optimizer = keras.optimizers.Adam()
        loss = keras.losses.SparseCategoricalCrossentropy()

        @tf.function
        def step(x, y, net=net, optimizer=optimizer, loss=loss):
            with tf.GradientTape() as tape:
                value = loss(y, net(x, training=True))
            optimizer.apply_gradients(zip(tape.gradient(value, net.trainable_variables), net.trainable_variables, strict=True))
            return value

        step(x, y)  # trace
        steps_of[name] = (step, x)
    samples: dict[str, list[float]] = {name: [] for name in steps_of}
    for _ in range(7):  # the two alternate, so both see the same load on a shared machine
        for name, (step, x) in steps_of.items():
            start = time.perf_counter()
            for _ in range(steps):
                step(x, y)
            samples[name].append((time.perf_counter() - start) / steps)
    out = {name: statistics.median(values) for name, values in samples.items()}
    return out


def main() -> None:
    parser = options.parser(__doc__)
    parser.add_argument("--repeats", type=options.count, default=3)
    parser.add_argument("recipe", nargs="?", default="digits_cnn")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(scratch) / "run"
        cli("train", args.recipe, "trainer.progress=false", *args.overrides, "--run-dir", str(run_dir))
        reports = []
        for i in range(args.repeats):
            cli("export", str(run_dir), "-o", str(Path(scratch) / f"e{i}"))
            reports.append(json.loads((Path(scratch) / f"e{i}" / "export.json").read_text())["formats"])
        cli("export", str(run_dir), "--format", "tflite", "--quantize", "dynamic_range", "-o", str(Path(scratch) / "q"))
        quantized = json.loads((Path(scratch) / "q" / "export.json").read_text())["formats"]["tflite"]
        costs = step_cost(run_dir)
    lines = [
        BEGIN,
        f"## Export: {args.recipe} (`benchmarks/export_cost.py`)",
        "",
        f"`trainkit export` of the trained `{args.recipe}`, all four formats, median of {args.repeats} fresh processes "
        "(each format timed alone; LiteRT converts the SavedModel written just before it). "
        f"Test accuracy of model.keras on the source's raw features: {reports[0]['keras']['accuracy']:.4f}.",
        "",
        "| format | file | size (KiB) | export time (s, median) | spread (s) | outputs vs model.keras |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for name in FORMATS:
        seconds = [r[name]["seconds"] for r in reports]
        entry = reports[0][name]
        agreement = {
            "keras": f"= the trained model through the pipeline (max diff {entry.get('max_difference_from_pipeline', 0):.1e})",
            "tflite": f"max diff {entry.get('max_difference_from_keras', 0):.1e}, accuracy change {entry.get('accuracy_change', 0):+.4f}",
        }.get(name, "checked by tests/test_serving.py (<= 1e-5)")
        lines.append(
            f"| {name} | {entry['file']} | {entry['bytes'] / 1024:,.1f} | {statistics.median(seconds):.2f} | "
            f"{min(seconds):.2f}..{max(seconds):.2f} | {agreement} |"
        )
    lines.append(
        f"| tflite, dynamic-range quantized (alone: its time includes writing the SavedModel it converts) | model.tflite | {quantized['bytes'] / 1024:,.1f} | {quantized['seconds']:.2f} | | "
        f"max diff {quantized['max_difference_from_keras']:.1e}, accuracy change {quantized['accuracy_change']:+.4f} |"
    )
    lines += [
        "",
        "Training step (batch of the recipe, median of 7 x 200 steps, the two alternating): "
        + "; ".join(f"{name} {seconds * 1e3:.3f} ms" for name, seconds in costs.items())
        + f" ({costs['preprocessing layers in the step'] / costs['pipeline preprocessing'] - 1:+.0%} with the layers; "
        "the same method varies by up to 20% between samples on this shared machine). "
        "Training keeps the preprocessing in the tf.data pipeline; the layers go in front of the model for export.",
        END,
    ]
    section = "\n".join(lines)
    print(section)
    if args.overrides:  # the reference section is the recipe as it is
        print(f"(BENCHMARKS.md not written: the overrides {' '.join(args.overrides)} change the recipe)")
    else:
        replace_section(BEGIN, END, section)


if __name__ == "__main__":
    options.run(main)
