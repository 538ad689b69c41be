"""Pretrained sources: ``model.type: pretrained`` and ``model.init``.

A source is one of:

- a trainkit run directory: its ``model.keras`` architecture with the weights of
  ``source_checkpoint`` (``final``, ``last``, ``best`` or a step number);
- a ``.keras`` file;
- a KerasHub preset directory (``save_to_preset``), or a ``kaggle://`` /
  ``hf://`` handle when the network is reachable.

``head: replace`` drops the source's output layer (or everything after
``cut_at``) and adds a dense head sized from the data, as the builders do.

A run keeps the source model it started from in ``pretrained_source.keras``, so
evaluating, exporting or resuming it never needs the original again; the
recipe's identity holds a digest of the source's weights (:func:`digest`), so a
source that changed under a run is noticed.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from trainkit import registry
from trainkit.errors import ConfigError, TrainkitError

#: Inside a run directory: the source model as the run first loaded it.
STORED_SOURCE = "pretrained_source.keras"

_ONLINE_SCHEMES = ("kaggle://", "hf://")
_KINDS = "a trainkit run directory, a .keras file, a KerasHub preset directory, or a kaggle:// or hf:// handle"


@dataclass
class SourceUse:
    """One pretrained source a built recipe used."""

    field: str
    source: str
    digest: str
    model: Any
    """The source model as loaded (before any head change)."""


def digest(model) -> str:
    """A digest of every weight's path, shape and bytes (16 hex digits)."""
    import numpy as np

    h = hashlib.sha256()
    for variable in model.weights:
        value = np.ascontiguousarray(variable.numpy())
        h.update(f"{variable.path}:{value.dtype}:{value.shape};".encode())
        h.update(value.tobytes())
    return h.hexdigest()[:16]


def is_available(source: str) -> bool:
    """Whether the source can be read here (a local path that exists, or an online handle)."""
    return source.startswith(_ONLINE_SCHEMES) or Path(source).exists()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _online(host: str, seconds: float = 3.0) -> bool:
    if os.environ.get("TRAINKIT_OFFLINE"):
        return False
    try:
        socket.create_connection((host, 443), timeout=seconds).close()
    except OSError:
        return False
    return True


def load_source(source: str, *, checkpoint: str = "final", field: str) -> Any:
    """The keras.Model a source names, with its weights."""
    import keras

    if source.startswith(_ONLINE_SCHEMES):
        host = "www.kaggle.com" if source.startswith("kaggle://") else "huggingface.co"
        if not _online(host):
            raise ConfigError(
                f"{field}: {source} needs a download from {host}, which cannot be reached from here; "
                "on a machine with network run keras_hub.models.Backbone.from_preset"
                f"('{source}').save_to_preset('DIR') (a task class for its preprocessor too), "
                f"copy DIR here and set {field}: DIR"
            )
        return _load_preset(source, field=field)
    path = Path(source)
    if not path.exists():
        hint = " (a KerasHub preset name needs the network: write kaggle://OWNER/MODEL/keras/PRESET)" if "/" not in source else ""
        raise ConfigError(f"{field}: '{source}' does not exist; give {_KINDS}{hint}")
    if path.is_dir() and (path / "config.yaml").is_file():
        return _load_run(path, checkpoint, field=field)
    if path.is_dir() and (path / "config.json").is_file() and (path / "metadata.json").is_file():
        return _load_preset(str(path), field=field)
    if path.is_file() and path.suffix == ".keras":
        try:
            return keras.saving.load_model(path, compile=False)
        except Exception as err:
            raise ConfigError(f"{field}: {source} cannot be loaded as a Keras model: {_first_line(err)}") from None
    raise ConfigError(f"{field}: '{source}' is not {_KINDS}")


def _load_run(path: Path, checkpoint: str, *, field: str):
    import keras

    from trainkit.api import load_checkpoint_weights
    from trainkit.training.run_dir import RunDir

    directory = RunDir(path)
    if not directory.model_file.is_file():
        raise ConfigError(
            f"{field}: the run {path} has no model.keras (its architecture); train it to the end "
            "with export.formats including keras"
        )
    model = keras.saving.load_model(directory.model_file, compile=False)
    try:
        load_checkpoint_weights(model, directory, str(checkpoint), field=f"{field}_checkpoint")
    except TrainkitError as err:
        raise ConfigError(str(err)) from None
    return model


def _load_preset(preset: str, *, field: str):
    try:
        import keras_hub
    except ImportError:
        raise ConfigError(f"{field}: {preset} is a KerasHub preset; install the hub extra (pip install -e .[hub])") from None
    try:
        return keras_hub.models.Backbone.from_preset(preset)
    except Exception as err:
        raise ConfigError(f"{field}: the KerasHub preset {preset} cannot be loaded: {_first_line(err)}") from None


def with_head(
    source_model,
    *,
    head: str,
    cut_at: str | None,
    task: str,
    num_outputs: int,
    output_activation: str | None,
):
    """``head: keep`` returns the source model; ``replace`` cuts it and adds a new head."""
    import keras

    if head == "keep":
        if cut_at is not None:
            raise ConfigError("model.cut_at: only with head: replace (keep uses the source's own head)")
        return source_model
    names = [layer.name for layer in source_model.layers]
    if cut_at is not None:
        if cut_at not in names:
            from trainkit.errors import did_you_mean

            raise ConfigError(f"model.cut_at: the source has no layer '{cut_at}'; {did_you_mean(cut_at, names)}")
        features = source_model.get_layer(cut_at).output
    else:
        features = source_model.layers[-1].input
    if isinstance(features, list | tuple | dict):
        raise ConfigError("model.cut_at: the cut leaves several tensors; cut at a layer with one output")
    if len(features.shape) > 2:
        features = keras.layers.Flatten(name="head_flatten")(features)
    if output_activation == "auto":
        output_activation = "softmax" if task == "classification" else None
    kept = names[: names.index(cut_at) + 1] if cut_at is not None else names[:-1]
    name = "new_output" if "output" in kept else "output"
    outputs = keras.layers.Dense(num_outputs, activation=output_activation, name=name)(features)
    return keras.Model(source_model.inputs, outputs, name=f"{source_model.name}_finetuned")


@registry.register_model("pretrained")
def pretrained(
    *,
    num_outputs: int,
    task: str,
    source: str,
    source_checkpoint: str | int = "final",
    head: Literal["keep", "replace"] = "keep",
    cut_at: str | None = None,
    output_activation: str | None = "auto",
):
    """A model from a pretrained source (see :mod:`trainkit.models.pretrained`)."""
    model, _ = build(
        source=source, source_checkpoint=str(source_checkpoint), head=head, cut_at=cut_at,
        task=task, num_outputs=num_outputs, output_activation=output_activation, stored=None,
    )
    return model


def build(
    *,
    source: str,
    source_checkpoint: str,
    head: str,
    cut_at: str | None,
    task: str,
    num_outputs: int,
    output_activation: str | None,
    stored: Path | None,
) -> tuple[Any, SourceUse]:
    """The model and its source; ``stored`` (a run's copy of its source) stands in
    for a source that is no longer there."""
    import keras

    if not is_available(source) and stored is not None and stored.is_file():
        source_model = keras.saving.load_model(stored, compile=False)
    else:
        source_model = load_source(source, checkpoint=source_checkpoint, field="model.source")
    use = SourceUse("model.source", source, digest(source_model), source_model)
    model = with_head(
        source_model, head=head, cut_at=cut_at, task=task, num_outputs=num_outputs, output_activation=output_activation
    )
    return model, use
