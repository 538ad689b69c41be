"""Named components: the only things a YAML config can refer to.

A :class:`Registry` maps names to Python objects (builder functions, Keras
classes). YAML files name components; they never import code. A Python recipe may
add its own entries with the ``register`` decorators::

    import trainkit

    @trainkit.register_model("tiny_net")
    def tiny_net(*, input_shape, num_outputs, width: int = 16):
        ...

Keras's own layers, losses, metrics, optimizers and callbacks are looked up
lazily (importing Keras costs seconds), so building a registry is free.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from trainkit.errors import ConfigError, did_you_mean


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


class Registry:
    """A namespace of named components of one kind (``kind`` is used in errors).

    ``provider`` is an optional zero-argument function returning more entries
    (for example every class in ``keras.layers``); it runs on first lookup.
    Lookups are exact first, then fall back to snake_case and lowercase aliases,
    so ``SparseCategoricalCrossentropy``, ``sparse_categorical_crossentropy``,
    ``AdamW`` and ``adamw`` all work.
    """

    def __init__(self, kind: str, provider: Callable[[], dict[str, Any]] | None = None):
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._provider = provider
        self._provided = provider is None

    def register(self, name: str | None = None, *, overwrite: bool = False) -> Callable:
        """Decorator adding ``fn`` under ``name`` (default: the function's name).

        Registering a name again from the same module replaces the entry
        quietly: a notebook cell run twice, a recipe file loaded twice in one
        process. The same name from a different module is a clash, named with
        both modules, unless ``overwrite``.
        """

        def add(obj: Any) -> Any:
            key = name or obj.__name__
            old = self._entries.get(key)
            if old is not None and old is not obj and not overwrite:
                old_module, new_module = _module_of(old), _module_of(obj)
                if old_module is None or old_module != new_module:
                    raise ConfigError(
                        f"{self.kind} '{key}' is already registered by {old_module or 'trainkit'}; "
                        f"{new_module} registers another one: pick another name"
                    )
            self._entries[key] = obj
            return obj

        return add

    def _ensure_provided(self) -> None:
        if not self._provided:
            self._provided = True
            for key, obj in self._provider().items():
                self._entries.setdefault(key, obj)

    def __contains__(self, name: str) -> bool:
        self._ensure_provided()
        return name in self._entries or name in self._aliases()

    def _aliases(self) -> dict[str, str]:
        """snake_case and lowercase spellings (``adam_w``, ``adamw``) of each entry."""
        aliases: dict[str, str] = {}
        for key in self._entries:
            for alias in (key.lower(), _snake(key)):
                if alias not in self._entries:
                    aliases.setdefault(alias, key)
        return aliases

    def get(self, name: str, *, field: str = "", where: str = "") -> Any:
        """The entry called ``name``; a :class:`ConfigError` with a suggestion if none."""
        self._ensure_provided()
        if name in self._entries:
            return self._entries[name]
        aliases = self._aliases()
        if name in aliases:
            return self._entries[aliases[name]]
        label = f"{field}: " if field else ""
        origin = f" (in {where})" if where else ""
        raise ConfigError(
            f"{label}unknown {self.kind} '{name}'{origin}; {did_you_mean(name, self._entries)}"
        )

    def names(self) -> list[str]:
        self._ensure_provided()
        return sorted(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _module_of(obj: Any) -> str | None:
    """The module that defined ``obj``; None for Keras's own classes (never replaced)."""
    module = getattr(obj, "__module__", None)
    return None if module is None or module.startswith("keras") else module


def _subclasses_in(module: Any, base: type) -> dict[str, Any]:
    """Public classes in ``module`` that subclass ``base``."""
    out = {}
    for key in dir(module):
        obj = getattr(module, key)
        if isinstance(obj, type) and issubclass(obj, base) and not key.startswith("_"):
            out[key] = obj
    return out


def _keras_layers() -> dict[str, Any]:
    import keras

    return _subclasses_in(keras.layers, keras.layers.Layer)


def _keras_losses() -> dict[str, Any]:
    import keras

    out = _subclasses_in(keras.losses, keras.losses.Loss)
    out.pop("Loss", None)
    out.pop("LossFunctionWrapper", None)
    # Short aliases Keras users know from compile(loss="mse").
    for alias, cls in {"mse": "MeanSquaredError", "mae": "MeanAbsoluteError"}.items():
        out[alias] = getattr(keras.losses, cls)
    return out


def _keras_metrics() -> dict[str, Any]:
    import keras

    out = _subclasses_in(keras.metrics, keras.metrics.Metric)
    for generic in ("Metric", "Mean", "Sum", "MeanMetricWrapper", "Reduce"):
        out.pop(generic, None)
    for alias, cls in {
        "mse": "MeanSquaredError",
        "mae": "MeanAbsoluteError",
        "rmse": "RootMeanSquaredError",
    }.items():
        out[alias] = getattr(keras.metrics, cls)
    return out


def _keras_optimizers() -> dict[str, Any]:
    import keras

    out = _subclasses_in(keras.optimizers, keras.optimizers.Optimizer)
    for generic in ("Optimizer", "LossScaleOptimizer"):
        out.pop(generic, None)
    return out


def _keras_callbacks() -> dict[str, Any]:
    import keras

    out = _subclasses_in(keras.callbacks, keras.callbacks.Callback)
    for generic in ("Callback", "CallbackList", "History", "ProgbarLogger", "BackupAndRestore"):
        out.pop(generic, None)
    return out


layers = Registry("layer", _keras_layers)
losses = Registry("loss", _keras_losses)
metrics = Registry("metric", _keras_metrics)
optimizers = Registry("optimizer", _keras_optimizers)
callbacks = Registry("callback", _keras_callbacks)
models = Registry("model builder")
datasets = Registry("dataset")
transforms = Registry("transform")

register_model = models.register
register_dataset = datasets.register
register_transform = transforms.register
register_layer = layers.register
register_loss = losses.register
register_metric = metrics.register
