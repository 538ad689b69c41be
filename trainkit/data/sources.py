"""Data sources: each turns a ``data.source`` section into :class:`Split` objects.

A split is held in one of three shapes, which decide how it is shuffled:

- **arrays**: NumPy ``(x, y)`` in memory (``sklearn``, ``arrays``, ``csv``);
- **table**: a small in-memory index of rows (file paths and labels for
  ``image_folder``) plus a ``load`` function run in the pipeline (decoding);
- **stream**: a function returning a fresh ``tf.data.Dataset`` of raw records
  in a fixed order plus a ``load`` function (``tfds``, ``tfrecord``,
  ``generator``): never held in memory.

What the model needs to know before training (number of examples, classes) comes
from metadata where there is some (TFDS ``DatasetInfo``, the class folders of an
image folder, the rows of a CSV file) and otherwise from one cheap pass that
counts records and reads only the labels (``tfrecord``, ``generator``).

A loader returns ``{"all": split}`` (to be divided by ``data.splits``) or one
split per name when the source has its own splits. Every problem with the data
is a one-line :class:`~trainkit.errors.ConfigError`.
"""

from __future__ import annotations

import csv
import glob
import inspect
import json
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainkit import registry
from trainkit.errors import ConfigError, TrainkitError, did_you_mean, first_line, user_code_error
from trainkit.recipe import (
    ArraysSource,
    CsvSource,
    GeneratorSource,
    ImageFolderSource,
    JsonlSource,
    SklearnSource,
    TextFolderSource,
    TfdsSource,
    TfrecordSource,
)

SPLITS = ("train", "validation", "test")


@dataclass
class Split:
    """One split of a source; exactly one of ``arrays``, ``table`` and ``stream`` is set."""

    size: int
    arrays: tuple[Any, np.ndarray] | None = None
    """``(x, y)`` in memory; ``x`` may be a dict of arrays."""
    table: tuple[np.ndarray, ...] | None = None
    """Columns of an index (one row per example), read by ``load(*row)``."""
    stream: Callable[[], Any] | None = None
    """A fresh ``tf.data.Dataset`` of raw records, always in the same order."""
    load: Callable[..., Any] | None = None
    """Raw record (or table row) to ``(x, y)``; traced inside ``Dataset.map``."""
    load_batch: Callable[..., Any] | None = None
    """A batch of raw records to a batch of ``(x, y)`` (``tf.io.parse_example`` on a
    whole batch); None where a record needs ops of its own (image decoding)."""

    @property
    def kind(self) -> str:
        return "arrays" if self.arrays is not None else "table" if self.table is not None else "stream"


@dataclass
class Loaded:
    """What a loader found: splits, and what it knows about the labels."""

    splits: dict[str, Split]
    num_classes: int | None = None
    """Known from metadata (TFDS ClassLabel, class folders) or the label pass."""
    class_names: list[str] | None = None
    feature_names: list[str] | None = None
    """Names of the feature columns (CSV header, scikit-learn's ``feature_names``)."""
    label_kind: str | None = None
    """``class`` or ``real`` when known without looking at arrays."""
    label_range: tuple[int, int] | None = None
    """(smallest, largest) class label seen by the label pass of a stream."""
    skipped: list[str] = field(default_factory=list)
    """Files skipped as unreadable (``image_folder`` with ``skip_bad_images``)."""
    ignore_errors: bool = False
    """Drop records whose ``load`` fails (bad images found only when decoded)."""


# ---------------------------------------------------------------- in-memory sources

_SKLEARN = {
    "digits": "load_digits",
    "iris": "load_iris",
    "wine": "load_wine",
    "breast_cancer": "load_breast_cancer",
    "diabetes": "load_diabetes",
}


def plain(fn: Callable) -> Callable:
    """A dataset function traced as written (no AutoGraph): transforms are plain
    TensorFlow ops, and a ConfigError raised while tracing then reaches the user as is.
    (Converting the epoch builders cost a quarter of a second of every run's start.)"""
    import tensorflow as tf

    return tf.autograph.experimental.do_not_convert(fn)


def _arrays(x: Any, y: Any) -> Split:
    x = {k: np.asarray(v) for k, v in x.items()} if isinstance(x, dict) else np.asarray(x)
    y = np.asarray(y)
    n_x = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
    if n_x != len(y):
        raise ConfigError(f"data.source: features have {n_x} rows but labels have {len(y)}")
    return Split(size=len(y), arrays=(x, y))


