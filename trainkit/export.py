"""Exported models that load anywhere Keras does.

``model.keras`` must load with plain ``keras.models.load_model`` -- no trainkit
import, no custom objects. The trained model may hold trainkit's learning-rate
schedule in its optimizer, so the export is a copy: the same architecture and
weights, compiled with the same loss and metrics and an optimizer of the same
kind whose learning rate is the schedule's current value.
"""

from __future__ import annotations

import keras


def portable_copy(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> keras.Model:
    copy = keras.models.clone_model(model)
    if any(getattr(layer, "lora_enabled", False) for layer in model._flatten_layers()):
        _copy_with_lora_merged(model, copy)
    else:
        copy.set_weights(model.get_weights())
    config = optimizer.get_config()
    config["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    compiled = getattr(model, "_compile_config", None)
    loss = model.loss if compiled is None else compiled.config.get("loss")
    metrics = None if compiled is None else compiled.config.get("metrics")
    copy.compile(optimizer=type(optimizer).from_config(config), loss=loss, metrics=metrics)
    # Built (fresh slots), so loading the file does not warn about missing optimizer variables.
    copy.optimizer.build(copy.trainable_variables)
    return copy


def _copy_with_lora_merged(model: keras.Model, copy: keras.Model) -> None:
    """Weights of a model with LoRA (``model.lora_rank``) into its clone, which has
    none: Keras's weight files hold each LoRA kernel merged into its base kernel."""
    import tempfile
    import warnings
    from pathlib import Path

    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        # The file holds the trained optimizer's variables too; the copy gets a fresh one.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        path = Path(scratch) / "model.weights.h5"
        model.save_weights(path)
        copy.load_weights(path)
