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
import itertools
import json
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainkit.errors import ConfigError, RunDirError, first_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
MAX_LINE_BYTES = 1 << 20
"""One CSV row or JSON line; a 28x28 image as text is about 3 KiB."""
MAX_TEXT_INPUT_BYTES = 1 << 30


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
    def classes(self) -> list[str] | None:
        """The predicted class of each example, by name (None for a regression)."""
        if self.class_ids is None:
            return None
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
    from trainkit.rundir import RunDir
    from trainkit.serving import spec as inference_spec

    directory = Path(run_dir)
    RunDir(directory).check_existing()
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
    from trainkit.rundir import refuse_run_files

    refuse_run_files(path, "path", suffixes=(".csv",))
    write_text_atomic(path, predictions.to_csv())


def _model(directory: Path, spec: dict, checkpoint: str | None):
    from trainkit.startup import quiet_tensorflow

    quiet_tensorflow()
    saved = directory / "model.keras"
    if checkpoint is None and saved.is_file():
        import keras

        from trainkit.rundir import RunDir
        from trainkit.rundir.checkpoints import check_final_is_current

        check_final_is_current(RunDir(directory), field=f"predict without --checkpoint ({saved.name})")

        from trainkit.keras_archive import check_keras_archive

        check_keras_archive(saved, what="predict")
        try:
            model = keras.models.load_model(saved, compile=False)
        except Exception as err:  # damaged, foreign, or a layer safe mode refuses
            raise RunDirError(
                f"{saved} cannot be loaded ({first_line(err)[:160]}); give --checkpoint last to predict from a checkpoint"
            ) from None
        if [tuple(t.shape[1:]) for t in model.inputs] == [tuple(spec["input"]["shape"])]:
            return model
    from trainkit.serving.export import build_inference_model, restore_for_export

    built, spec, _ = restore_for_export(directory, checkpoint or "final")
    return build_inference_model(built, spec)


# ----------------------------------------------------------------------- reading


def read_inputs(inputs: Any, spec: dict) -> tuple[list[str], np.ndarray]:
    """Example names and a batch of raw features, checked against the run's input."""
    if spec["input"]["dtype"] == "string":
        return read_texts(inputs, spec)
    expected = tuple(spec["input"]["shape"])
    dtype = np.dtype(spec["input"]["dtype"])
    if not isinstance(inputs, str | os.PathLike):
        with np.errstate(over="ignore", invalid="ignore"):
            names, array = _from_array(_as_array(inputs, spec), expected, "inputs", dtype)
        _check_finite(names, array, "inputs")
        return names, array
    path = Path(inputs)
    kind = _kind_of(path)
    with np.errstate(over="ignore", invalid="ignore"):  # 1e300 as float32: found below, in one line
        if kind == "folder":
            names, array = _read_images(path, spec)
        elif kind == ".npy":
            names, array = _from_array(_read_npy(path), expected, str(path), dtype)
            if not names:
                raise ConfigError(f"{path}: no examples (an array of shape {[0, *expected]}); expected N > 0 examples of {_describe(expected)}")
        elif kind == ".csv" and spec["input"].get("series"):  # (a series run: the CSV is a series to cut)
            names, array = _read_series_csv(path, spec, dtype)
        elif kind == ".csv":
            names, array = _read_csv(path, spec, dtype)
        else:
            names, array = _read_json_lines(path, spec, dtype)
    _check_finite(names, array, str(path))
    return names, array


def _as_array(inputs: Any, spec: dict) -> np.ndarray:
    """An array of examples from what a notebook holds: a NumPy array, a list of
    examples, a tensor, or a pandas DataFrame (its columns taken by the names the
    model was trained on, as a CSV's are)."""
    columns = spec["input"].get("columns") or []
    if hasattr(inputs, "columns") and hasattr(inputs, "to_numpy"):  # a DataFrame
        have = [str(c) for c in inputs.columns]
        if columns and have != [str(i) for i in range(len(have))]:
            missing = [c for c in columns if c not in have]
            if missing:
                from trainkit.errors import did_you_mean

                raise ConfigError(
                    f"inputs: the DataFrame has no column '{missing[0]}' ({len(missing)} of the {len(columns)} training "
                    f"columns missing; {did_you_mean(missing[0], have)})"
                )
            inputs = inputs[columns]
        inputs = inputs.to_numpy()
    if isinstance(inputs, np.ndarray | list | tuple) or hasattr(inputs, "__array__"):
        try:
            return np.asarray(inputs)  # (its values and shape are checked as a .npy file's are)
        except (ValueError, TypeError) as err:  # ragged lists
            raise ConfigError(f"inputs: cannot be read as one array of examples ({first_line(err, limit=150)})") from None
    raise ConfigError(
        f"inputs: a {type(inputs).__name__} is not examples; give a NumPy array, a list of examples, a pandas DataFrame, "
        "or a path (CSV, .npy, JSON lines, a folder of images)"
    )