def load_sklearn(source: SklearnSource) -> Loaded:
    try:
        import sklearn.datasets
    except ImportError:
        raise ConfigError(
            "data.source: type 'sklearn' needs scikit-learn: pip install 'trainkit[examples]'"
        ) from None
    bunch = getattr(sklearn.datasets, _SKLEARN[source.name])()
    x, y = bunch.data, bunch.target
    classes = bunch.get("target_names") if np.issubdtype(np.asarray(y).dtype, np.integer) else None
    return Loaded(
        {"all": _arrays(x, y)},
        class_names=None if classes is None else [str(name) for name in classes],
        feature_names=[str(name) for name in bunch.feature_names],
    )


def call_registered_dataset(name: str, kwargs: dict, *, field: str) -> Any:
    """What the registered dataset ``name`` returns; its own errors (it is user code) in one line."""
    fn = registry.datasets.get(name, field=field)
    try:
        return fn(**kwargs)
    except TrainkitError:
        raise
    except Exception as err:
        raise user_code_error(err, f"{field}: dataset '{name}'") from None


def load_arrays(source: ArraysSource) -> Loaded:
    value = call_registered_dataset(source.name, source.kwargs, field="data.source.name")
    if isinstance(value, tuple) and len(value) == 2:
        return Loaded({"all": _arrays(*value)})
    if isinstance(value, dict):
        unknown = set(value) - set(SPLITS)
        if unknown or "train" not in value:
            raise ConfigError(
                f"data.source.name: dataset '{source.name}' must return (x, y) or a dict with "
                f"'train' and optionally 'validation'/'test', got keys {sorted(value)}"
            )
        return Loaded({k: _arrays(x, y) for k, (x, y) in value.items()})
    raise ConfigError(
        f"data.source.name: dataset '{source.name}' must return (x, y) or a dict of splits, "
        f"got {type(value).__name__}"
    )


