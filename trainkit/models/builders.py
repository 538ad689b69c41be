"""The built-in model builders: ``sequential``, ``functional``, ``mlp``, ``cnn`` and ``resnet``.

Layer lists name any ``keras.layers`` class (or one a recipe registers) by
``type``; the other keys are its arguments::

    model:
      type: sequential
      layers:
        - {type: Conv2D, filters: 32, kernel_size: 3, activation: relu}
        - Flatten
        - {type: Dense, units: 10, activation: softmax}

``functional`` adds named inputs and wiring: each layer may take ``inputs`` (a
name or list of names of earlier layers or inputs; default: the previous layer)
and ``outputs`` names the output layer(s).
"""

from __future__ import annotations

from typing import Any

from trainkit import registry
from trainkit.components import LAYER_BASE_KWARGS, instantiate
from trainkit.errors import ConfigError, did_you_mean, first_line

LayerList = list[dict[str, Any] | str]


def make_layer(spec: dict[str, Any] | str, *, field: str):
    """One Keras layer from ``{"type": "Dense", "units": 10}`` (or ``"Flatten"``)."""
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"{field}: a layer is a name or a mapping with 'type', got {spec!r}")
    kwargs = {k: v for k, v in spec.items() if k not in ("type", "inputs")}
    cls = registry.layers.get(str(spec["type"]), field=f"{field}.type")
    return instantiate(cls, kwargs, field=field, label=spec["type"], also_accepted=LAYER_BASE_KWARGS)


def _apply(layer, tensors, *, field: str):
    try:
        return layer(tensors)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{field}: {type(layer).__name__} does not fit its input: {first_line(err)}") from None


@registry.register_model("sequential")
def sequential(*, input_shape: tuple[int, ...], layers: LayerList):
    """A stack of layers, each fed by the one before."""
    import keras

    inputs = keras.Input(shape=input_shape, name="features")
    x = inputs
    for i, spec in enumerate(layers):
        x = _apply(make_layer(spec, field=f"model.layers.{i}"), x, field=f"model.layers.{i}")
    return keras.Model(inputs, x, name="sequential")


@registry.register_model("functional")
def functional(
    *,
    input_shape: tuple[int, ...],
    layers: LayerList,
    inputs: dict[str, list[int]] | None = None,
    outputs: str | list[str] | None = None,
):
    """A graph of layers wired by name (``inputs`` of each layer, ``outputs`` of the model)."""
    import keras

    shapes = inputs or {"features": list(input_shape)}
    tensors = {name: keras.Input(shape=tuple(shape), name=name) for name, shape in shapes.items()}
    model_inputs = list(tensors.values())
    previous = model_inputs[0]
    for i, spec in enumerate(layers):
        field = f"model.layers.{i}"
        layer = make_layer(spec, field=field)
        wanted = spec.get("inputs") if isinstance(spec, dict) else None
        if wanted is None:
            source = previous
        else:
            names = [wanted] if isinstance(wanted, str) else list(wanted)
            for name in names:
                if name not in tensors:
                    raise ConfigError(f"{field}.inputs: no earlier layer or input named '{name}'; {did_you_mean(name, tensors)}")
            source = tensors[names[0]] if len(names) == 1 else [tensors[n] for n in names]
        previous = _apply(layer, source, field=field)
        if layer.name in tensors:
            raise ConfigError(f"{field}.name: '{layer.name}' is already used by another layer or input")
        tensors[layer.name] = previous
    if outputs is None:
        model_outputs = previous
    else:
        names = [outputs] if isinstance(outputs, str) else outputs
        for name in names:
            if name not in tensors:
                raise ConfigError(f"model.outputs: no layer named '{name}'; {did_you_mean(name, tensors)}")
        model_outputs = tensors[names[0]] if len(names) == 1 else [tensors[n] for n in names]
    return keras.Model(model_inputs if len(model_inputs) > 1 else model_inputs[0], model_outputs, name="functional")


def output_layer(
    keras,
    x,
    *,
    task: str,
    num_outputs: int,
    output_activation: str | None,
    target_scale: tuple[list[float], list[float]] | None = None,
):
    """The head: one unit per class (softmax for ``output_activation: auto``) or per target.

    With ``target_scale`` (the training targets' mean and std) a regression head
    predicts standardized targets and a fixed ``Rescaling`` returns them in the
    targets' units: the loss, metrics and exports never see the standardization.
    The head computes in float32 under a mixed precision policy too, as Keras
    advises: a softmax in bfloat16 sums to 1 only within about 1%.
    """
    if output_activation == "auto":
        output_activation = "softmax" if task == "classification" else None
    y = keras.layers.Dense(num_outputs, activation=output_activation, name="output", dtype="float32")(x)
    if task == "regression" and target_scale is not None:
        mean, std = target_scale
        scalar = len(mean) == 1
        y = keras.layers.Rescaling(std[0] if scalar else list(std), mean[0] if scalar else list(mean), name="target_units", dtype="float32")(y)
    return y


