"""Pretrained sources: ``model.type: pretrained`` and ``model.init``.

A source is one of:

- a trainkit run directory: its recipe's model with the weights of
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
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from trainkit import registry
from trainkit.errors import ConfigError, first_line
from trainkit.keras_archive import check_keras_archive

#: Inside a run directory: the source model as the run first loaded it.
STORED_SOURCE = "pretrained_source.keras"

_ONLINE_SCHEMES = ("kaggle://", "hf://")
_APPLICATIONS = "keras.applications."
_KINDS = (
    "a trainkit run directory, a .keras file, a KerasHub preset directory, a kaggle:// or hf:// handle, "
    "or keras.applications.NAME (with model.weights: FILE)"
)


@dataclass
class SourceUse:
    """One pretrained source a built recipe used."""

    field: str
    source: str
    digest: str
    model: Any
    """The source model as loaded (before any head change)."""
    saved: bytes | None = None
    """The source model as a ``.keras`` file, taken before freezing or LoRA changed it."""


def keras_bytes(model) -> bytes:
    """``model`` as the bytes of a ``.keras`` file (Keras saves to a path only)."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.keras"
        model.save(path)
        return path.read_bytes()


def digest(model) -> str:
    """A digest of every weight's path, shape and bytes (16 hex digits), LoRA's left out."""
    import numpy as np

    h = hashlib.sha256()
    for variable in model.weights:
        if "lora_kernel" in variable.path:
            continue  # added by model.lora_rank, not the source's
        value = np.ascontiguousarray(variable.numpy())
        h.update(f"{variable.path}:{value.dtype}:{value.shape};".encode())
        h.update(value.tobytes())
    return h.hexdigest()[:16]


def is_available(source: str) -> bool:
    """Whether the source can be read here (a local path that exists, or an online handle)."""
    return source.startswith(_ONLINE_SCHEMES) or Path(source).exists()


def _online(host: str, seconds: float = 3.0) -> bool:
    if os.environ.get("TRAINKIT_OFFLINE"):
        return False
    try:
        socket.create_connection((host, 443), timeout=seconds).close()
    except OSError:
        return False
    return True


def require_network(source: str, *, field: str) -> None:
    """An online handle offline is one line saying how to bring the preset here."""
    host = "www.kaggle.com" if source.startswith("kaggle://") else "huggingface.co"
    if not _online(host):
        raise ConfigError(
            f"{field}: {source} needs a download from {host}, which cannot be reached from here; "
            "on a machine with network run keras_hub.models.Backbone.from_preset"
            f"('{source}').save_to_preset('DIR') and keras_hub.models.Tokenizer.from_preset('{source}')"
            f".save_to_preset('DIR') (the tokenizer, for raw text), copy DIR here and set {field}: DIR"
        )


def is_keras_hub_preset(source: str) -> bool:
    """Whether a source names a KerasHub preset: a ``save_to_preset`` directory or an online handle."""
    path = Path(source)
    local = path.is_dir() and (path / "config.json").is_file() and (path / "metadata.json").is_file()
    return source.startswith(_ONLINE_SCHEMES) or local


def data_section(recipe: Any, run_dir: Path | None = None) -> Any:
    """``recipe.data`` with ``data.text`` resolved for a KerasHub preset: unset, with
    ``model.source`` a preset, it is the preset's preprocessor (for string features only);
    ``{type: preset}`` takes ``model.source`` unless it names its own ``source``.

    ``run_dir``: a run that continues, whose kept preprocessor stands in for a preset that is gone.
    """
    from trainkit.data.preset_text import STEP_FILE
    from trainkit.recipe import PresetText

    section, text = recipe.data, recipe.data.text
    source = recipe.model.kwargs.get("source") if recipe.model.type == "pretrained" else None
    kept = run_dir is not None and (Path(run_dir) / STEP_FILE).is_file()
    preset = str(source) if isinstance(source, str) and (kept or is_keras_hub_preset(source)) else None
    if text is None and preset is not None:
        text = PresetText(source=preset)
        text._implicit = True
    elif isinstance(text, PresetText) and text.source is None:
        if preset is None:
            _not_a_preset(source)
        text = text.model_copy(update={"source": preset})
    else:
        return section
    if text.source.startswith(_ONLINE_SCHEMES) and not kept:
        require_network(text.source, field="model.source")
    return section.model_copy(update={"text": text})