def _per_split(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {"all": value}


def load_csv(source: CsvSource) -> Loaded:
    """Each CSV file read into memory; text labels become classes (sorted)."""
    tables = {split: _read_csv(path, source) for split, path in _per_split(source.path).items()}
    first_file, header, _ = next(iter(tables.values()))
    for path, cols, _rows in tables.values():
        if cols != header:
            raise ConfigError(f"data.source.path: {path} has columns {cols}, unlike the first file's {header}")
    field_prefix = "data.source"
    if source.label not in header:
        raise ConfigError(
            f"{field_prefix}.label: no column '{source.label}' in {first_file}; "
            f"{did_you_mean(source.label, header)} (columns: {', '.join(header)})"
        )
    features = source.features or [c for c in header if c != source.label]
    for i, name in enumerate(features):
        if name not in header:
            raise ConfigError(
                f"{field_prefix}.features.{i}: no column '{name}'; {did_you_mean(name, header)} "
                f"(columns: {', '.join(header)})"
            )
    for name in source.column_types:
        if name not in header:
            raise ConfigError(
                f"{field_prefix}.column_types: no column '{name}'; {did_you_mean(name, header)}"
            )
    if not features:
        raise ConfigError(f"{field_prefix}.features: no feature columns besides the label '{source.label}'")
    all_rows = [row for _, _, rows in tables.values() for row in rows]
    types = {c: source.column_types.get(c) or _infer_type([r[header.index(c)] for r in all_rows]) for c in header}
    text = _text_feature(features, types, field_prefix)
    label_type = types[source.label]
    classes = sorted({r[header.index(source.label)] for r in all_rows}) if label_type == "string" else None
    splits = {}
    for split, (path, _, rows) in tables.items():
        if text is not None:
            x = np.array([r[header.index(text)] for r in rows], dtype=object)
        else:
            x = np.empty((len(rows), len(features)), np.float32)
            for j, name in enumerate(features):
                x[:, j] = _column(rows, header.index(name), types[name], path, name)
        if classes is not None:
            index = {c: i for i, c in enumerate(classes)}
            y = np.array([index[r[header.index(source.label)]] for r in rows], np.int64)
        else:
            if label_type == "int":
                y = _class_column(rows, header.index(source.label), path, source.label)
            else:
                y = _column(rows, header.index(source.label), label_type, path, source.label).astype(np.float32)
        splits[split] = Split(size=len(rows), arrays=(x, y))
    return Loaded(splits, class_names=classes, num_classes=len(classes) if classes else None, feature_names=list(features))


def _text_feature(features: list[str], types: dict[str, str], field_prefix: str) -> str | None:
    """The one text column among ``features`` (a string feature), else None; text
    beside other feature columns is refused."""
    text = [name for name in features if types[name] == "string"]
    if not text:
        return None
    if len(features) > 1:
        raise ConfigError(
            f"{field_prefix}.features: column '{text[0]}' holds text; a text column must be the only feature "
            f"(features: [{text[0]}]), and other feature columns numbers"
        )
    return text[0]


def _read_csv(path: str, source: CsvSource, *, gaps: bool = False) -> tuple[str, list[str], list[list[str]]]:
    """The header and rows of a UTF-8 CSV file (a byte-order mark is not part of the header).

    ``gaps``: a blank row between rows stays, as a row of empty cells (a series
    must not close up around a missing step); otherwise blank rows are left out,
    and the rows keep their numbers in messages either way.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"data.source.path: no such file: {path}")
    numbered = []
    try:
        with open(file, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=source.delimiter)
            header = next(reader, None)
            if not header:
                raise ConfigError(f"data.source.path: {path} is empty (a header row is needed)")
            header = [h.strip() for h in header]
            other = next((c for c in ",;\t|" if len(header) == 1 and c != source.delimiter and c in header[0]), None)
            if other is not None:  # (a one-column table is no dataset: the file is split by another character)
                raise ConfigError(
                    f"data.source.path: {path}: the header is one column, '{header[0][:60]}', split by {other!r}, not by "
                    f"{source.delimiter!r}; set data.source.delimiter: {other!r}"
                )
            twice = next((name for i, name in enumerate(header) if name in header[:i]), None)
            if twice is not None:
                raise ConfigError(f"data.source.path: {path}: the header names the column '{twice}' twice; rename one")
            numbered = [(number, row) for number, row in enumerate(reader, start=2)]
    except UnicodeDecodeError as err:
        raise ConfigError(f"data.source.path: {path} is not UTF-8 text ({err.reason}); save it as UTF-8") from None
    blank = [not (row and any(cell.strip() for cell in row)) for _, row in numbered]
    while blank and blank[-1]:  # blank lines at the end of the file are no rows
        blank.pop(), numbered.pop()
    if gaps:
        numbered = [(number, [""] * len(header) if empty else row) for (number, row), empty in zip(numbered, blank, strict=True)]
    else:
        numbered = [item for item, empty in zip(numbered, blank, strict=True) if not empty]
    if not numbered:
        raise ConfigError(f"data.source.path: {path} has a header but no data rows: the dataset is empty")
    for number, row in numbered:
        if len(row) != len(header):
            raise ConfigError(
                f"data.source.path: {path}, row {number} has {len(row)} values but the header has {len(header)}"
            )
    return path, header, [row for _, row in numbered]


def _infer_type(values: list[str]) -> str:
    def all_parse(kind: type) -> bool:
        try:
            for v in values:
                kind(v)
        except ValueError:
            return False
        return True

    return "int" if all_parse(int) else "float" if all_parse(float) else "string"


def _column(rows: list[list[str]], j: int, kind: str, path: str, name: str) -> np.ndarray:
    out = np.empty(len(rows), np.float64)
    for i, row in enumerate(rows):
        try:
            out[i] = float(row[j])
        except ValueError:
            raise ConfigError(
                f"data.source: {path}, row {i + 2}, column '{name}': {row[j]!r} is not a number"
            ) from None
    return out


def _class_column(rows: list[list[str]], j: int, path: str, name: str) -> np.ndarray:
    """Class labels: exact integers only (``1e23`` or ``2.5`` would silently become another class)."""
    out = np.empty(len(rows), np.int64)
    for i, row in enumerate(rows):
        text = row[j].strip()
        try:
            value = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                number = float("nan")
            if not (number.is_integer() and abs(number) < 2**53):
                raise ConfigError(
                    f"data.source: {path}, row {i + 2}, column '{name}': {row[j]!r} is not an exact integer, "
                    "and class labels must be (declare the column float in data.source.column_types for a regression)"
                ) from None
            value = int(number)
        if not -(2**63) <= value < 2**63:
            raise ConfigError(f"data.source: {path}, row {i + 2}, column '{name}': {row[j]!r} is too large for a class label")
        out[i] = value
    return out


# ------------------------------------------------------------------- JSON lines


def load_jsonl(source: JsonlSource) -> Loaded:
    """Each JSON-lines file read into memory; numbers or one text key as features."""
    tables = {split: _read_jsonl(path) for split, path in _per_split(source.path).items()}
    first_file, records = next(iter(tables.values()))
    keys = list(records[0])
    if source.label not in keys:
        raise ConfigError(
            f"data.source.label: no key '{source.label}' in {first_file}; {did_you_mean(source.label, keys)} (keys: {', '.join(keys)})"
        )
    features = source.features or [k for k in keys if k != source.label]
    for i, name in enumerate(features):
        if name not in keys:
            raise ConfigError(f"data.source.features.{i}: no key '{name}' in {first_file}; {did_you_mean(name, keys)} (keys: {', '.join(keys)})")
    if not features:
        raise ConfigError(f"data.source.features: no feature keys besides the label '{source.label}'")
    columns = {name: _json_column(tables, name) for name in [*features, source.label]}
    types = {name: kind for name, (kind, _) in columns.items()}
    text = _text_feature(features, types, "data.source")
    label_kind, labels = columns[source.label]
    classes = sorted({v for split in labels.values() for v in split}) if label_kind == "string" else None
    splits = {}
    for split in tables:
        if text is not None:
            x = np.array(columns[text][1][split], dtype=object)
        else:
            x = np.array([columns[name][1][split] for name in features], np.float32).T.reshape(-1, len(features))
        y = labels[split]
        if classes is not None:
            y = np.array([classes.index(v) for v in y], np.int64)
        else:
            y = np.array(y, np.int64 if label_kind == "int" else np.float32)
        splits[split] = Split(size=len(y), arrays=(x, y))
    return Loaded(splits, class_names=classes, num_classes=len(classes) if classes else None, feature_names=list(features))


def _read_jsonl(path: str) -> tuple[str, list[dict]]:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"data.source.path: no such file: {path}")
    records = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"data.source.path: {path}, line {number}: not JSON ({err.msg})") from None
        if not isinstance(value, dict):
            raise ConfigError(f"data.source.path: {path}, line {number}: a JSON {type(value).__name__}; expected an object per line")
        records.append((number, value))
    if not records:
        raise ConfigError(f"data.source.path: {path} has no lines: the dataset is empty")
    for number, value in records:
        if set(value) != set(records[0][1]):
            raise ConfigError(f"data.source.path: {path}, line {number} has keys {sorted(value)}, unlike line {records[0][0]}'s {sorted(records[0][1])}")
    return path, [value for _, value in records]


def _json_column(tables: dict[str, tuple[str, list[dict]]], name: str) -> tuple[str, dict[str, list]]:
    """A key's values per split, and their kind: ``string``, ``int`` or ``float``."""
    values = {split: [record[name] for record in records] for split, (_, records) in tables.items()}
    every = [v for split in values.values() for v in split]
    if all(isinstance(v, str) for v in every):
        return "string", values
    if all(isinstance(v, int) and not isinstance(v, bool) for v in every):
        return "int", values
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in every):
        return "float", values
    for path, records in tables.values():
        for record in records:
            if not isinstance(record[name], int | float | str) or isinstance(record[name], bool):
                raise ConfigError(f"data.source: {path}, key '{name}': {json.dumps(record[name])} is neither a number nor text")
    raise ConfigError(f"data.source: key '{name}' mixes numbers and text; a key holds one or the other")


