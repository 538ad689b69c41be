"""Sequence builders: ``rnn`` (LSTM or GRU layers) and ``transformer`` (encoder blocks).

Both take either token ids (inputs of shape ``[sequence_length]``, integers: an
embedding comes first, and padding id 0 is masked) or a float series (inputs of
shape ``[sequence_length, variables]``: no embedding). ``vocab_size`` is filled
from the data when the data reports a vocabulary (``data.text``); a recipe sets
it itself for token ids it tokenized elsewhere.

Regression heads end in a fixed ``Rescaling`` by the training targets' mean and
standard deviation (``target_scale``, from the data): the network predicts
standardized targets, while the loss, the metrics and the exports see the
targets' own units. Only stock Keras and KerasHub layers are used, so an exported
``model.keras`` loads without trainkit (``transformer`` needs ``keras_hub``
imported).

The recurrent layers keep the arguments that let Keras run them with cuDNN on a
GPU (``activation=tanh``, ``recurrent_activation=sigmoid``, ``recurrent_dropout=0``,
``unroll=False``, ``use_bias=True``, and ``reset_after=True`` for GRU); a setting
that rules cuDNN out is warned about once, with the reason.
"""

from __future__ import annotations

from typing import Any, Literal

from trainkit import registry
from trainkit.console import warn
from trainkit.errors import ConfigError
from trainkit.models.builders import output_layer

#: The recurrent-layer arguments that keep cuDNN eligible (Keras's own conditions).
CUDNN_ARGUMENTS: dict[str, Any] = {
    "activation": "tanh",
    "recurrent_activation": "sigmoid",
    "recurrent_dropout": 0.0,
    "unroll": False,
    "use_bias": True,
}
GRU_CUDNN_ARGUMENTS: dict[str, Any] = {**CUDNN_ARGUMENTS, "reset_after": True}

_warned: set[str] = set()

TargetScale = tuple[list[float], list[float]] | None


def warn_once(text: str) -> None:
    """A warning shown once per process (a model may be built more than once)."""
    if text not in _warned:
        _warned.add(text)
        warn(f"warning: {text}")


def _token_ids(input_shape: tuple[int, ...], vocab_size: int | None, name: str) -> bool:
    """Whether the inputs are token ids (rank 1) rather than a float series (rank 2)."""
    if len(input_shape) == 1:
        if vocab_size is None:
            raise ConfigError(
                f"model.vocab_size: '{name}' takes these inputs of shape {list(input_shape)} as token ids and needs "
                "the vocabulary size: tokenize the text with data.text, or set model.vocab_size"
            )
        return True
    if len(input_shape) != 2:
        raise ConfigError(
            f"model: '{name}' takes token ids [sequence_length] or a series [sequence_length, variables], "
            f"the data has {list(input_shape)}"
        )
    return False