def _not_a_preset(source: Any) -> None:
    """Why ``data.text: preset`` has no preset to take its preprocessor from."""
    if not isinstance(source, str):
        raise ConfigError("data.text: preset needs a KerasHub preset: set data.text.source, or model: {type: pretrained, source: PRESET}")
    if not Path(source).exists():
        raise ConfigError(f"model.source: '{source}' does not exist; data.text: preset needs a KerasHub preset (a save_to_preset directory)")
    raise ConfigError(f"data.text: preset needs a KerasHub preset, and model.source {source} is not one (a save_to_preset directory holds config.json and metadata.json)")


def is_headless(source: str, model) -> bool:
    """A source without a classification head (a KerasHub backbone, a
    keras.applications model without its top): ``head: replace`` adds one on top."""
    return source.startswith(_APPLICATIONS) or hasattr(model, "enable_lora")  # (a KerasHub Backbone)


def load_source(
    source: str,
    *,
    checkpoint: str = "final",
    field: str,
    weights: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    runs: Mapping[str, Any] | None = None,
) -> Any:
    """The keras.Model a source names, with its weights.

    A source that is a run directory is restored by the plan, which hands its
    model down in ``runs`` (source -> keras.Model): models never read runs.
    """
    import keras

    if source.startswith(_APPLICATIONS):
        return _load_application(source, weights, input_shape, field=field)
    if source.startswith(_ONLINE_SCHEMES):
        require_network(source, field=field)
        return _load_preset(source, field=field)
    path = Path(source)
    if not path.exists():
        hint = " (a KerasHub preset name needs the network: write kaggle://OWNER/MODEL/keras/PRESET)" if "/" not in source else ""
        raise ConfigError(f"{field}: '{source}' does not exist; give {_KINDS}{hint}")
    if path.is_dir() and (path / "config.yaml").is_file():
        if runs is None or source not in runs:
            raise ConfigError(f"{field}: the run {source} is restored by trainkit's plan (trainkit.plan.build)")
        return runs[source]
    if path.is_dir() and (path / "config.json").is_file() and (path / "metadata.json").is_file():
        _check_weights_fit(sum(p.stat().st_size for p in path.glob("*.weights.h5")), field)
        return _load_preset(str(path), field=field)
    if path.is_file() and path.suffix == ".keras":
        check_keras_archive(path, what=field)
        with zipfile.ZipFile(path) as archive:
            _check_weights_fit(sum(m.file_size for m in archive.infolist() if m.filename.endswith(".h5")), field)
        try:
            return keras.saving.load_model(path, compile=False)
        except Exception as err:
            raise ConfigError(f"{field}: {source} cannot be loaded as a Keras model: {first_line(err)[:200]}") from None
    raise ConfigError(f"{field}: '{source}' is not {_KINDS}")


