"""The inference model: the recorded preprocessing as Keras layers, then the trained
model, then a head that gives probabilities (classification) or values.

Only stock Keras layers are used (``Normalization``, ``Rescaling``, ``Reshape``,
``Resizing``, ``CenterCrop``, ``Activation``, ``Concatenate``), so ``model.keras``
loads with plain ``keras.models.load_model`` and ``safe_mode`` on.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np


def inference_model(model: keras.Model, spec: dict[str, Any]) -> keras.Model:
    """``model`` (the trained one, taking preprocessed features) behind ``spec``'s preprocessing."""
    raw = spec["input"]
    inputs = keras.Input(tuple(raw["shape"]), dtype=raw["dtype"], name=raw["name"])
    x = inputs
    if raw["dtype"] != "float32":
        x = keras.layers.Rescaling(1.0, name="as_float32")(x)  # Rescaling casts to its float dtype
    for i, step in enumerate(spec["preprocessing"]):
        x = _layer(step, rank=len(raw["shape"]), name=f"preprocess_{i}_{step['type']}")(x)
    y = _uncompiled_copy(model)(x)
    y = output_head(spec["head"], y)
    name = "probabilities" if spec["task"] == "classification" else "predictions"
    outputs = keras.layers.Identity(name=name)(y)
    return keras.Model(inputs, outputs, name=f"{spec['recipe']}_inference".replace(".", "_").replace("-", "_"))


def _uncompiled_copy(model: keras.Model) -> keras.Model:
    """The same architecture and weights without the compile state: a nested model's
    compile config (trainkit's learning-rate schedule) would be saved with it, and
    plain Keras could not load the file."""
    copy = type(model).from_config(model.get_config())  # (clone_model would compile the copy too)
    copy_weights(model, copy)
    return copy


def copy_weights(model: keras.Model, copy: keras.Model) -> None:
    """``model``'s weights into ``copy``, a model built from its config.

    A model with LoRA (``model.lora_rank``) has more weights than its config
    builds (KerasHub's backbone configs leave LoRA out): then the weights go
    through a Keras weights file, which holds each LoRA kernel merged into its
    base kernel.
    """
    # LoRA layers (Keras's Dense, EinsumDense) add weights named lora_kernel_a/_b.
    if not any(weight.name.startswith("lora_kernel") for weight in model.weights):
        copy.set_weights(model.get_weights())
        return
    import tempfile
    import warnings
    from pathlib import Path

    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        # The file holds the trained optimizer's variables too; the copy has its own.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        path = Path(scratch) / "model.weights.h5"
        model.save_weights(path)
        copy.load_weights(path)


def _layer(step: dict[str, Any], *, rank: int, name: str) -> keras.layers.Layer:
    kind = step["type"]
    if kind == "normalize":
        mean, std = np.asarray(step["mean"], np.float32), np.asarray(step["std"], np.float32)
        if step["per"] == "element":  # data.scale: one statistic per feature value
            axis = tuple(range(1, rank + 1)) if rank > 1 else -1
            return keras.layers.Normalization(axis=axis, mean=mean, variance=np.square(std), name=name)
        if mean.size == 1:  # one statistic for every value
            return keras.layers.Normalization(axis=None, mean=float(mean[0]), variance=float(std[0]) ** 2, name=name)
        return keras.layers.Normalization(axis=-1, mean=mean, variance=np.square(std), name=name)
    if kind == "rescale":
        return keras.layers.Rescaling(step["scale"], step["offset"], name=name)
    if kind == "cast_float":
        return keras.layers.Rescaling(1.0, name=name)
    if kind == "reshape":
        return keras.layers.Reshape(tuple(step["shape"]), name=name)
    if kind == "resize":
        height, width = step["size"]
        return keras.layers.Resizing(height, width, interpolation=step["method"], name=name)
    if kind == "center_crop":
        height, width = step["size"]
        return keras.layers.CenterCrop(height, width, name=name)
    raise ValueError(f"unknown preprocessing step {kind!r}")  # spec.describe writes only the kinds above


def output_head(kind: str, y):
    if kind == "softmax":
        return keras.layers.Softmax(name="softmax")(y)
    if kind in ("binary", "binary_logits"):
        positive = keras.layers.Activation("sigmoid", name="sigmoid")(y) if kind == "binary_logits" else y
        negative = keras.layers.Rescaling(-1.0, 1.0, name="one_minus")(positive)  # 1 - p
        return keras.layers.Concatenate(name="both_classes")([negative, positive])
    return y
