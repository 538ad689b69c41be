"""Streamed data against the same data in memory: TFRecord files and a TFDS dataset
(mock data) against in-memory arrays, and raw text tokenized inside ``tf.data``
against token ids in memory, training steps per second (goal: >= 0.8).

Run with ``python benchmarks/streamed.py [--repeats 3] [--steps N] [--examples 20000]``;
``--quick`` is a check that it runs (a few steps, no report).

Each case trains the same model with the same optimizer, batch size, transforms and
seed, for :data:`STEPS` of the case (or ``--steps``) with no evaluation or export, in a fresh process, once from
a streamed source and once from the same examples held in memory; the rate is
trainkit's own (``run.json`` ``steps_per_second``: the same clock over the same span,
the training steps, for both). Cases:

- ``digits_mlp`` / ``digits_cnn``: scikit-learn's digits tiled to ``--examples``,
  written to a TFRecord file (``tfrecord``) or registered as arrays (``memory``);
  pixels scaled by ``normalize`` (mean 0, std 16), the CNN's reshaped to 8x8x1.
- ``mnist_cnn``: a TFDS dataset of ``--examples`` MNIST-shaped examples (28x28x1
  PNG images, 10 classes: scikit-learn's digits scaled up), built on disk here by
  TFDS itself (``download_and_prepare`` of a local builder: TFRecord shards, as a
  real ``mnist`` is stored), read by the TFDS source without a cache (``tfds``),
  against the same examples read into memory first (``memory``); the same TFDS
  read with ``data.cache: memory`` (``tfds_cached``: decoded once, then read from
  memory from the second epoch on); and TFDS mock
  data of the same size (``tfds_mock``: ``tfds.testing.mock_data`` of ``mnist``),
  whose examples come from a Python generator one at a time: that row measures the
  mock, not a TFDS read.
- ``text_transformer``: the recipe's model, tokenizer (``vectorize``, 20,000 tokens,
  200 per review) and batch on ``--examples`` generated reviews (80-240 words each
  from 30,000 made-up words, Zipf-like; the label decides a few sentiment words).
  ``tfrecord``: the raw reviews in a TFRecord file, tokenized inside ``tf.data``
  (whole batches at a time, then kept in memory after the first pass where they fit:
  the run's "data cache" line); ``memory``: the same reviews as arrays, which
  trainkit tokenizes once before training, so the steps read token ids from memory.

Writes the "Streamed" section of BENCHMARKS.md and ``benchmarks/streamed.json``.
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
from machine import Others, provenance, ratio, spread
from markdown_section import replace_section

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BEGIN, END = "<!-- streamed: written by benchmarks/streamed.py -->", "<!-- /streamed -->"
CASES = {
    "digits_mlp": ["tfrecord", "memory"], "digits_cnn": ["tfrecord", "memory"], "mnist_cnn": ["tfds", "tfds_cached", "tfds_mock", "memory"],
    "text_transformer": ["tfrecord", "memory"],
}
GOAL = 0.8
#: Steps per case: a few seconds of training each, so that the rate is the steady one
#: and not the pipeline's first batches (300 steps of digits_mlp are 0.1 s of training).
STEPS = {"digits_mlp": 3000, "digits_cnn": 1000, "mnist_cnn": 300, "text_transformer": 300}


def digits(examples: int):
    import numpy as np
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    reps = -(-examples // len(x))
    return np.tile(x.astype("float32"), (reps, 1))[:examples], np.tile(y.astype("int64"), reps)[:examples]


def write_tfrecord(path: Path, x, y) -> None:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for row, label in zip(x, y, strict=True):
            feature = {"x": tf.train.Feature(float_list=tf.train.FloatList(value=row.tolist())),
                       "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def digits_data(name: str, method: str, examples: int, tmp: Path) -> dict:
    import trainkit

    x, y = digits(examples)
    if method == "tfrecord":
        write_tfrecord(tmp / "train.tfrecord", x, y)
        source = {"type": "tfrecord", "files": {"train": str(tmp / "train.tfrecord")}, "inputs": "x", "label": "label",
                  "features": {"x": {"dtype": "float32", "shape": [64]}, "label": {"dtype": "int64"}}}
    else:
        trainkit.register_dataset("streamed_bench_digits")(lambda: {"train": (x, y)})
        source = {"type": "arrays", "name": "streamed_bench_digits"}
    shape = {"feature_shape": [8, 8, 1]} if name == "digits_cnn" else {}
    return {"source": source, "transforms": [{"type": "normalize", "mean": 0.0, "std": 16.0}], **shape}


def mnist_builder(examples: int, data_dir: Path):
    """A TFDS builder of ``examples`` MNIST-shaped examples, made by TFDS in ``data_dir``."""
    import numpy as np
    import tensorflow_datasets as tfds

    class StreamedBenchMnist(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = {"image": tfds.features.Image(shape=(28, 28, 1)), "label": tfds.features.ClassLabel(num_classes=10)}
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features), supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            x, y = digits(examples)
            images = np.kron(x.reshape(-1, 8, 8), np.ones((3, 3)))  # 24x24, then padded to 28x28
            images = np.pad(images * 15, ((0, 0), (2, 2), (2, 2))).astype(np.uint8)[..., None]
            for i in range(examples):
                yield i, {"image": images[i], "label": int(y[i])}

    return StreamedBenchMnist(data_dir=str(data_dir))


def mnist_data(method: str, examples: int, tmp: Path) -> dict:
    """The split streamed by the TFDS source from its files, or read into memory first."""
    import numpy as np
    import tensorflow_datasets as tfds

    import trainkit

    if method == "tfds_mock":  # (inside tfds.testing.mock_data: see worker)
        return {"source": {"type": "tfds", "name": "mnist", "splits": {"train": "train"}},
                "transforms": [{"type": "scale", "factor": 1 / 255}], "cache": False}
    builder = mnist_builder(examples, tmp / "tfds")
    builder.download_and_prepare()
    source = {"type": "tfds", "name": builder.name, "data_dir": str(tmp / "tfds"), "splits": {"train": "train"}}
    if method == "memory":
        examples = list(tfds.as_numpy(builder.as_dataset(split="train", as_supervised=True)))
        x, y = np.stack([e[0] for e in examples]), np.array([e[1] for e in examples])
        trainkit.register_dataset("streamed_bench_mnist")(lambda: {"train": (x, y)})
        source = {"type": "arrays", "name": "streamed_bench_mnist"}
    return {"source": source, "transforms": [{"type": "scale", "factor": 1 / 255}], "cache": "memory" if method == "tfds_cached" else False}


def reviews(examples: int):
    """``examples`` generated reviews (strings) and their labels (0 or 1)."""
    import numpy as np

    rng = np.random.default_rng(0)
    letters = rng.integers(ord("a"), ord("z") + 1, size=(30_000, 7), dtype=np.uint8)
    words = np.array([row.tobytes().decode("ascii")[: 3 + i % 5] for i, row in enumerate(letters)])
    sentiment = [["awful", "boring", "dull", "poor"], ["great", "superb", "lovely", "moving"]]
    labels = np.arange(examples) % 2
    texts = []
    for label in labels:
        chosen = list(words[np.minimum(rng.zipf(1.3, size=int(rng.integers(80, 241))) - 1, len(words) - 1)])
        for _ in range(4):
            chosen.insert(int(rng.integers(0, len(chosen))), sentiment[label][int(rng.integers(0, 4))])
        texts.append(" ".join(chosen))
    return np.array(texts, dtype=object), labels.astype("int64")


def text_data(method: str, examples: int, tmp: Path, text: dict) -> dict:
    """The reviews as a streamed TFRecord file of raw strings, or as arrays (tokenized once, in memory)."""
    import tensorflow as tf

    import trainkit

    x, y = reviews(examples)
    if method == "memory":
        trainkit.register_dataset("streamed_bench_reviews")(lambda: {"train": (x, y)})
        return {"source": {"type": "arrays", "name": "streamed_bench_reviews"}, "text": text}
    with tf.io.TFRecordWriter(str(tmp / "reviews.tfrecord")) as writer:
        for review, label in zip(x, y, strict=True):
            feature = {"review": tf.train.Feature(bytes_list=tf.train.BytesList(value=[review.encode()])),
                       "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    source = {"type": "tfrecord", "files": {"train": str(tmp / "reviews.tfrecord")}, "inputs": "review", "label": "label",
              "features": {"review": {"dtype": "string"}, "label": {"dtype": "int64"}}}
    return {"source": source, "text": text}


def worker(name: str, method: str, steps: int, examples: int) -> None:
    """Train one case and print its steps/s (trainkit's run.json) as one JSON line."""
    import contextlib

    import trainkit

    mock = contextlib.nullcontext()
    if method == "tfds_mock":
        import tensorflow_datasets as tfds

        mock = tfds.testing.mock_data(num_examples=examples)
    with mock, tempfile.TemporaryDirectory() as tmp:
        base = trainkit.load_recipe(name).model_dump(mode="json")
        if name == "mnist_cnn":
            data = mnist_data(method, examples, Path(tmp))
        elif name == "text_transformer":
            data = text_data(method, examples, Path(tmp), base["data"]["text"])
        else:
            data = digits_data(name, method, examples, Path(tmp))
        base["data"] = {"batch_size": base["data"]["batch_size"], **data}  # the sources give a train split only
        base["trainer"] = {"steps": steps, "progress": False, "evaluate": []}
        base["export"] = {"formats": []}
        recipe = trainkit.load_recipe(base)
        trainkit.train(recipe, run_dir=Path(tmp) / "run")
        status = json.loads((Path(tmp) / "run" / "run.json").read_text())
    print(json.dumps({"steps_per_second": status["steps_per_second"]}), flush=True)


def measure(name: str, method: str, steps: int, examples: int) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT), "TRAINKIT_HOME": str(ROOT)}
    argv = [sys.executable, __file__, "--worker", name, method, str(steps), str(examples)]
    with Others() as others:
        out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{name}/{method} failed:\n{out.stderr[-3000:]}")
    return {"steps_per_second": json.loads(out.stdout.strip().splitlines()[-1])["steps_per_second"], "loads": [others.cores]}


