"""Data sources: each turns a ``data.source`` section into NumPy arrays per split.

A loader returns either ``{"all": (x, y)}`` (to be split by ``data.splits``) or
``{"train": (x, y), "validation": ..., "test": ...}`` when the source has its own
splits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from trainkit import registry
from trainkit.errors import ConfigError
from trainkit.recipe import ArraysSource, SklearnSource

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]

_SKLEARN = {
    "digits": "load_digits",
    "iris": "load_iris",
    "wine": "load_wine",
    "breast_cancer": "load_breast_cancer",
    "diabetes": "load_diabetes",
}


def load_sklearn(source: SklearnSource) -> Arrays:
    try:
        import sklearn.datasets
    except ImportError:
        raise ConfigError(
            "data.source: type 'sklearn' needs scikit-learn: pip install 'trainkit[examples]'"
        ) from None
    x, y = getattr(sklearn.datasets, _SKLEARN[source.name])(return_X_y=True)
    return {"all": (np.asarray(x), np.asarray(y))}


def load_arrays(source: ArraysSource) -> Arrays:
    fn = registry.datasets.get(source.name, field="data.source.name")
    value = fn(**source.kwargs)
    if isinstance(value, tuple) and len(value) == 2:
        return {"all": (np.asarray(value[0]), np.asarray(value[1]))}
    if isinstance(value, dict):
        unknown = set(value) - {"train", "validation", "test"}
        if unknown or "train" not in value:
            raise ConfigError(
                f"data.source.name: dataset '{source.name}' must return (x, y) or a dict with "
                f"'train' and optionally 'validation'/'test', got keys {sorted(value)}"
            )
        return {k: (np.asarray(x), np.asarray(y)) for k, (x, y) in value.items()}
    raise ConfigError(
        f"data.source.name: dataset '{source.name}' must return (x, y) or a dict of splits, "
        f"got {type(value).__name__}"
    )


LOADERS: dict[str, Callable[[Any], Arrays]] = {"sklearn": load_sklearn, "arrays": load_arrays}


def load(source: Any) -> Arrays:
    return LOADERS[source.type](source)