def _kind_of(path: Path) -> str:
    """``folder``, or the suffix of a regular file predict reads; else one line saying why not."""
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        raise ConfigError(f"{path}: no such file or folder (give a CSV, .npy, JSON lines file or a folder of images)") from None
    if stat.S_ISDIR(mode):
        return "folder"
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{path}: not a regular file (a FIFO, socket or device); give a CSV, .npy or JSON lines file")
    suffix = path.suffix.lower()
    if suffix in (".json", ".ndjson"):
        suffix = ".jsonl"
    if suffix not in (".npy", ".csv", ".jsonl"):
        raise ConfigError(f"{path}: unknown input kind '{suffix}'; give a .csv, .npy, .jsonl file or a folder of images")
    if suffix != ".npy" and path.stat().st_size > MAX_TEXT_INPUT_BYTES:
        raise ConfigError(
            f"{path}: {path.stat().st_size / 2**30:,.1f} GiB; predict reads text inputs of up to "
            f"{MAX_TEXT_INPUT_BYTES // 2**30} GiB (split it, or give a .npy array)"
        )
    return suffix


def _check_finite(names: list[str], array: np.ndarray, where: str) -> None:
    """NaN or infinity in features would give NaN probabilities and class 0, silently."""
    if not np.issubdtype(array.dtype, np.floating):
        return
    finite = np.isfinite(array.reshape(len(array), math.prod(array.shape[1:]))).all(axis=1)
    if not finite.all():
        first = names[int(np.argmin(finite))]
        raise ConfigError(
            f"{where}: example {first} holds NaN or infinity (as {array.dtype}; {int((~finite).sum())} such examples); "
            "features must be finite numbers"
        )


def _read_npy(path: Path) -> np.ndarray:
    """A ``.npy`` array, its header checked against the file's size before anything is allocated."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
            data_bytes = path.stat().st_size - f.tell()
    except (ValueError, OSError, SyntaxError, TypeError) as err:
        raise ConfigError(f"{path}: not a readable .npy array ({first_line(err, limit=200)})") from None
    if dtype.hasobject:
        raise ConfigError(f"{path}: holds Python objects (pickled); expected an array of numbers")
    needed = math.prod(shape) * dtype.itemsize
    if needed > data_bytes:
        raise ConfigError(
            f"{path}: its header claims shape {list(shape)} ({needed:,} bytes) but the file holds {data_bytes:,}; "
            "it is damaged or truncated"
        )
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ConfigError(f"{path}: not a readable .npy array ({first_line(err, limit=200)})") from None


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a text input, each line bounded and checked to be UTF-8 text,
    so a huge or binary file is refused after reading one line, never read whole."""
    with open(path, "rb") as f:
        for number in itertools.count(1):
            raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            if len(raw) > MAX_LINE_BYTES:
                raise ConfigError(f"{path}, line {number}: longer than {MAX_LINE_BYTES // 2**20} MiB; expected one example per line")
            if b"\0" in raw:
                raise ConfigError(f"{path}, line {number}: holds a NUL byte; expected text (is it a binary file?)")
            try:
                yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise ConfigError(f"{path}, line {number}: not UTF-8 text (byte {raw[err.start]:#04x} at column {err.start + 1})") from None