def report(samples: dict, args: argparse.Namespace) -> str:
    loads = [v for by in samples.values() for runs in by.values() for r in runs for v in r["loads"]]
    lines = [BEGIN, "## Streamed against in memory (`benchmarks/streamed.py`)", "", provenance(loads), "",
             f"Training steps/s from trainkit's run.json over the steps shown, median (min..max) of {args.repeats} fresh "
             f"processes per source, methods taking turns; {args.examples} examples. Goal: streamed >= {GOAL}x in memory.", "",
             "| recipe | steps | streamed source | streamed steps/s | in memory steps/s | streamed / memory | goal met? |",
             "| --- | ---: | --- | ---: | ---: | ---: | --- |"]
    for name, by_method in samples.items():
        theirs = [r["steps_per_second"] for r in by_method["memory"]]
        for streamed in [m for m in CASES[name] if m != "memory"]:
            ours = [r["steps_per_second"] for r in by_method[streamed]]
            quotient = statistics.median(ours) / statistics.median(theirs)
            case_loads = [v for m in (streamed, "memory") for r in by_method[m] for v in r["loads"]]
            shown = ratio(quotient, case_loads)
            met = ("yes" if quotient >= GOAL else "no") if shown.endswith("x") else "not comparable"
            lines.append(f"| {name} | {args.steps or STEPS[name]} | {streamed} | {spread(ours, '.1f')} | {spread(theirs, '.1f')} | {shown} | {met} |")
    return "\n".join([*lines, "", END])


