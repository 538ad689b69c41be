"""The ``timeseries`` source: a series cut into windows, split in time order.

The rows of the series are cut by ``data.splits`` in time order (train first,
then validation, then test), and each part is windowed on its own, so no window
and no target crosses a cut. Window ``i`` of a part holds rows
``[i * stride, i * stride + sequence_length)`` of ``columns``; its target is the
row ``horizon - 1`` after the window's last row, of ``targets``: the pairing of
``keras.utils.timeseries_dataset_from_array(data, targets=data[sequence_length + horizon - 1:], ...)``.

Windows are held in memory as arrays (``[windows, sequence_length, columns]``),
so they are a pure function of the series, shuffled and scaled (``data.scale``,
fitted on the training windows only) like any other in-memory source, and an
exported model takes the raw, unscaled window.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainkit.data.sources import Loaded, Split, _read_csv, call_registered_dataset
from trainkit.errors import ConfigError, did_you_mean
from trainkit.recipe import SplitFractions, TimeseriesSource

FIELD = "data.source"


def load_timeseries(source: TimeseriesSource, fractions: SplitFractions) -> Loaded:
    """Train/validation/test windows of the series ``source`` names."""
    table, where, text = _read_series(source)
    columns = _names(source.columns, table, "columns", where, text) if source.columns is not None else list(table)
    if not columns:
        raise ConfigError(f"{FIELD}.columns: {where} has no numeric column to use as an input")
    if source.targets is not None:
        targets = _names(source.targets, table, "targets", where, text)
    elif len(columns) == 1:
        targets = columns
    else:
        raise ConfigError(
            f"{FIELD}.targets: name the column(s) to forecast, one or more of {', '.join(columns)}"
        )
    if not targets:
        raise ConfigError(f"{FIELD}.targets: name at least one column to forecast")
    _check_complete(table, [*columns, *targets], source, where)
    x = np.stack([table[c] for c in columns], axis=1).astype(np.float32)
    y = np.stack([table[c] for c in targets], axis=1).astype(np.float32)
    splits = {
        name: _windows(x[a:b], y[a:b], source, name=name, rows=b - a)
        for name, (a, b) in time_ranges(len(x), fractions, source).items()
    }
    return Loaded(splits, feature_names=columns, label_kind="real")


def time_ranges(n: int, fractions: SplitFractions, source: TimeseriesSource) -> dict[str, tuple[int, int]]:
    """Row ranges of the splits, in time order; each must hold one whole window."""
    n_val = int(round(fractions.validation * n))
    n_test = int(round(fractions.test * n))
    n_train = n - n_val - n_test
    ranges = {"train": (0, n_train), "validation": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
    needed = source.sequence_length + source.horizon
    for name, fraction in (("train", fractions.train), ("validation", fractions.validation), ("test", fractions.test)):
        a, b = ranges[name]
        if fraction > 0 and b - a < needed:
            raise ConfigError(
                f"data.splits.{name}: {fraction:g} of the {n} rows is {b - a} row(s), shorter than one window "
                f"(sequence_length {source.sequence_length} + horizon {source.horizon} = {needed} rows); "
                f"shorten data.source.sequence_length or give {name} a larger share"
            )
    return {k: v for k, v in ranges.items() if v[1] > v[0]}


def _windows(x: np.ndarray, y: np.ndarray, source: TimeseriesSource, *, name: str, rows: int) -> Split:
    length, horizon = source.sequence_length, source.horizon
    starts = np.arange(0, rows - length - horizon + 1, source.stride)
    # [rows - length + 1, columns, length] views, then one copy of the windows wanted.
    views = np.lib.stride_tricks.sliding_window_view(x, length, axis=0)
    windows = np.ascontiguousarray(views[starts].transpose(0, 2, 1))
    labels = y[starts + length + horizon - 1]
    return Split(size=len(starts), arrays=(windows, labels))


def _read_series(source: TimeseriesSource) -> tuple[dict[str, np.ndarray], str, list[str]]:
    """The numeric columns of the series by name (in order; a gap is NaN), what to
    call the series in errors, and the names of its text columns (a date, say)."""
    if source.path is None:
        return _registered(source), f"dataset '{source.name}'", []
    path, header, rows = _read_csv(source.path, source, gaps=True)
    table, text = {}, []
    for j, name in enumerate(header):
        values = _numbers([row[j] for row in rows])
        if values is None:
            text.append(name)
        else:
            table[name] = values
    return table, path, text


def _numbers(cells: list[str]) -> np.ndarray | None:
    """A column's cells as numbers, an empty cell as NaN; None for a text column."""
    out = np.empty(len(cells), np.float64)
    for i, cell in enumerate(cells):
        cell = cell.strip()
        try:
            out[i] = float(cell) if cell else np.nan
        except ValueError:
            return None
    return out


def _check_complete(table: dict[str, np.ndarray], names: list[str], source: TimeseriesSource, where: str) -> None:
    """Refuse a gap (an empty cell, NaN, infinity) in a column the windows use."""
    for name in names:
        bad = np.flatnonzero(~np.isfinite(table[name]))
        if bad.size:
            row = f"row {bad[0] + 2}" if source.path is not None else f"index {bad[0]}"
            raise ConfigError(
                f"{FIELD}: {where}, {row}, column '{name}' has no number (empty, nan or inf); a series needs "
                "a number in every row (fill or drop the gaps first)"
            )


def _registered(source: TimeseriesSource) -> dict[str, np.ndarray]:
    value = call_registered_dataset(source.name, source.kwargs, field=f"{FIELD}.name")
    if isinstance(value, dict):
        table = {str(k): np.asarray(v, np.float64) for k, v in value.items()}
        lengths = {len(v) if v.ndim == 1 else -1 for v in table.values()}
        if len(lengths) != 1 or -1 in lengths:
            raise ConfigError(
                f"{FIELD}.name: dataset '{source.name}' must return 1-D columns of one length, "
                f"got lengths {sorted({str(v.shape) for v in table.values()})}"
            )
        return table
    array = np.asarray(value)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise ConfigError(
            f"{FIELD}.name: dataset '{source.name}' must return a [time, variables] array of numbers "
            f"or a dict of columns, got {type(value).__name__} {getattr(array, 'shape', '')}"
        )
    return {str(j): array[:, j].astype(np.float64) for j in range(array.shape[1])}


def _names(wanted: list[Any], table: dict[str, np.ndarray], field_name: str, where: str, text: list[str]) -> list[str]:
    names = []
    for i, name in enumerate(wanted):
        name = str(name)
        if name in text:
            raise ConfigError(f"{FIELD}.{field_name}.{i}: column '{name}' of {where} holds text; a series variable must be numbers")
        if name not in table:
            raise ConfigError(
                f"{FIELD}.{field_name}.{i}: no numeric column '{name}' in {where}; {did_you_mean(name, table)} "
                f"(numeric columns: {', '.join(table)})"
            )
        names.append(name)
    return names