def read_texts(inputs: Any, spec: dict) -> tuple[list[str], np.ndarray]:
    """Raw texts for a run whose model takes strings: a path (a CSV or JSON-lines file
    with the text column, a ``.txt`` file, a folder of ``.txt`` files) or a list of strings."""
    column = (spec["input"]["columns"] or [None])[0]
    if isinstance(inputs, str | os.PathLike):  # (texts themselves come as a list)
        path = Path(inputs)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*.txt") if p.is_file() and not p.is_symlink())
            if not files:
                raise ConfigError(f"{path}: no .txt files; expected a folder of text files, one example each")
            return [str(f.relative_to(path)) for f in files], np.array([_text_of(f) for f in files], dtype=object)
        if not path.exists():
            raise ConfigError(f"{path}: no such file or folder (give a CSV or JSON lines file with the text, a .txt file or a folder of .txt files)")
        suffix = path.suffix.lower()
        if suffix != ".txt":
            suffix = _kind_of(path)  # a regular file of a bounded size, or one line saying why not
        if suffix == ".txt":
            return [path.name], np.array([_text_of(path)], dtype=object)
        if suffix == ".csv":
            return _text_column_of_csv(path, column, spec)
        if suffix in (".jsonl", ".json", ".ndjson"):
            return _texts_of_json_lines(path, column)
        raise ConfigError(f"{path}: unknown input kind '{suffix}'; give a .csv, .jsonl or .txt file or a folder of .txt files")
    texts = list(np.asarray(inputs, dtype=object).reshape(-1))
    for i, value in enumerate(texts):
        if not isinstance(value, str | bytes):
            raise ConfigError(f"inputs: example {i} is {type(value).__name__}; this run's model takes text (strings)")
    return [str(i) for i in range(len(texts))], np.array(texts, dtype=object)


def _text_of(file: Path) -> str:
    """One example's text: a regular file, UTF-8, read line by line with each line bounded."""
    if not file.is_file():
        raise ConfigError(f"{file}: not a regular file (a FIFO, socket or device); give a .txt file")
    return "".join(text for _, text in _text_lines(file))


def _csv_rows(path: Path, spec: dict) -> list[list[str]]:
    """The rows of a CSV input, read as bounded UTF-8 lines and split by the training
    source's delimiter; a malformed one is one line. Blank lines before the header and
    at the end are left out; one between rows stays (an empty row), so that every row
    keeps its number and a series never closes up around a missing step."""
    reader = csv.reader((text for _, text in _text_lines(path)), delimiter=spec["input"].get("delimiter", ","))
    try:
        rows = list(reader)
    except csv.Error as err:
        raise ConfigError(f"{path}, line {reader.line_num}: not CSV ({err})") from None
    blank = [not (row and any(cell.strip() for cell in row)) for row in rows]
    first = blank.index(False) if False in blank else len(rows)
    last = len(rows) - blank[::-1].index(False) if False in blank else first
    return rows[first:last]


def _text_column_of_csv(path: Path, column: str | None, spec: dict) -> tuple[list[str], np.ndarray]:
    rows = _csv_rows(path, spec)
    if not rows:
        raise ConfigError(f"{path}: empty; expected a header row and one text per row")
    header = [cell.strip() for cell in rows[0]]
    if column is None and len(header) != 1:
        raise ConfigError(f"{path}: {len(header)} columns, and this run's text had no column name; give a CSV with one column of text")
    name = column if column is not None else header[0]
    if name not in header:
        from trainkit.errors import did_you_mean

        raise ConfigError(
            f"{path}: no column '{_shown(name)}' in the header (the text column the model trained on); "
            f"{did_you_mean(name, [_shown(h) for h in header])}"
        )
    j = header.index(name)
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ConfigError(f"{path}, row {number}: {len(row)} values but the header has {len(header)} columns")
    if len(rows) == 1:
        raise ConfigError(f"{path}: a header but no data rows")
    return [str(i) for i in range(2, len(rows) + 1)], np.array([row[j] for row in rows[1:]], dtype=object)


def _texts_of_json_lines(path: Path, column: str | None) -> tuple[list[str], np.ndarray]:
    names, texts = [], []
    for number, line in _text_lines(path):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}, line {number}: not JSON ({err.msg})") from None
        except RecursionError:
            raise ConfigError(f"{path}, line {number}: nested too deeply; expected a text or an object with it") from None
        if isinstance(value, dict):
            key = column if column in value else "features" if "features" in value else None
            if key is None:
                raise ConfigError(f"{path}, line {number}: no key '{column or 'features'}' (the text); found {', '.join(sorted(value)) or 'no keys'}")
            value = value[key]
        if not isinstance(value, str):
            raise ConfigError(f"{path}, line {number}: a JSON {type(value).__name__}; expected text (a string, or an object with it)")
        names.append(str(number))
        texts.append(value)
    if not texts:
        raise ConfigError(f"{path}: no examples (one text per line)")
    return names, np.array(texts, dtype=object)