def _check_weights_fit(weight_bytes: int, field: str) -> None:
    """Refuse, before loading them, float32 weights that could not be trained in the memory there is."""
    from trainkit.models.memory import check_parameters_fit

    check_parameters_fit(weight_bytes // 4, field=field)


def check_not_itself(source: str, run_path: Path | None, *, field: str) -> None:
    """A run cannot start from its own directory (it would read the checkpoints it is writing)."""
    if run_path is not None and Path(source).exists() and Path(source).resolve() == Path(run_path).resolve():
        raise ConfigError(
            f"{field}: {source} is this run's own directory; a run cannot start from itself "
            "(name another run, or train into another --run-dir)"
        )


def _load_application(source: str, weights: str | None, input_shape, *, field: str):
    import keras

    from trainkit.errors import did_you_mean

    name = source[len(_APPLICATIONS):]
    choices = [n for n in dir(keras.applications) if n[:1].isupper()]
    if name not in choices:
        raise ConfigError(f"{field}: keras.applications has no model '{name}'; {did_you_mean(name, choices)}")
    if weights is None or not Path(weights).is_file():
        given = f"'{weights}' does not exist; " if weights else ""
        raise ConfigError(
            f"model.weights: {given}{source} needs its pretrained weights, which keras.applications would download "
            f"(no download here): on a machine with network run keras.applications.{name}(include_top=False, "
            "weights='imagenet'), copy its file from ~/.keras/models/ here and set model.weights: FILE"
        )
    try:
        return getattr(keras.applications, name)(include_top=False, weights=weights, input_shape=input_shape, pooling="avg")
    except Exception as err:
        raise ConfigError(f"model.weights: {weights} does not fit {source} on inputs {list(input_shape or [])}: {first_line(err)[:200]}") from None


def _load_preset(preset: str, *, field: str):
    try:
        import keras_hub
    except ImportError:
        raise ConfigError(f"{field}: {preset} is a KerasHub preset; install the hub extra (pip install -e .[hub])") from None
    try:
        return keras_hub.models.Backbone.from_preset(preset)
    except Exception as err:
        raise ConfigError(f"{field}: the KerasHub preset {preset} cannot be loaded: {first_line(err)[:200]}") from None


def with_head(
    source_model,
    *,
    head: str,
    cut_at: str | None,
    task: str,
    num_outputs: int,
    output_activation: str | None,
    headless: bool = False,
    input_shape: tuple[int, ...] | None = None,
):
    """``head: keep`` returns the source model; ``replace`` cuts it and adds a new head."""
    import keras

    if output_activation == "auto":
        output_activation = "softmax" if task == "classification" else None
    if headless:
        return _on_top(source_model, head, cut_at, num_outputs, output_activation, input_shape)
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
    kept = names[: names.index(cut_at) + 1] if cut_at is not None else names[:-1]
    name = "new_output" if "output" in kept else "output"
    outputs = keras.layers.Dense(num_outputs, activation=output_activation, name=name, dtype="float32")(features)  # (see builders.output_layer)
    # source_model.input is the structure the source declares (one tensor for one
    # input): its .inputs list would make every call with one tensor warn.
    return keras.Model(source_model.input, outputs, name=f"{source_model.name}_finetuned")


def _on_top(backbone, head: str, cut_at: str | None, num_outputs: int, activation: str | None, input_shape):
    """A head on a headless source, kept whole as one nested layer (so that LoRA
    and freeze patterns can name it)."""
    import keras

    if head != "replace" or cut_at is not None:
        raise ConfigError("model.head: this source has no head of its own; use head: replace (without cut_at)")
    given = backbone.input
    if isinstance(given, dict):
        inputs = {name: keras.Input(shape=t.shape[1:], dtype=t.dtype, name=name) for name, t in given.items()}
    else:
        inputs = keras.Input(shape=input_shape or given.shape[1:], name="features")
    x = backbone(inputs)
    if isinstance(x, dict):
        if "pooled_output" not in x:
            raise ConfigError(f"model.source: the backbone's outputs {sorted(x)} have no pooled_output to put a head on")
        x = x["pooled_output"]
    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    elif len(x.shape) == 3:
        x = keras.layers.GlobalAveragePooling1D(name="head_pool")(x)
    outputs = keras.layers.Dense(num_outputs, activation=activation, name="output", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=f"{backbone.name}_finetuned")


def _load_stored(stored: Path):
    """A run's copy of its source; KerasHub's classes are registered first if it holds one."""
    import keras

    check_keras_archive(stored, what="the run's copy of its pretrained source")
    with zipfile.ZipFile(stored) as archive:
        config = archive.read("config.json")
    if b"keras_hub" in config:
        import keras_hub  # noqa: F401
    try:
        return keras.saving.load_model(stored, compile=False)
    except Exception as err:  # damaged or foreign: Keras says so in many ways
        raise ConfigError(
            f"{stored} (this run's copy of its pretrained source) cannot be loaded ({first_line(err)[:160]}); "
            "put the source back where model.source names it, or train the run again"
        ) from None


@registry.register_model("pretrained")
def pretrained(
    *,
    input_shape: tuple[int, ...],
    num_outputs: int,
    task: str,
    source: str,
    source_checkpoint: str | int = "final",
    head: Literal["keep", "replace"] = "keep",
    cut_at: str | None = None,
    weights: str | None = None,
    output_activation: str | None = "auto",
):
    """A model from a pretrained source (see :mod:`trainkit.models.pretrained`).

    ``weights``: the weights file of a ``keras.applications.NAME`` source.
    """
    model, _ = build(
        source=source, source_checkpoint=str(source_checkpoint), head=head, cut_at=cut_at, weights=weights,
        input_shape=input_shape, task=task, num_outputs=num_outputs, output_activation=output_activation, stored=None,
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
    weights: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    runs: Mapping[str, Any] | None = None,
) -> tuple[Any, SourceUse]:
    """The model and its source; ``stored`` (a run's copy of its source) stands in
    for a source that is no longer there."""
    local = not source.startswith((*_ONLINE_SCHEMES, _APPLICATIONS))
    gone = not is_available(source) if local else (weights is not None and not Path(weights).is_file()) or not weights
    if stored is not None and stored.is_file() and (gone or source.startswith(_ONLINE_SCHEMES)):
        source_model = _load_stored(stored)  # (an online handle is never fetched twice)
    else:
        source_model = load_source(
            source, checkpoint=source_checkpoint, field="model.source", weights=weights, input_shape=input_shape,
            runs=runs,
        )
    use = SourceUse("model.source", source, digest(source_model), source_model)
    model = with_head(
        source_model, head=head, cut_at=cut_at, task=task, num_outputs=num_outputs, output_activation=output_activation,
        headless=is_headless(source, source_model), input_shape=input_shape,
    )
    return model, use
