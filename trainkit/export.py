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
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        # The optimizer proper; compile() wraps it again under a mixed_float16 policy.
        optimizer = optimizer.inner_optimizer
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    config = optimizer.get_config()
    config["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    compiled = getattr(model, "_compile_config", None)
    loss = model.loss if compiled is None else compiled.config.get("loss")
    metrics = None if compiled is None else compiled.config.get("metrics")
    copy.compile(optimizer=type(optimizer).from_config(config), loss=loss, metrics=metrics)
    if isinstance(copy.optimizer, keras.optimizers.LossScaleOptimizer):
        # compile() wrapped it (mixed_float16 policy); unwrapped, the file loads
        # without a variable-count warning where it is usually loaded: in float32.
        copy.optimizer = copy.optimizer.inner_optimizer
    # Built (fresh slots), so loading the file does not warn about missing optimizer variables.
    copy.optimizer.build(copy.trainable_variables)
    return copy
