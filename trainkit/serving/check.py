"""What an export is worth, measured on examples of the test split (else validation,
else train) when it is written:

- ``keras``: the largest difference between the inference model fed the source's
  raw features and the trained model fed trainkit's pipeline (the preprocessing
  layers must do what the pipeline does);
- ``tflite``: the largest difference from ``model.keras`` and, for classification,
  the accuracy of both (what quantization costs).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

    from trainkit.plan import Built


def compare(built: Built, model: keras.Model, spec: dict[str, Any], out: Path, written: dict[str, Any], *, limit: int) -> None:
    from keras import tree

    data = built.data
    split = next((s for s in ("test", "validation", "train") if data.has_split(s)), None)
    if split is None or not written:
        return
    raw_x, labels, piped_x = [], [], []
    for (x, y), (px, _) in zip(data.raw_dataset(split, batch_size=128), data.dataset(split, batch_size=128), strict=False):
        raw_x.append(x.numpy())
        labels.append(y.numpy())
        piped_x.append(tree.map_structure(lambda t: t.numpy(), px))  # (a preset's preprocessor gives a dict)
        if sum(len(b) for b in raw_x) >= limit:
            break
    raw = np.concatenate(raw_x)[:limit]
    y = np.concatenate(labels)[:limit]
    # Called directly, not through predict(): predict() traces a function per
    # model, a fixed cost of every run, and after five runs in one process
    # TensorFlow warns about retracing.
    reference = np.concatenate([np.asarray(model(raw[i : i + 128], training=False)) for i in range(0, len(raw), 128)])
    classification = spec["task"] == "classification"
    if "keras" in written:
        import keras

        from trainkit.serving.model import output_head

        # Called directly, not through predict(): under a multi-worker or parameter-server
        # strategy only the chief gets here, and predict() would distribute the work.
        piped = tree.map_structure(lambda *batches: np.concatenate(batches)[:limit], *piped_x)
        trained = np.concatenate([
            np.asarray(built.model(tree.map_structure(lambda t, i=i: t[i : i + 128], piped), training=False))
            for i in range(0, len(raw), 128)
        ])
        head_input = keras.Input(trained.shape[1:])
        headed = keras.Model(head_input, output_head(spec["head"], head_input))(trained)
        written["keras"]["examples_checked"] = int(len(raw))
        written["keras"]["max_difference_from_pipeline"] = float(np.max(np.abs(np.asarray(headed) - reference)))
        if classification:
            written["keras"]["accuracy"] = _accuracy(reference, y)
    if "tflite" in written:
        try:
            outputs = run_tflite(out / written["tflite"]["file"], raw)
        except ImportError:
            written["tflite"]["note"] = "not checked: ai-edge-litert is not installed (pip install 'trainkit[export]')"
            return
        key = "probabilities" if classification else "predictions"
        written["tflite"]["examples_checked"] = int(len(raw))
        written["tflite"]["max_difference_from_keras"] = float(np.max(np.abs(outputs[key] - reference)))
        if classification:
            written["tflite"]["accuracy"] = _accuracy(outputs[key], y)
            written["tflite"]["accuracy_change"] = written["tflite"]["accuracy"] - _accuracy(reference, y)


def run_tflite(path: Path, features: np.ndarray) -> dict[str, np.ndarray]:
    """The ``serving_default`` signature of a LiteRT model on a batch."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner("serving_default")
    return runner(features=features)


def _accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    labels = labels.argmax(-1) if labels.ndim == probabilities.ndim else labels
    return float(np.mean(probabilities.argmax(-1) == labels.reshape(-1)))
