"""Input throughput of trainkit's pipelines alone (no model), with and without cache.

Measures examples per second of the training pipeline (shuffle, decode, transforms,
batch, prefetch) for three sources built in a temporary directory:

- in-memory arrays (28x28x1 float32),
- an image folder of PNG files (decode + resize to 32x32),
- TFRecord files of serialized examples (parse + decode PNG),

each for a first epoch (filling the cache when there is one) and the later epochs.
A later epoch of 2000 cached examples lasts about 30 ms, where one scheduler hiccup
on a shared machine halves the rate: "later" is the median of ``--repeats`` epochs,
printed with their range, so a difference between two rows can be told from noise.

Run:  PYTHONPATH=. python benchmarks/input_pipeline.py [--examples 2000] [--batch 64] [--repeats 5]
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import options

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # (TensorFlow is imported after the options are read)


def make_files(root: Path, n: int) -> tuple[Path, Path]:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    folder = root / "images"
    record = root / "data.tfrecord"
    with tf.io.TFRecordWriter(str(record)) as writer:
        for i in range(n):
            pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
            png = tf.io.encode_png(pixels).numpy()
            label = i % 10
            (folder / str(label)).mkdir(parents=True, exist_ok=True)
            (folder / str(label) / f"{i}.png").write_bytes(png)
            example = tf.train.Example(features=tf.train.Features(feature={
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            }))
            writer.write(example.SerializeToString())
    return folder, record


def rate_of_epoch(data, epoch: int) -> tuple[float, float]:
    """Examples per second of one epoch, and CPU microseconds per example.

    The CPU time (this process, all of tf.data's threads) hardly moves with other
    processes' load, unlike the wall-clock rate: it tells which pipeline does more work.
    """
    ds = data.dataset("train", training=True, epoch=epoch)
    start, cpu = time.perf_counter(), time.process_time()
    seen = 0
    for _, y in ds:
        seen += int(y.shape[0])
    return seen / (time.perf_counter() - start), (time.process_time() - cpu) / seen * 1e6


def main() -> None:
    parser = options.parser(__doc__)
    parser.add_argument("--examples", type=options.count, default=2000)
    parser.add_argument("--batch", type=options.count, default=64)
    parser.add_argument("--repeats", type=options.count, default=5, help="later epochs timed (their median is reported)")
    args = parser.parse_args()
    n = args.examples

    import trainkit
    from trainkit.data.pipeline import prepare
    from trainkit.recipe import DataSection

    @trainkit.register_dataset("bench_arrays", overwrite=True)
    def arrays():
        rng = np.random.default_rng(0)
        return rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, n)

    with tempfile.TemporaryDirectory() as tmp:
        folder, record = make_files(Path(tmp), n)
        common = {"splits": {"train": 1.0, "validation": 0.0, "test": 0.0}, "batch_size": args.batch}
        cases = {
            "arrays (28x28x1)": {"source": {"type": "arrays", "name": "bench_arrays"}},
            "image_folder (PNG 40x40 -> 32x32)": {
                "source": {"type": "image_folder", "path": str(folder), "image_size": [32, 32]},
                "transforms": ["scale"],
            },
            "tfrecord (parse + PNG decode)": {
                "source": {
                    "type": "tfrecord", "files": str(record), "inputs": "image", "label": "label",
                    "features": {"image": {"image": True, "channels": 3, "shape": [40, 40, 3]}, "label": {"dtype": "int64"}},
                },
                "transforms": ["scale"],
            },
        }
        print(f"{n} examples, batch {args.batch}, {os.cpu_count()} CPU cores; examples/s of the training pipeline alone; "
              f"later: the median of {args.repeats} epochs after the first")
        print(f"{'source':36} {'cache':>7} {'epoch 1':>10} {'later (median)':>15} {'range':>18} {'CPU us/ex':>10}")
        for name, spec in cases.items():
            for cache in (False, "memory"):
                data = prepare(DataSection.model_validate({**spec, **common, "cache": cache}), seed=0)
                first, _ = rate_of_epoch(data, 0)
                later = [rate_of_epoch(data, epoch) for epoch in range(1, 1 + args.repeats)]
                rates = [rate for rate, _ in later]
                spread = f"{min(rates):,.0f}-{max(rates):,.0f}"
                cpu = statistics.median(c for _, c in later)
                print(
                    f"{name:36} {str(cache):>7} {first:>10,.0f} {statistics.median(rates):>15,.0f} {spread:>18} {cpu:>10.1f}"
                )


if __name__ == "__main__":
    options.run(main)
