"""The ``rnn`` and ``transformer`` builders: shapes, masking, heads, cuDNN-eligible layers."""

from __future__ import annotations

import numpy as np
import pytest

from trainkit.errors import ConfigError
from trainkit.models import sequences
from trainkit.models.sequences import rnn, transformer


def _recurrent_layers(model):
    import keras

    found = []
    for layer in model.layers:
        inner = layer.forward_layer if isinstance(layer, keras.layers.Bidirectional) else layer
        if isinstance(inner, keras.layers.LSTM | keras.layers.GRU):
            found.append(inner)
            if isinstance(layer, keras.layers.Bidirectional):
                found.append(layer.backward_layer)
    return found


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_layers_keep_every_cudnn_condition(cell):
    """Keras runs LSTM/GRU with cuDNN on a GPU only with these arguments (issue 21 asks for the check)."""
    model = rnn(
        input_shape=(12,), num_outputs=3, task="classification", vocab_size=50, cell=cell,
        units=[8, 4], bidirectional=True, dropout=0.2, pooling="mean",
    )
    layers = _recurrent_layers(model)
    assert len(layers) == 4
    for layer in layers:
        config = layer.get_config()
        assert config["activation"] == "tanh"
        assert config["recurrent_activation"] == "sigmoid"
        assert config["recurrent_dropout"] == 0
        assert config["unroll"] is False
        assert config["use_bias"] is True
        assert layer.use_cudnn == "auto"
        if cell == "gru":
            assert config["reset_after"] is True


def test_recurrent_dropout_is_warned_about_once_with_the_reason(capsys):
    sequences._warned.clear()
    for _ in range(2):
        rnn(input_shape=(6, 2), num_outputs=1, task="regression", units=[4], recurrent_dropout=0.1)
    texts = [line for line in capsys.readouterr().err.splitlines() if "cuDNN" in line]
    assert len(texts) == 1
    assert texts[0].startswith("warning: model.recurrent_dropout: 0.1 rules out cuDNN")


def test_rnn_on_token_ids_masks_padding():
    model = rnn(input_shape=(6,), num_outputs=2, task="classification", vocab_size=20, units=[4], pooling="mean")
    ids = np.array([[3, 4, 5, 0, 0, 0]], np.int64)
    assert model.get_layer("embedding").mask_zero
    # Padding is masked: the same text with less padding gives the same prediction.
    shorter = rnn(input_shape=(4,), num_outputs=2, task="classification", vocab_size=20, units=[4], pooling="mean")
    shorter.set_weights(model.get_weights())
    np.testing.assert_allclose(model(ids).numpy(), shorter(ids[:, :4]).numpy(), atol=1e-6)


def test_token_ids_without_a_vocabulary_size_is_one_line():
    with pytest.raises(ConfigError, match=r"model.vocab_size: 'rnn' takes these inputs of shape \[6\] as token ids"):
        rnn(input_shape=(6,), num_outputs=2, task="classification")


def test_regression_head_predicts_in_the_targets_units():
    model = rnn(
        input_shape=(5, 2), num_outputs=1, task="regression", units=[4], target_scale=([100.0], [20.0]),
    )
    layer = model.get_layer("target_units")
    assert layer.scale == 20.0 and layer.offset == 100.0
    zeroed = [np.zeros_like(w) for w in model.get_weights()]
    model.set_weights(zeroed)
    np.testing.assert_allclose(model(np.ones((2, 5, 2), np.float32)).numpy(), 100.0)


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_transformer_on_series_and_token_ids(pooling):
    series = transformer(
        input_shape=(8, 3), num_outputs=2, task="regression", num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, pooling=pooling, target_scale=([0.0, 1.0], [1.0, 2.0]),
    )
    assert series(np.zeros((2, 8, 3), np.float32)).shape == (2, 2)
    text = transformer(
        input_shape=(8,), num_outputs=3, task="classification", vocab_size=30, num_layers=1, num_heads=2,
        hidden_dim=8, intermediate_dim=16, pooling=pooling,
    )
    probabilities = text(np.ones((2, 8), np.int64)).numpy()
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("builder", ["transformer", "rnn"])
def test_pooling_over_token_ids_never_pools_the_padding(builder, pooling):
    import keras

    if builder == "transformer":
        model = transformer(
            input_shape=(8,), num_outputs=3, task="classification", vocab_size=30, num_layers=1, num_heads=2,
            hidden_dim=8, intermediate_dim=16, pooling=pooling, dropout=0.0,
        )
    else:
        model = rnn(input_shape=(8,), num_outputs=3, task="classification", vocab_size=30, units=[8], pooling=pooling)
    pooled = keras.Model(model.input, model.get_layer("output").input)
    ids = np.array([[5, 6, 7, 0, 0, 0, 0, 0], [9, 8, 7, 6, 5, 4, 3, 2]], np.int32)
    before = pooled(ids).numpy()
    # Whatever the padding's embedding (and so its hidden states), the pooled vector of
    # the real tokens stays: big padding vectors would win max, and be the "last" step.
    embedding = model.get_layer("embedding")
    table = embedding.token_embedding.embeddings if builder == "transformer" else embedding.embeddings
    table.assign(np.concatenate([np.full((1, table.shape[1]), 50.0, np.float32), table.numpy()[1:]]))
    np.testing.assert_allclose(pooled(ids).numpy(), before, atol=1e-5)


def test_builders_train_a_step():
    import keras

    rng = np.random.default_rng(0)
    for model, x, y in (
        (rnn(input_shape=(6, 2), num_outputs=1, task="regression", cell="gru", units=[4, 4]),
         rng.normal(size=(8, 6, 2)).astype("float32"), rng.normal(size=(8, 1)).astype("float32")),
        (transformer(input_shape=(6,), num_outputs=2, task="classification", vocab_size=10, num_layers=1,
                     num_heads=2, hidden_dim=8, intermediate_dim=8),
         rng.integers(0, 10, size=(8, 6)), rng.integers(0, 2, size=(8,))),
    ):
        loss = "mse" if model.output_shape[-1] == 1 else "sparse_categorical_crossentropy"
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
        before = [w.copy() for w in model.get_weights()]
        history = model.fit(x, y, epochs=1, batch_size=8, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_vocab_size_is_filled_in_from_the_data_and_a_different_one_is_refused():
    from trainkit.data.pipeline import DataInfo
    from trainkit.models.build import build_model
    from trainkit.recipe import ModelSection

    info = DataInfo(feature_shape=(6,), task="classification", num_classes=2, target_shape=(), vocab_size=30)
    model = build_model(ModelSection(type="rnn", units=[4]), info)
    assert model.get_layer("embedding").input_dim == 30
    assert build_model(ModelSection(type="rnn", units=[4], vocab_size=30), info).get_layer("embedding").input_dim == 30
    with pytest.raises(ConfigError, match=r"model.vocab_size: 50, but the data has 30; remove it"):
        build_model(ModelSection(type="rnn", units=[4], vocab_size=50), info)
    # Token ids made elsewhere: the recipe gives the size.
    plain = DataInfo(feature_shape=(6,), task="classification", num_classes=2, target_shape=())
    assert build_model(ModelSection(type="rnn", units=[4], vocab_size=50), plain).get_layer("embedding").input_dim == 50
    with pytest.raises(ConfigError, match="'target_scale' is set by trainkit from the data"):
        build_model(ModelSection(type="rnn", units=[4], target_scale=[[0.0], [1.0]]), plain)
