"""Predictions of a run's inference model on raw inputs read from files.

``trainkit predict RUN_DIR INPUT`` and :func:`predict` read features as the data
source gave them -- a CSV with the training columns, a ``.npy`` array, JSON lines,
or a folder of images -- check every example against the run's
``inference.json`` before anything runs, and give class names with
probabilities (classification) or values (regression). A mistake in the input is
one line naming the file and the row (or image) and what was expected; nothing
is written then.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainkit.errors import ConfigError, RunDirError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclass
class Predictions:
    """What the model said about each input, in input order."""

    inputs: list[str]
    """Each example's name: its row or line number, or its image file."""
    task: str
    class_names: list[str] | None
    probabilities: np.ndarray | None = None
    class_ids: np.ndarray | None = None
    values: np.ndarray | None = None
    """Regression outputs, one row per example."""

    @property
    def classes(self) -> list[str]:
        """The predicted class of each example, by name."""
        return [self.class_names[int(i)] for i in self.class_ids]

    def rows(self) -> list[dict[str, Any]]:
        if self.task == "classification":
            return [
                {"input": name, "class": self.class_names[int(k)], **{f"probability_{c}": float(p) for c, p in zip(self.class_names, probs, strict=True)}}
                for name, k, probs in zip(self.inputs, self.class_ids, self.probabilities, strict=True)
            ]
        flat = self.values.reshape(len(self.values), -1)
        columns = ["prediction"] if flat.shape[1] == 1 else [f"prediction_{j}" for j in range(flat.shape[1])]
        return [{"input": name, **{c: float(v) for c, v in zip(columns, row, strict=True)}} for name, row in zip(self.inputs, flat, strict=True)]

    def to_csv(self) -> str:
        rows = self.rows()
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["input"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()


def predict(run_dir: str | os.PathLike, inputs: Any, *, checkpoint: str | None = None) -> Predictions:
    """Predictions of a run on ``inputs``: a path (CSV, ``.npy``, JSON lines, a folder of
    images) or a NumPy array of raw features (one example, or a batch).

    The run's ``model.keras`` is used, or with ``checkpoint`` (``last``, ``best``,
    ``final``, a step) that checkpoint's weights behind the same preprocessing.
    """
    from trainkit.serving import spec as inference_spec

    directory = Path(run_dir)
    spec = inference_spec.read(directory)
    if spec is None:
        raise RunDirError(f"{directory} has no inference.json: it is not a trainkit run directory, or it predates export")
    inference_spec.check_exportable(spec)
    names, features = read_inputs(inputs, spec)
    model = _model(directory, spec, checkpoint)
    # The model called eagerly, batch by batch: Keras's predict() traces a new function for
    # every loaded model, and from the fifth call in one process TensorFlow warns of retracing.
    batches = [np.asarray(model(features[i : i + 256], training=False)) for i in range(0, len(features), 256)]
    outputs = np.concatenate(batches) if batches else np.zeros((0, *model.output_shape[1:]), np.float32)
    if spec["task"] == "classification":
        return Predictions(names, spec["task"], spec["class_names"], probabilities=outputs, class_ids=outputs.argmax(-1))
    return Predictions(names, spec["task"], None, values=outputs)


def write_csv(predictions: Predictions, path: str | os.PathLike) -> None:
    """The predictions as CSV at ``path``, written atomically."""
    from trainkit.files import write_text_atomic

    write_text_atomic(path, predictions.to_csv())


def _model(directory: Path, spec: dict, checkpoint: str | None):
    from trainkit.startup import quiet_tensorflow

    quiet_tensorflow()
    saved = directory / "model.keras"
    if checkpoint is None and saved.is_file():
        import keras

        model = keras.models.load_model(saved, compile=False)
        if [tuple(t.shape[1:]) for t in model.inputs] == [tuple(spec["input"]["shape"])]:
            return model
    from trainkit.serving.export import build_inference_model, restore_for_export

    built, spec, _ = restore_for_export(directory, checkpoint or "final")
    return build_inference_model(built, spec)


# ----------------------------------------------------------------------- reading


def read_inputs(inputs: Any, spec: dict) -> tuple[list[str], np.ndarray]:
    """Example names and a batch of raw features, checked against the run's input."""
    expected = tuple(spec["input"]["shape"])
    dtype = np.dtype(spec["input"]["dtype"])
    if isinstance(inputs, np.ndarray):
        return _from_array(inputs, expected, "inputs", dtype)
    path = Path(inputs)
    if path.is_dir():
        return _read_images(path, spec)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file or folder (give a CSV, .npy, JSON lines file or a folder of images)")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise ConfigError(f"{path}: not a readable .npy array ({str(err).splitlines()[0]})") from None
        return _from_array(array, expected, str(path), dtype)
    if suffix == ".csv":
        return _read_csv(path, spec, dtype)
    if suffix in (".jsonl", ".json", ".ndjson"):
        return _read_json_lines(path, spec, dtype)
    raise ConfigError(f"{path}: unknown input kind '{suffix}'; give a .csv, .npy, .jsonl file or a folder of images")


def _describe(shape: tuple) -> str:
    return f"{math.prod(shape)} values" if len(shape) == 1 else f"shape {list(shape)} ({math.prod(shape)} values)"


def _from_array(array: np.ndarray, expected: tuple, where: str, dtype: np.dtype) -> tuple[list[str], np.ndarray]:
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ConfigError(f"{where}: holds {array.dtype} values; expected numbers, {_describe(expected)} per example")
    if tuple(array.shape) == expected:
        array = array[None]
    elif tuple(array.shape[1:]) != expected:
        raise ConfigError(
            f"{where}: an array of shape {list(array.shape)}; expected [N, {', '.join(map(str, expected))}] "
            f"(N examples of {_describe(expected)}) or one example of shape {list(expected)}"
        )
    return [str(i) for i in range(len(array))], array.astype(dtype)


def _one_example(values: list, expected: tuple, where: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape == expected:
        return array
    if array.ndim == 1 and array.size == math.prod(expected):
        return array.reshape(expected)
    got = f"{array.size} values" if array.ndim == 1 else f"shape {list(array.shape)}"
    raise ConfigError(f"{where}: {got}; expected {_describe(expected)}")


def _read_csv(path: Path, spec: dict, dtype: np.dtype) -> tuple[list[str], np.ndarray]:
    expected = tuple(spec["input"]["shape"])
    columns = spec["input"]["columns"]
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise ConfigError(f"{path}: empty; expected rows of {_describe(expected)}")
    first = [cell.strip() for cell in rows[0]]
    header = first if not any(_is_number(cell) for cell in first) else None  # a header names, a row has numbers
    pick = None
    if header is not None and columns:
        missing = [c for c in columns if c not in header]
        if missing:
            from trainkit.errors import did_you_mean

            raise ConfigError(
                f"{path}: no column '{missing[0]}' in the header ({len(missing)} of the {len(columns)} training "
                f"columns missing; {did_you_mean(missing[0], header)}); expected the columns {', '.join(columns[:8])}"
                + (", ..." if len(columns) > 8 else "")
            )
        pick = [header.index(c) for c in columns]
    body = rows[1:] if header is not None else rows
    start = 2 if header is not None else 1
    examples = []
    for number, row in enumerate(body, start=start):
        if pick is None and len(row) != math.prod(expected):
            raise ConfigError(f"{path}, row {number}: {len(row)} values; expected {_describe(expected)} per row")
        if pick is not None and len(row) != len(header):
            raise ConfigError(f"{path}, row {number}: {len(row)} values but the header has {len(header)} columns")
        cells = [row[j] for j in pick] if pick is not None else row
        values = []
        for j, cell in enumerate(cells):
            if not _is_number(cell):
                name = f"column '{columns[j]}'" if columns else f"column {j + 1}"
                raise ConfigError(f"{path}, row {number}, {name}: {cell.strip()!r} is not a number")
            values.append(float(cell))
        examples.append(np.asarray(values).reshape(expected))
    if not examples:
        raise ConfigError(f"{path}: a header but no data rows")
    return [str(i) for i in range(start, start + len(examples))], np.stack(examples).astype(dtype)


def _read_json_lines(path: Path, spec: dict, dtype: np.dtype) -> tuple[list[str], np.ndarray]:
    expected = tuple(spec["input"]["shape"])
    columns = spec["input"]["columns"]
    names, examples = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{where}: not JSON ({err.msg})") from None
        if isinstance(value, dict):
            if spec["input"]["name"] in value:
                value = value[spec["input"]["name"]]
            elif columns:
                missing = [c for c in columns if c not in value]
                if missing:
                    raise ConfigError(f"{where}: no key '{missing[0]}'; expected the keys {', '.join(columns[:8])}" + (", ..." if len(columns) > 8 else ""))
                value = [value[c] for c in columns]
            else:
                raise ConfigError(f"{where}: an object without '{spec['input']['name']}'; expected a list of {_describe(expected)}")
        if not _all_numbers(value):
            raise ConfigError(f"{where}: holds values that are not numbers; expected {_describe(expected)}")
        try:
            examples.append(_one_example(value, expected, where))
        except ValueError:  # ragged nesting
            raise ConfigError(f"{where}: not a rectangular array; expected {_describe(expected)}") from None
        names.append(str(number))
    if not examples:
        raise ConfigError(f"{path}: no examples (one JSON list or object per line)")
    return names, np.stack(examples).astype(dtype)


def _read_images(folder: Path, spec: dict) -> tuple[list[str], np.ndarray]:
    import tensorflow as tf

    expected = tuple(spec["input"]["shape"])
    image = spec["input"]["image"] or {}
    if len(expected) != 3:
        raise ConfigError(f"{folder}: a folder of images, but this run's model takes {_describe(expected)} per example, not images")
    height, width, channels = expected
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    examples = []
    for file in files:
        try:
            decoded = tf.io.decode_image(tf.io.read_file(str(file)), channels=channels, expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.OpError):
            raise ConfigError(f"{file}: not a readable image (PNG, JPEG, GIF or BMP)") from None
        size = tuple(int(d) for d in decoded.shape[:2])
        if image.get("resize"):
            decoded = tf.image.resize(decoded, [height, width])
        elif size != (height, width):
            raise ConfigError(f"{file}: the image is {size[0]}x{size[1]}; expected {height}x{width} (the size the model was trained on)")
        examples.append(np.asarray(decoded, np.float32))
    return [str(f.relative_to(folder)) for f in files], np.stack(examples).astype(np.dtype(spec["input"]["dtype"]))


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _all_numbers(value: Any) -> bool:
    if isinstance(value, list):
        return all(_all_numbers(v) for v in value)
    return isinstance(value, int | float) and not isinstance(value, bool)
