"""The inference model: the recorded preprocessing as Keras layers (made by
:data:`trainkit.data.transforms.LAYERS`, as the training pipeline makes them), then
the trained model, then a head that gives probabilities (classification) or values.

Only stock Keras layers are used (``Normalization``, ``Rescaling``, ``Reshape``,
``Resizing``, ``CenterCrop``, ``Activation``, ``Concatenate``), so ``model.keras``
loads with plain ``keras.models.load_model`` and ``safe_mode`` on.
"""

from __future__ import annotations

from typing import Any

import keras

from trainkit.data.transforms import preprocessing_layer


def inference_model(model: keras.Model, spec: dict[str, Any]) -> keras.Model:
    """``model`` (the trained one, taking preprocessed features) behind ``spec``'s preprocessing.

    The layers around it compute in float32 whatever the precision policy of the
    run: its preprocessing ran in tf.data in float32 during training, and a softmax
    in bfloat16 sums to 1 only within about 1%. The trained model keeps its own.
    """
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        return _around(model, spec)
    finally:
        keras.mixed_precision.set_global_policy(policy)


def _around(model: keras.Model, spec: dict[str, Any]) -> keras.Model:
    raw = spec["input"]
    inputs = keras.Input(tuple(raw["shape"]), dtype=raw["dtype"], name=raw["name"])
    x = inputs
    if raw["dtype"] not in ("float32", "string"):  # (text goes to its tokenizer as it is)
        x = preprocessing_layer({"type": "cast_float"}, rank=len(raw["shape"]), name="as_float32")(x)
    for i, step in enumerate(spec["preprocessing"]):
        x = preprocessing_layer(step, rank=len(raw["shape"]), name=f"preprocess_{i}_{step['type']}")(x)
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


def output_head(kind: str, y):
    if kind == "softmax":
        return keras.layers.Softmax(name="softmax")(y)
    if kind in ("binary", "binary_logits"):
        positive = keras.layers.Activation("sigmoid", name="sigmoid")(y) if kind == "binary_logits" else y
        negative = keras.layers.Rescaling(-1.0, 1.0, name="one_minus")(positive)  # 1 - p
        return keras.layers.Concatenate(name="both_classes")([negative, positive])
    return y