@registry.register_model("mlp")
def mlp(
    *,
    input_shape: tuple[int, ...],
    num_outputs: int,
    task: str,
    hidden_units: list[int] = (128,),
    activation: str = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
    output_activation: str | None = "auto",
):
    """A multi-layer perceptron; the head has one unit per class (softmax) or per target.

    ``output_activation: auto`` is softmax for classification and linear for
    regression; set it to ``null`` to output logits (then use ``from_logits: true``).
    """
    import keras

    inputs = keras.Input(shape=input_shape, name="features")
    x = keras.layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
    for i, units in enumerate(hidden_units):
        x = keras.layers.Dense(units, name=f"dense_{i}")(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"bn_{i}")(x)
        x = keras.layers.Activation(activation, name=f"act_{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    outputs = output_layer(keras, x, task=task, num_outputs=num_outputs, output_activation=output_activation)
    return keras.Model(inputs, outputs, name="mlp")


@registry.register_model("cnn")
def cnn(
    *,
    input_shape: tuple[int, ...],
    num_outputs: int,
    task: str,
    filters: list[int] = (32, 64),
    kernel_size: int = 3,
    pool: bool = True,
    batch_norm: bool = False,
    dense_units: list[int] = (128,),
    dropout: float = 0.0,
    activation: str = "relu",
    output_activation: str | None = "auto",
):
    """Conv blocks (conv, optional batch norm, activation, optional 2x2 max-pool),
    then dense layers and a head as in :func:`mlp`. Inputs are ``(H, W, C)``."""
    import keras

    if len(input_shape) != 3:
        raise ConfigError(
            f"model: 'cnn' needs images of shape (height, width, channels), the data has {list(input_shape)}; "
            "set data.feature_shape (for example [8, 8, 1])"
        )
    inputs = keras.Input(shape=input_shape, name="features")
    x = inputs
    for i, width in enumerate(filters):
        x = keras.layers.Conv2D(width, kernel_size, padding="same", use_bias=not batch_norm, name=f"conv_{i}")(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"bn_{i}")(x)
        x = keras.layers.Activation(activation, name=f"act_{i}")(x)
        if pool and min(x.shape[1], x.shape[2]) >= 2:
            x = keras.layers.MaxPooling2D(name=f"pool_{i}")(x)
    x = keras.layers.Flatten()(x)
    for i, units in enumerate(dense_units):
        x = keras.layers.Dense(units, activation=activation, name=f"dense_{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    outputs = output_layer(keras, x, task=task, num_outputs=num_outputs, output_activation=output_activation)
    return keras.Model(inputs, outputs, name="cnn")


@registry.register_model("resnet")
def resnet(
    *,
    input_shape: tuple[int, ...],
    num_outputs: int,
    task: str,
    stages: list[int] = (16, 32, 64),
    blocks_per_stage: int = 3,
    weight_decay: float = 0.0,
    output_activation: str | None = "auto",
):
    """A small ResNet for small images (CIFAR-style, He et al. 2015): a 3x3 stem, then
    per stage ``blocks_per_stage`` basic residual blocks (two 3x3 convs with batch
    norm) of ``stages[i]`` filters, halving the resolution at each new stage; global
    average pooling and a dense head. ``[16, 32, 64]`` x 3 blocks is ResNet-20."""
    import keras

    if len(input_shape) != 3:
        raise ConfigError(f"model: 'resnet' needs images (height, width, channels), the data has {list(input_shape)}")
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None

    def conv(x, filters, stride, name):
        return keras.layers.Conv2D(
            filters, 3, strides=stride, padding="same", use_bias=False,
            kernel_initializer="he_normal", kernel_regularizer=regularizer, name=name,
        )(x)

    inputs = keras.Input(shape=input_shape, name="features")
    x = conv(inputs, stages[0], 1, "stem_conv")
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.Activation("relu", name="stem_relu")(x)
    for s, filters in enumerate(stages):
        for b in range(blocks_per_stage):
            stride = 2 if (s > 0 and b == 0) else 1
            name = f"stage{s}_block{b}"
            shortcut = x
            y = conv(x, filters, stride, f"{name}_conv1")
            y = keras.layers.BatchNormalization(name=f"{name}_bn1")(y)
            y = keras.layers.Activation("relu", name=f"{name}_relu1")(y)
            y = conv(y, filters, 1, f"{name}_conv2")
            y = keras.layers.BatchNormalization(name=f"{name}_bn2")(y)
            if stride != 1 or shortcut.shape[-1] != filters:
                shortcut = keras.layers.Conv2D(
                    filters, 1, strides=stride, use_bias=False, kernel_regularizer=regularizer,
                    name=f"{name}_proj",
                )(shortcut)
                shortcut = keras.layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
            x = keras.layers.Add(name=f"{name}_add")([shortcut, y])
            x = keras.layers.Activation("relu", name=f"{name}_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = output_layer(keras, x, task=task, num_outputs=num_outputs, output_activation=output_activation)
    return keras.Model(inputs, outputs, name="resnet")