# ------------------------------------------------------------------- text folders


def load_text_folder(source: TextFolderSource) -> Loaded:
    """Every file's text read into memory (a string per example), a label per class folder."""
    roots = _per_split(source.path)
    classes = _class_folders(roots, source.class_names, what="text files")
    extensions = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in source.extensions}
    splits, skipped = {}, []
    for split, root in roots.items():
        texts, labels = [], []
        for label, name in enumerate(classes):
            for file in sorted((Path(root) / name).rglob("*")):
                if not (file.is_file() and file.suffix.lower() in extensions):
                    continue
                text = _read_text(file, source, skipped)
                if text is not None:
                    texts.append(text)
                    labels.append(label)
        if not texts:
            raise ConfigError(
                f"data.source.path: no text files ({', '.join(sorted(extensions))}) in the class folders of {root}: the dataset is empty"
            )
        splits[split] = Split(size=len(texts), arrays=(np.array(texts, dtype=object), np.array(labels, np.int64)))
    return Loaded(splits, num_classes=len(classes), class_names=classes, label_kind="class", skipped=skipped)


def _read_text(file: Path, source: TextFolderSource, skipped: list[str]) -> str | None:
    try:
        return file.read_bytes().decode(source.encoding)
    except UnicodeDecodeError as err:
        if source.skip_bad_files:
            skipped.append(str(file))
            return None
        raise ConfigError(
            f"data.source: {file} is not valid {source.encoding} text (byte {err.start}); fix it, set "
            "data.source.encoding, or set data.source.skip_bad_files: true to skip and count such files"
        ) from None
    except LookupError:
        raise ConfigError(f"data.source.encoding: '{source.encoding}' is not a text encoding Python knows (e.g. utf-8, latin-1)") from None


