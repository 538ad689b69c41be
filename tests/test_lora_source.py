"""A run trained with LoRA, used as the fine-tuning source of another run: the source is
the model that run computed with (low-rank updates merged), never its frozen kernels alone."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("keras_hub")


def _tokens():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 60, (64, 8)).astype("int32")
    features = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)}
    return features, (ids[:, 0] % 2).astype("int32")


@pytest.mark.slow
def test_a_lora_run_as_source_carries_its_low_rank_updates(tmp_path):
    import keras_hub

    import trainkit
    from trainkit.plan import restore
    from trainkit.run_source import restore_source

    trainkit.register_dataset("lora_source_tokens", overwrite=True)(_tokens)
    preset = tmp_path / "preset"
    keras_hub.models.BertBackbone(
        vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=8
    ).save_to_preset(str(preset))
    run = tmp_path / "lora_run"
    trainkit.train(trainkit.load_recipe({
        "name": "lora_source",
        "data": {"source": {"type": "arrays", "name": "lora_source_tokens"}, "batch_size": 16},
        "model": {"type": "pretrained", "source": str(preset), "head": "replace", "lora_rank": 2},
        "loss": "sparse_categorical_crossentropy",
        "optimizer": {"type": "adam", "learning_rate": 0.05},
        "trainer": {"steps": 8, "progress": False, "evaluate": []},
        "export": {"formats": []},
    }), run_dir=run)

    trained = restore(run, "final")  # the run itself, LoRA enabled: what it computed with
    updates = [v for v in trained.weights if "lora_kernel_b" in v.path]
    assert updates and any(np.abs(v.numpy()).max() > 1e-3 for v in updates)  # (B starts at zero)

    source = restore_source(run, "final", field="model.source")
    assert not [v for v in source.weights if "lora_kernel" in v.path]  # an ordinary model
    features, _ = _tokens()
    np.testing.assert_allclose(source.predict(features, verbose=0), trained.predict(features, verbose=0), atol=1e-5)