def main() -> None:
    parser = options.parser(__doc__)
    parser.add_argument("--repeats", type=options.count, help="runs of each method (default 3; 1 with --quick)")
    parser.add_argument("--steps", type=options.count, help="steps of every case (default: STEPS, per case; 10 with --quick)")
    parser.add_argument("--examples", type=options.count, help="examples of each split's data (default 20000; 512 with --quick)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--quick", action="store_true", help="one repeat of 10 steps on 512 examples, nothing written: a check that it runs")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, method, steps, examples = args.worker
        worker(name, method, int(steps), int(examples))
        return
    if args.quick:  # what is named on the command line stays
        args.repeats, args.steps, args.examples = args.repeats or 1, args.steps or 10, args.examples or 512
    args.repeats, args.examples = args.repeats or 3, args.examples or 20000
    samples = {name: {m: [] for m in CASES[name]} for name in args.cases}
    for repeat in range(args.repeats):
        for name in args.cases:
            turn = repeat % len(CASES[name])  # each method first in turn
            for method in CASES[name][turn:] + CASES[name][:turn]:
                result = measure(name, method, args.steps or STEPS[name], args.examples)
                samples[name][method].append(result)
                print(f"[{repeat + 1}/{args.repeats}] {name:10} {method:8} {result['steps_per_second']:8.1f} steps/s  others {result['loads'][0]:.2f} cores", flush=True)
    if not args.quick:  # a check's numbers are not kept
        (HERE / "streamed.json").write_text(json.dumps(samples, indent=2))
        replace_section(BEGIN, END, report(samples, args))


if __name__ == "__main__":
    options.run(main)