def _class_folders(roots: dict[str, str], class_names: list[str] | None, *, what: str) -> list[str]:
    """The class folders (``class_names``, else every subfolder sorted), checked in every root."""
    for root in roots.values():
        if not Path(root).is_dir():
            raise ConfigError(f"data.source.path: no such folder: {root}")
    first_root = next(iter(roots.values()))
    found = sorted(p.name for p in Path(first_root).iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = list(class_names or found)
    if not classes:
        raise ConfigError(
            f"data.source.path: {first_root} has no class subfolders (expected one folder per class, "
            f"e.g. pos/ and neg/, holding the {what}): the dataset is empty"
        )
    for root in roots.values():
        for name in classes:
            if not (Path(root) / name).is_dir():
                present = sorted(p.name for p in Path(root).iterdir() if p.is_dir())
                raise ConfigError(f"data.source.class_names: no folder '{name}' in {root}; {did_you_mean(name, present)}")
    return classes


# ------------------------------------------------------------------- image folders

_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"GIF87a": "gif",
    b"GIF89a": "gif",
    b"BM": "bmp",
}


def _looks_like_image(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return any(head.startswith(magic) for magic in _MAGIC)


def load_image_folder(source: ImageFolderSource) -> Loaded:
    """A file list per split (cheap); images are decoded in the pipeline.

    Every file's first bytes are checked for an image signature (PNG, JPEG, GIF,
    BMP) so that a bad file is named before training starts.
    """
    roots = _per_split(source.path)
    for root in roots.values():
        if not Path(root).is_dir():
            raise ConfigError(f"data.source.path: no such folder: {root}")
    first_root = next(iter(roots.values()))
    found = sorted(p.name for p in Path(first_root).iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = list(source.class_names or found)
    if not classes:
        raise ConfigError(
            f"data.source.path: {first_root} has no class subfolders (expected one folder per class, "
            "e.g. cat/ and dog/, holding the images): the dataset is empty"
        )
    extensions = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in source.extensions}
    splits, skipped = {}, []
    for split, root in roots.items():
        paths, labels = [], []
        for label, name in enumerate(classes):
            folder = Path(root) / name
            if not folder.is_dir():
                present = sorted(p.name for p in Path(root).iterdir() if p.is_dir())
                raise ConfigError(
                    f"data.source.class_names: no folder '{name}' in {root}; {did_you_mean(name, present)}"
                )
            for file in sorted(folder.rglob("*")):
                if file.is_file() and file.suffix.lower() in extensions:
                    if not _looks_like_image(str(file)):
                        if source.skip_bad_images:
                            skipped.append(str(file))
                            continue
                        raise ConfigError(
                            f"data.source: {file} is not a readable image (PNG, JPEG, GIF or BMP); "
                            "remove it, or set data.source.skip_bad_images: true to skip and count such files"
                        )
                    paths.append(str(file))
                    labels.append(label)
        if not paths:
            raise ConfigError(
                f"data.source.path: no images ({', '.join(sorted(extensions))}) in the class folders of "
                f"{root}: the dataset is empty"
            )
        splits[split] = Split(
            size=len(paths),
            table=(np.array(paths), np.array(labels, np.int64)),
            load=_image_loader(source, paths[0]),
        )
    return Loaded(
        splits,
        num_classes=len(classes),
        class_names=classes,
        label_kind="class",
        skipped=skipped,
        ignore_errors=source.skip_bad_images,
    )


def first_unreadable_image(paths: Iterable[str], *, channels: int) -> tuple[str, str] | None:
    """The first file of ``paths`` that does not decode as an image, with the reason."""
    import tensorflow as tf

    for path in paths:
        path = path.decode() if isinstance(path, bytes) else str(path)
        try:
            tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
        except tf.errors.OpError as err:
            return path, first_line(err)
    return None


def _image_loader(source: ImageFolderSource, first: str) -> Callable:
    import tensorflow as tf

    size = source.image_size
    if size is None:
        try:
            image = tf.io.decode_image(tf.io.read_file(first), channels=source.channels, expand_animations=False)
        except tf.errors.OpError:
            raise ConfigError(f"data.source: {first} could not be decoded as an image") from None
        size = (int(image.shape[0]), int(image.shape[1]))
    channels = source.channels

    def load(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
        image.set_shape([None, None, channels])
        image = tf.image.resize(image, size)  # float32, values 0..255 (as Keras's image loaders)
        return image, label

    return load


# -------------------------------------------------------------------------- TFDS


def _tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ConfigError("data.source: type 'tfds' needs tensorflow-datasets: pip install tensorflow-datasets") from None
    return tfds


def load_tfds(source: TfdsSource) -> Loaded:
    """Open a prepared TFDS dataset with ``download=False`` semantics: if it is not on
    disk this fails at once (TFDS would otherwise retry downloads for minutes)."""
    tfds = _tfds()
    name = f"{source.name}:{source.version}" if source.version else source.name
    try:
        builder = tfds.builder(name, data_dir=source.data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ConfigError(
            f"data.source.name: TFDS has no dataset '{source.name}'; "
            f"{did_you_mean(source.name, tfds.list_builders(with_community_datasets=False))}"
        ) from None
    except (ValueError, AssertionError) as err:  # e.g. an unknown version
        raise ConfigError(f"data.source: TFDS dataset '{name}': {first_line(err)}") from None
    info = builder.info
    if source.as_supervised and source.features is None and not info.supervised_keys:
        raise ConfigError(
            f"data.source: TFDS dataset '{source.name}' has no supervised keys; set data.source.features "
            f"and data.source.label (its features: {', '.join(info.features.keys())})"
        )
    keys, label_key = _tfds_keys(source, info)
    splits = {}
    for split, expression in source.splits.items():
        try:
            ds = builder.as_dataset(split=expression, shuffle_files=False, as_supervised=keys is None)
        except AssertionError:  # TFDS's "could not find data in ..." when not prepared
            raise ConfigError(_not_prepared(source, builder)) from None
        except (ValueError, KeyError) as err:
            known = list(info.splits.keys())
            base = expression.split("[")[0]
            hint = f"{did_you_mean(base, known)}" if known else first_line(err)
            raise ConfigError(
                f"data.source.splits.{split}: TFDS dataset '{source.name}' has no split '{expression}'; {hint}"
            ) from None
        size = int(ds.cardinality())
        if size < 0:
            size = int(ds.reduce(np.int64(0), lambda n, _: n + 1))
        if size == 0:
            raise ConfigError(f"data.source.splits.{split}: TFDS split '{expression}' is empty")
        load = _tfds_load(keys, label_key)  # picks keys: the same on a batch as on one example
        splits[split] = Split(size=size, stream=_tfds_stream(builder, expression, keys), load=load, load_batch=load)
    num_classes = None
    if label_key is not None:
        label_feature = info.features[label_key]
        num_classes = getattr(label_feature, "num_classes", None)
    return Loaded(
        splits,
        num_classes=num_classes,
        class_names=list(info.features[label_key].names) if num_classes else None,
        label_kind="class" if num_classes else None,
    )


def _tfds_keys(source: TfdsSource, info: Any) -> tuple[list[str] | None, str | None]:
    """The feature keys the recipe names (None: the supervised pair) and the label's key."""
    if source.features is None:
        return None, info.supervised_keys[1] if info.supervised_keys else None
    keys = [source.features] if isinstance(source.features, str) else list(source.features)
    for key in [*keys, source.label]:
        if key not in info.features:
            raise ConfigError(
                f"data.source: TFDS dataset '{source.name}' has no feature '{key}'; "
                f"{did_you_mean(key, info.features.keys())}"
            )
    return keys, source.label


def _tfds_stream(builder: Any, expression: str, keys: list[str] | None) -> Callable:
    def stream():
        return builder.as_dataset(split=expression, shuffle_files=False, as_supervised=keys is None)

    return stream


def _tfds_load(keys: list[str] | None, label_key: str | None) -> Callable:
    if keys is None:
        return lambda x, y: (x, y)

    def load(example):
        x = {k: example[k] for k in keys}
        return (x[keys[0]] if len(keys) == 1 else x), example[label_key]

    return load


def _tfds_root(builder: Any) -> Path:
    """The data_dir a builder's files live under: ``ROOT/NAME[/CONFIG]/VERSION``."""
    levels = 3 if getattr(builder, "builder_config", None) is not None else 2
    return Path(builder.data_dir).parents[levels - 1]


def _not_prepared(source: TfdsSource, builder: Any) -> str:
    data_dir = source.data_dir or (_tfds_root(builder) if builder.data_dir else None)
    where = f"data_dir {data_dir}" + ("" if source.data_dir else " (data.source.data_dir unset: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    return (
        f"data.source: TFDS dataset '{source.name}' is not prepared in {where} and trainkit never downloads; "
        f"on a machine with network run `tfds build {source.name} --data_dir DIR`, then copy DIR/{source.name} "
        f"to {data_dir}/ or point data.source.data_dir at DIR"
    )


# ---------------------------------------------------------------------- TFRecord


def _expand(patterns: str | list[str], *, field_name: str) -> list[str]:
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    files: list[str] = []
    for pattern in patterns:
        matched = sorted(glob.glob(pattern))
        if not matched:
            raise ConfigError(f"{field_name}: no file matches {pattern}")
        files.extend(matched)
    return files


def load_tfrecord(source: TfrecordSource) -> Loaded:
    """Streams records; one pass counts them and reads the labels (cheaply, parsing
    only the label) so that sizes and classes are known before training."""
    import tensorflow as tf

    specs = source.features
    parse_spec = {k: tf.io.FixedLenFeature(s.shape if not s.image else [], tf.string if s.image else s.dtype) for k, s in specs.items()}
    inputs = [source.inputs] if isinstance(source.inputs, str) else list(source.inputs)
    compression = None if source.compression == "none" else source.compression
    label_spec = specs[source.label]

    load, load_batch = _tfrecord_loaders(source, parse_spec, inputs)

    splits = {}
    low, high, kind = None, None, None
    for split, patterns in _per_split(source.files).items():
        where = "data.source.files" + (f".{split}" if split != "all" else "")
        files = _expand(patterns, field_name=where)

        if compression is None:
            for file in files:
                _check_whole_records(file, field_name=where)

        def stream(files=files):
            return tf.data.TFRecordDataset(files, compression_type=compression)

        try:
            labels = stream().batch(1024).map(
                plain(lambda records: tf.io.parse_example(records, {source.label: parse_spec[source.label]})[source.label])
            )
            count, lo, hi = 0, None, None
            for batch in labels.as_numpy_iterator():
                count += len(batch)
                if batch.size and label_spec.dtype == "int64":
                    lo = batch.min() if lo is None else min(lo, batch.min())
                    hi = batch.max() if hi is None else max(hi, batch.max())
        except tf.errors.DataLossError as err:
            raise ConfigError(f"{where}: not a readable TFRecord file ({first_line(err)})") from None
        except tf.errors.InvalidArgumentError as err:
            raise ConfigError(f"data.source.features.{source.label}: the label cannot be parsed as given: {first_line(err)}") from None
        if count == 0:
            raise ConfigError(f"{where}: the TFRecord files hold no records: the dataset is empty")
        if lo is not None:
            low = lo if low is None else min(low, lo)
            high = hi if high is None else max(high, hi)
        splits[split] = Split(size=count, stream=stream, load=load, load_batch=load_batch)
    if label_spec.dtype == "int64":
        kind = "class"
    elif label_spec.dtype == "float32":
        kind = "real"
    else:
        raise ConfigError(f"data.source.features.{source.label}: a label must be int64 (classes) or float32")
    return Loaded(splits, label_kind=kind, label_range=(int(low), int(high)) if low is not None else None)


def _tfrecord_loaders(source: TfrecordSource, parse_spec: dict, inputs: list[str]) -> tuple[Callable, Callable | None]:
    """The per-record ``load`` and, unless an input is an image (``decode_image`` takes
    one image at a time), the ``load_batch`` that parses a whole batch of records at once."""
    import tensorflow as tf

    specs = source.features

    def load_batch(records):
        example = tf.io.parse_example(records, parse_spec)
        x = {key: example[key] for key in inputs}
        return (x[inputs[0]] if len(inputs) == 1 else x), example[source.label]

    batchable = not any(specs[key].image for key in inputs)  # decode_image takes one image at a time

    def load(record):
        example = tf.io.parse_single_example(record, parse_spec)
        x = {}
        for key in inputs:
            value = example[key]
            if specs[key].image:
                value = tf.io.decode_image(value, channels=specs[key].channels, expand_animations=False)
                if specs[key].shape:
                    value = tf.ensure_shape(value, specs[key].shape)
            x[key] = value
        return (x[inputs[0]] if len(inputs) == 1 else x), example[source.label]

    return load, load_batch if batchable else None


def _check_whole_records(path: str, *, field_name: str) -> None:
    """Refuse a TFRecord file that ends inside a record.

    TensorFlow's reader takes a file cut inside a record's 12-byte header for a
    clean end, so a truncated file would silently train on fewer records. The
    framing (8-byte length, 4-byte CRC, data, 4-byte CRC) is walked here by
    seeking, without reading the data.
    """
    size = os.path.getsize(path)
    records, offset = 0, 0
    with open(path, "rb") as f:
        while offset < size:
            header = f.read(8)
            if len(header) < 8:
                break
            length = struct.unpack("<Q", header)[0]
            end = offset + 12 + length + 4
            if end > size:
                break
            f.seek(end)
            offset, records = end, records + 1
    if offset != size:
        raise ConfigError(
            f"{field_name}: {path} is truncated: it ends inside record {records + 1} after {records} whole "
            f"record(s) ({size - offset} stray bytes at the end); restore the file, or cut it at byte {offset}"
        )


# --------------------------------------------------------------------- generators


def load_generator(source: GeneratorSource) -> Loaded:
    """A registered generator function; one pass counts its examples and reads its
    labels, and its first example gives the element spec."""
    import tensorflow as tf

    fn = registry.datasets.get(source.name, field="data.source.name")
    takes_split = "split" in inspect.signature(fn).parameters
    if source.splits and not takes_split:
        raise ConfigError(f"data.source.splits: dataset '{source.name}' must accept a split= argument to be called per split")
    names = list(source.splits) if source.splits else ["all"]
    splits = {}
    low = high = None
    kinds = set()
    signature = None
    for split in names:
        kwargs = dict(source.kwargs, **({"split": split} if source.splits else {}))
        count = 0
        for example in _user_generator(_call_generator(fn, source.name, kwargs), source.name):
            if not (isinstance(example, tuple | list) and len(example) == 2):
                raise ConfigError(f"data.source.name: dataset '{source.name}' must yield (x, y) pairs, got {type(example).__name__}")
            x, y = example
            if signature is None:
                signature = (_spec_of(x), _spec_of(y))
            y = np.asarray(y)
            if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
                kinds.add("class")
                lo, hi = int(y.min()), int(y.max())
                low = lo if low is None else min(low, lo)
                high = hi if high is None else max(high, hi)
            else:
                kinds.add("real")
            count += 1
        if count == 0:
            raise ConfigError(f"data.source.name: dataset '{source.name}' yielded no examples{'' if split == 'all' else f' for split {split}'}: the dataset is empty")

        def stream(kwargs=kwargs, signature=signature):
            return tf.data.Dataset.from_generator(lambda: _call_generator(fn, source.name, kwargs), output_signature=signature)

        splits[split] = Split(size=count, stream=stream, load=lambda x, y: (x, y))
    kind = "real" if "real" in kinds else "class"
    return Loaded(splits, label_kind=kind, label_range=(low, high) if low is not None and kind == "class" else None)


def _call_generator(fn: Callable, name: str, kwargs: dict) -> Iterable:
    try:
        return iter(fn(**kwargs))
    except TypeError as err:
        raise ConfigError(f"data.source: dataset '{name}' cannot be called with {kwargs}: {first_line(err)}") from None


def _user_generator(examples: Iterable, name: str) -> Iterator:
    """``examples``, with an exception raised while generating them made one line."""
    try:
        yield from examples
    except TrainkitError:
        raise
    except Exception as err:
        raise user_code_error(err, f"data.source.name: dataset '{name}'") from None


def _spec_of(value: Any):
    import tensorflow as tf

    if isinstance(value, dict):
        return {k: _spec_of(v) for k, v in value.items()}
    array = np.asarray(value)
    dtype = tf.float32 if array.dtype == np.float64 else tf.as_dtype(array.dtype)
    return tf.TensorSpec(array.shape, dtype)


# -------------------------------------------------------------------------------


LOADERS: dict[str, Callable[[Any], Loaded]] = {
    "sklearn": load_sklearn,
    "arrays": load_arrays,
    "csv": load_csv,
    "jsonl": load_jsonl,
    "image_folder": load_image_folder,
    "text_folder": load_text_folder,
    "tfds": load_tfds,
    "tfrecord": load_tfrecord,
    "generator": load_generator,
}


def load(source: Any) -> Loaded:
    """The splits a ``data.source`` section names."""
    return LOADERS[source.type](source)


__all__ = ["LOADERS", "Loaded", "Split", "load"]