def _describe(shape: tuple) -> str:
    return f"{math.prod(shape)} values" if len(shape) == 1 else f"shape {list(shape)} ({math.prod(shape)} values)"


def _from_array(array: np.ndarray, expected: tuple, where: str, dtype: np.dtype) -> tuple[list[str], np.ndarray]:
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.issubdtype(array.dtype, np.complexfloating):
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
    rows = _csv_rows(path, spec)
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
                f"columns missing; {did_you_mean(missing[0], [_shown(h) for h in header])}); expected the columns {', '.join(columns[:8])}"
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
                raise ConfigError(f"{path}, row {number}, {name}: '{_shown(cell.strip())}' is not a number")
            values.append(float(cell))
        examples.append(np.asarray(values).reshape(expected))
    if not examples:
        raise ConfigError(f"{path}: a header but no data rows")
    return [str(i) for i in range(start, start + len(examples))], np.stack(examples).astype(dtype)


def _read_series_csv(path: Path, spec: dict, dtype: np.dtype) -> tuple[list[str], np.ndarray]:
    """A series (a header naming the run's input columns, one row per time step, in
    time order) cut into every window of the run's ``sequence_length`` rows, raw and
    unscaled, as the model takes them; each window named by its first and last row."""
    from trainkit.errors import did_you_mean

    length = int(spec["input"]["shape"][0])
    columns = list(spec["input"]["series"]["columns"])
    wanted = f"a header naming {', '.join(columns)} and one row per time step, in time order"
    rows = _csv_rows(path, spec)
    if not rows:
        raise ConfigError(f"{path}: empty; expected {wanted}")
    header = [cell.strip() for cell in rows[0]]
    missing = [c for c in columns if c not in header]
    if missing:
        raise ConfigError(f"{path}: no column '{missing[0]}' in the header; {did_you_mean(missing[0], [_shown(h) for h in header])} (expected {wanted})")
    pick = [header.index(c) for c in columns]
    values = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ConfigError(f"{path}, row {number}: {len(row)} values but the header has {len(header)} columns")
        for j, name in zip(pick, columns, strict=True):
            if not _is_number(row[j]):
                raise ConfigError(f"{path}, row {number}, column '{name}': '{_shown(row[j].strip())}' is not a number")
        values.append([float(row[j]) for j in pick])
    if len(values) < length:
        raise ConfigError(f"{path}: {len(values)} row(s); one window is sequence_length = {length} rows (the run's): give at least {length}")
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(values), length, axis=0).transpose(0, 2, 1)
    return [f"rows {i + 2}-{i + 1 + length}" for i in range(len(windows))], windows.astype(dtype)


def _read_json_lines(path: Path, spec: dict, dtype: np.dtype) -> tuple[list[str], np.ndarray]:
    expected = tuple(spec["input"]["shape"])
    columns = spec["input"]["columns"]
    names, examples = [], []
    for number, line in _text_lines(path):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{where}: not JSON ({err.msg})") from None
        except RecursionError:
            raise ConfigError(f"{where}: nested too deeply; expected a list of {_describe(expected)}") from None
        if _depth(value) > len(expected) + 1:
            raise ConfigError(f"{where}: nested deeper than an example; expected {_describe(expected)}")
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
    expected = tuple(spec["input"]["shape"])
    image = spec["input"]["image"] or {}
    if len(expected) != 3:
        raise ConfigError(f"{folder}: a folder of images, but this run's model takes {_describe(expected)} per example, not images")
    height, width, channels = expected
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    from trainkit.runtime import quiet_tensorflow

    quiet_tensorflow()  # only now: a mistake above is one line, without TensorFlow's start-up lines
    import tensorflow as tf

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


def _depth(value: Any) -> int:
    """How deeply lists nest in ``value`` (without recursion: the value may come from anyone)."""
    depth, level = 0, [value]
    while level:
        level = [v for item in level if isinstance(item, list | dict) for v in (item.values() if isinstance(item, dict) else item)]
        depth += 1
        if depth > 64:
            break
    return depth


def _shown(text: str, limit: int = 40) -> str:
    """Text from an input file, safe to put in an error line: escaped, cut."""
    escaped = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return escaped if len(escaped) <= limit else f"{escaped[:limit]}..."


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
