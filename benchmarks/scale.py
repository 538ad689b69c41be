"""Cost as the data grows: a TFRecord stream against an in-memory source at 10k, 100k and 1M examples.

Run with ``make bench`` (or ``python benchmarks/scale.py [--repeats 3] [--quick]``).

The benchmark writes its own synthetic data (16 float features, 10 classes) as
TFRecord files of ``tf.train.Example`` protos under ``benchmarks/.scale_data``
(kept between runs), and trains the same small MLP for the same number of
steps from each source and size, each run a fresh ``trainkit.train`` process:

- ``tfrecord``: the files, streamed (``data.source.type: tfrecord``);
- ``in_memory``: the same examples as NumPy arrays (``data.source.type: arrays``).

Reported per (source, size): steps/s of training (``run.json``), the seconds
to the first step (reading, counting and building included), and the
process's peak RSS. A stream source must keep memory flat (within +10% from
10k to 1M examples); an in-memory source grows with the data, and the report
states where to switch. Results replace the "Scale" section of
``BENCHMARKS.md``; the curves go to ``benchmarks/scale.png``, raw numbers to
``benchmarks/scale.json``.
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
from machine import Others, provenance
from markdown_section import replace_section

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / ".scale_data"
SIZES = [10_000, 100_000, 1_000_000]
SOURCES = ["tfrecord", "in_memory"]
FEATURES, CLASSES, BATCH, STEPS = 16, 10, 256, 300
BEGIN, END = "<!-- scale: written by benchmarks/scale.py -->", "<!-- /scale -->"


def examples(n: int):
    """The synthetic examples: features from a fixed generator, labels from the features."""
    import numpy as np

    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, FEATURES)).astype("float32")
    y = (np.abs(x[:, 0] * 3 + x[:, 1]).astype("int64")) % CLASSES
    return x, y


def tfrecord_file(n: int) -> Path:
    """``n`` examples as one TFRecord file, written once."""
    path = DATA / f"examples-{n}.tfrecord"
    if path.is_file():
        return path
    import numpy as np
    import tensorflow as tf

    DATA.mkdir(exist_ok=True)
    x, y = examples(n)
    # Every record has the same layout (16 floats, a label below 128: one
    # varint byte), so one Example serialized by protobuf is a template and the
    # records differ only in those bytes: filled in by NumPy, not 1M protos
    # built in Python (~4 min here for 1M).
    marker = np.arange(1, FEATURES + 1, dtype="<f4") + 0.5
    template = tf.train.Example(
        features=tf.train.Features(
            feature={
                "x": tf.train.Feature(float_list=tf.train.FloatList(value=marker.tolist())),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[CLASSES + 100])),
            }
        )
    ).SerializeToString()
    at_x = template.index(marker.tobytes())
    label_marker = bytes([CLASSES + 100])
    assert template.count(label_marker) == 1, "the label's byte must be unique in the template"
    at_label = template.index(label_marker)
    records = np.tile(np.frombuffer(template, np.uint8), (n, 1))
    records[:, at_x : at_x + 4 * FEATURES] = x.astype("<f4").view(np.uint8).reshape(n, -1)
    records[:, at_label] = y.astype(np.uint8)
    check = tf.train.Example.FromString(records[-1].tobytes()).features.feature
    assert np.array_equal(check["x"].float_list.value, x[-1]) and check["label"].int64_list.value[0] == y[-1]
    partial = path.with_suffix(".partial")
    with tf.io.TFRecordWriter(str(partial)) as writer:
        for record in records:
            writer.write(record.tobytes())
    partial.rename(path)  # a complete file or none
    return path


def worker(source: str, n: int, out: str) -> None:
    import trainkit

    if source == "tfrecord":
        data_source = {
            "type": "tfrecord",
            "files": str(tfrecord_file(n)),
            "features": {"x": {"dtype": "float32", "shape": [FEATURES]}, "label": {"dtype": "int64", "shape": []}},
            "inputs": "x",
            "label": "label",
        }
    else:
        trainkit.register_dataset("scale_examples")(lambda: examples(n))
        data_source = {"type": "arrays", "name": "scale_examples"}
    recipe = trainkit.load_recipe(
        {
            "name": f"scale_{source}_{n}",
            "data": {"source": data_source, "batch_size": BATCH, "splits": {"train": 1.0, "validation": 0, "test": 0}},
            "model": {"type": "mlp", "hidden_units": [64, 64]},
            "loss": "sparse_categorical_crossentropy",
            "optimizer": {"type": "adam"},
            "trainer": {"steps": STEPS, "progress": False, "evaluate": [], "validation": {"every_epochs": None}},
            "export": {"formats": []},
        }
    )
    trainkit.train(recipe, run_dir=Path(out) / "run")
    (Path(out) / "peak_rss_kb").write_text(str(_own_peak_rss_kb()))


def _own_peak_rss_kb() -> int:
    """This process's peak RSS since it started its program (``VmHWM``).

    Not ``ru_maxrss``: Linux carries the parent's RSS at the fork into it, so a child
    of a parent that had imported TensorFlow (writing the data files on a first run)
    showed the parent's 1 GB whatever it used itself.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    import resource  # (no /proc: not Linux, where ru_maxrss is the process's own; macOS counts bytes)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def run_once(source: str, n: int) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT), "TRAINKIT_HOME": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        with Others() as others:
            process = subprocess.Popen(
                [sys.executable, __file__, "--worker", source, str(n), tmp], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            _, status, _ = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        _, stderr = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{source}/{n} failed ({process.returncode}):\n{stderr.decode()[-3000:]}")
        status_file = json.loads((Path(tmp) / "run" / "run.json").read_text())
        phases = status_file.get("phases", {})
        return {
            "steps_per_second": status_file["steps_per_second"],
            "to_first_step": sum(phases.get(k, 0.0) for k in ("build", "checks", "first_step")),
            "rss_mb": int((Path(tmp) / "peak_rss_kb").read_text()) / 1024,
            "loads": [others.cores],
        }


def summarise(samples: dict) -> dict:
    return {
        source: {
            str(n): {
                key: {"median": statistics.median(r[key] for r in runs), "min": min(r[key] for r in runs), "max": max(r[key] for r in runs)}
                for key in ("steps_per_second", "to_first_step", "rss_mb")
            }
            for n, runs in by_size.items()
        }
        for source, by_size in samples.items()
    }


def plot(table: dict, sizes: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for source, rows in table.items():
        for ax, key, label in ((axes[0], "steps_per_second", "steps/s (median, min..max)"), (axes[1], "rss_mb", "peak RSS, MB (median)")):
            medians = [rows[str(n)][key]["median"] for n in sizes]
            low = [m - rows[str(n)][key]["min"] for m, n in zip(medians, sizes, strict=True)]
            high = [rows[str(n)][key]["max"] - m for m, n in zip(medians, sizes, strict=True)]
            ax.errorbar(sizes, medians, yerr=[low, high], marker="o", capsize=4, label=source)
            ax.set_xscale("log")
            ax.set_xlabel("examples in the training split")
            ax.set_ylabel(label)
    axes[0].set_title(f"training speed (MLP, batch {BATCH}, {STEPS} steps)")
    axes[1].set_title("memory")
    axes[1].set_ylim(bottom=0)
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "scale.png", dpi=110)


def report(table: dict, sizes: list[int], repeats: int, note: str, loads: list[float]) -> str:
    lines = [
        BEGIN,
        "## Scale (`benchmarks/scale.py`)",
        "",
        provenance(loads),
        "",
        f"The same MLP ({FEATURES} features, {CLASSES} classes, batch {BATCH}, {STEPS} steps) trained from a TFRecord",
        "stream and from in-memory arrays of the same synthetic examples, each run a fresh process; medians of",
        f"{repeats} runs (min..max), sources and sizes alternating. \"To first step\" is build + checks + first step in",
        f"`run.json`'s phases (reading, counting, the rehearsal step and tracing). {note}",
        "",
        "| source | examples | steps/s | spread | to first step (s) | peak RSS (MB) | spread |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for source, rows in table.items():
        for n in sizes:
            r = rows[str(n)]
            lines.append(
                f"| {source} | {n:,} | {r['steps_per_second']['median']:.0f} | "
                f"{r['steps_per_second']['min']:.0f}..{r['steps_per_second']['max']:.0f} | {r['to_first_step']['median']:.2f} | "
                f"{r['rss_mb']['median']:.0f} | {r['rss_mb']['min']:.0f}..{r['rss_mb']['max']:.0f} |"
            )
    lines += ["", "![steps/s and peak RSS against examples](benchmarks/scale.png)", ""]
    first, last = str(sizes[0]), str(sizes[-1])
    stream = table.get("tfrecord")
    if stream:
        growth = stream[last]["rss_mb"]["median"] / stream[first]["rss_mb"]["median"] - 1
        lines += [
            "| target | result | met? |",
            "| --- | --- | --- |",
            f"| TFRecord stream: peak RSS within +10% from {sizes[0]:,} to {sizes[-1]:,} examples | {growth:+.1%} | {'yes' if growth <= 0.10 else 'no'} |",
            "",
        ]
    memory = table.get("in_memory")
    if memory:
        per_example = (memory[last]["rss_mb"]["median"] - memory[first]["rss_mb"]["median"]) * 2**20 / (sizes[-1] - sizes[0])
        raw = FEATURES * 4 + 8
        lines += [
            f"In memory, each example costs about {per_example:.0f} bytes of peak RSS ({per_example / raw:.1f}x its {raw} raw bytes:",
            "the arrays, their copy as constants for tf.data, and the per-epoch index permutation).",
        ]
    lines += ["", END]
    return "\n".join(lines)




def main() -> None:
    parser = options.parser(__doc__)
    parser.add_argument("--repeats", type=options.count, default=3)
    parser.add_argument("--note", default="", help="a sentence added to the report")
    parser.add_argument("--quick", action="store_true", help="one repeat at 10k and 100k, nothing written: a check that it runs")
    parser.add_argument("--worker", nargs=3, metavar=("SOURCE", "N", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        source, n, out = args.worker
        worker(source, int(n), out)
        return
    sizes = SIZES[:2] if args.quick else SIZES
    repeats = 1 if args.quick else args.repeats
    started = time.perf_counter()
    for n in sizes:  # written once, outside the timed runs
        tfrecord_file(n)
    print(f"data ready in {time.perf_counter() - started:.1f} s", flush=True)
    samples = {source: {n: [] for n in sizes} for source in SOURCES}
    runs = [(source, n) for n in sizes for source in SOURCES]
    for repeat in range(repeats):
        shift = repeat % len(runs)
        for source, n in runs[shift:] + runs[:shift]:
            result = run_once(source, n)
            samples[source][n].append(result)
            print(
                f"[{repeat + 1}/{repeats}] {source:9} {n:>9,} {result['steps_per_second']:8.1f} steps/s  "
                f"first step {result['to_first_step']:.1f} s  {result['rss_mb']:.0f} MB",
                flush=True,
            )
    table = summarise(samples)
    if not args.quick:  # a check's numbers are not kept
        (HERE / "scale.json").write_text(json.dumps({"samples": {s: {str(n): r for n, r in v.items()} for s, v in samples.items()}, "table": table}, indent=2))
        replace_section(BEGIN, END, report(table, sizes, repeats, args.note, [v for by in samples.values() for runs in by.values() for r in runs for v in r['loads']]))
        plot(table, sizes)
    print(json.dumps(table, indent=2))


if __name__ == "__main__":
    options.run(main)