def _pool(keras, x, pooling: str, name: str = "pool", mask=None):
    """Steps to one vector: ``mean`` or ``max`` over steps, or the ``last`` step.

    ``mask`` (``[batch, steps]``, True for real tokens; token ids only): padding never
    counts, whatever its hidden states hold -- it is left out of the mean, never wins
    the max, and ``last`` is the last real token, not the last padding step.
    """
    if mask is not None:
        return _masked_pool(keras.ops, x, pooling, mask)
    if pooling == "mean":
        return keras.layers.GlobalAveragePooling1D(name=name)(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling1D(name=name)(x)
    steps, width = int(x.shape[1]), int(x.shape[2])
    x = keras.layers.Cropping1D((steps - 1, 0), name=f"{name}_last_step")(x)
    return keras.layers.Reshape((width,), name=name)(x)


def _masked_pool(ops, x, pooling: str, mask):
    """:func:`_pool` over the real steps only (``keras.ops``, so ``model.keras`` loads with plain Keras)."""
    real = ops.cast(mask, x.dtype)[:, :, None]
    count = ops.sum(real, axis=1)
    if pooling == "mean":
        return ops.sum(x * real, axis=1) / ops.maximum(count, 1)
    if pooling == "max":
        # Padding takes the smallest value over all steps: it can never exceed a real one.
        lowest = ops.min(x, axis=1, keepdims=True)
        return ops.max(ops.where(real > 0, x, lowest), axis=1) * ops.minimum(count, 1)
    position = ops.cumsum(ops.ones_like(real), axis=1)  # 1, 2, ... per step
    last = ops.max(position * real, axis=1, keepdims=True)  # the last real step's position (0: none)
    return ops.sum(x * ops.cast(ops.equal(position, last), x.dtype) * real, axis=1)


def recurrent_layer(keras, cell: str, units: int, *, return_sequences: bool, dropout: float, recurrent_dropout: float, name: str):
    """One LSTM or GRU layer with the cuDNN-eligible arguments (bar ``recurrent_dropout``)."""
    arguments = dict(GRU_CUDNN_ARGUMENTS if cell == "gru" else CUDNN_ARGUMENTS)
    arguments["recurrent_dropout"] = recurrent_dropout
    layer = keras.layers.GRU if cell == "gru" else keras.layers.LSTM
    return layer(units, return_sequences=return_sequences, dropout=dropout, name=name, **arguments)


@registry.register_model("rnn")
def rnn(
    *,
    input_shape: tuple[int, ...],
    num_outputs: int,
    task: str,
    target_scale: TargetScale = None,
    vocab_size: int | None = None,
    embedding_dim: int = 64,
    cell: Literal["lstm", "gru"] = "lstm",
    units: list[int] = (64,),
    bidirectional: bool = False,
    dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    pooling: Literal["last", "mean", "max"] = "last",
    dense_units: list[int] = (),
    output_activation: str | None = "auto",
):
    """Recurrent layers (``cell: lstm | gru``, one per entry of ``units``) over token ids
    (after an ``Embedding`` of ``vocab_size`` x ``embedding_dim``, padding 0 masked) or
    over a float series; ``pooling`` of the last layer's outputs (``last`` step,
    ``mean`` or ``max`` over steps); optional ``dense_units``; a head as :func:`mlp`'s.

    ``dropout`` drops inputs of each recurrent layer (cuDNN keeps working);
    ``recurrent_dropout`` rules cuDNN out and is warned about.
    """
    import keras

    if not units:
        raise ConfigError("model.units: give at least one recurrent layer's width, e.g. [64]")
    if recurrent_dropout:
        warn_once(
            f"model.recurrent_dropout: {recurrent_dropout} rules out cuDNN: Keras runs {cell.upper()} layers with "
            "cuDNN on a GPU only when recurrent_dropout is 0, so they will run several times slower there; "
            "use model.dropout (between layers) instead to keep cuDNN"
        )
    tokens = _token_ids(input_shape, vocab_size, "rnn")
    inputs = keras.Input(shape=input_shape, dtype="int32" if tokens else "float32", name="features")
    x = inputs
    if tokens:
        x = keras.layers.Embedding(vocab_size, embedding_dim, mask_zero=True, name="embedding")(x)
    for i, width in enumerate(units):
        last = i == len(units) - 1
        layer = recurrent_layer(
            keras, cell, width, return_sequences=not (last and pooling == "last"),
            dropout=dropout, recurrent_dropout=recurrent_dropout, name=f"{cell}_{i}",
        )
        if bidirectional:
            layer = keras.layers.Bidirectional(layer, name=f"bidirectional_{i}")
        x = layer(x)
    if pooling != "last":
        x = _pool(keras, x, pooling, mask=keras.ops.not_equal(inputs, 0) if tokens else None)
    for i, width in enumerate(dense_units):
        x = keras.layers.Dense(width, activation="relu", name=f"dense_{i}")(x)
    outputs = output_layer(
        keras, x, task=task, num_outputs=num_outputs, output_activation=output_activation, target_scale=target_scale
    )
    return keras.Model(inputs, outputs, name="rnn")


@registry.register_model("transformer")
def transformer(
    *,
    input_shape: tuple[int, ...],
    num_outputs: int,
    task: str,
    target_scale: TargetScale = None,
    vocab_size: int | None = None,
    num_layers: int = 2,
    num_heads: int = 4,
    hidden_dim: int = 64,
    intermediate_dim: int = 128,
    dropout: float = 0.1,
    pooling: Literal["mean", "max", "last"] = "mean",
    output_activation: str | None = "auto",
):
    """Token and position embeddings of width ``hidden_dim`` (KerasHub's
    ``TokenAndPositionEmbedding``, padding id 0 masked), or for a float series a
    ``Dense`` projection plus ``PositionEmbedding``; then ``num_layers`` KerasHub
    ``TransformerEncoder`` blocks (``num_heads``, ``intermediate_dim``, ``dropout``),
    ``pooling`` over steps (``mean``, ``max`` or the ``last`` step; over token ids the
    padding is never pooled: ``last`` is the last real token) and a head as :func:`mlp`'s."""
    import keras
    import keras_hub

    if hidden_dim % num_heads:
        raise ConfigError(f"model.hidden_dim: {hidden_dim} is not a multiple of model.num_heads ({num_heads})")
    if num_layers < 1:
        raise ConfigError("model.num_layers: at least one encoder block")
    tokens = _token_ids(input_shape, vocab_size, "transformer")
    sequence_length = int(input_shape[0])
    inputs = keras.Input(shape=input_shape, dtype="int32" if tokens else "float32", name="features")
    if tokens:
        x = keras_hub.layers.TokenAndPositionEmbedding(
            vocab_size, sequence_length, hidden_dim, mask_zero=True, name="embedding"
        )(inputs)
    else:
        x = keras.layers.Dense(hidden_dim, name="projection")(inputs)
        positions = keras_hub.layers.PositionEmbedding(sequence_length, name="position_embedding")(x)
        x = keras.layers.Add(name="embedding")([x, positions])
    mask = keras.ops.not_equal(inputs, 0) if tokens else None  # (id 0 is padding)
    for i in range(num_layers):
        x = keras_hub.layers.TransformerEncoder(
            intermediate_dim, num_heads, dropout=dropout, name=f"encoder_{i}"
        )(x, padding_mask=mask)
    x = _pool(keras, x, pooling, mask=mask)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = output_layer(
        keras, x, task=task, num_outputs=num_outputs, output_activation=output_activation, target_scale=target_scale
    )
    return keras.Model(inputs, outputs, name="transformer")
