"""Run exports' four formats in their own runtimes, without trainkit (for tests only).

    python tests/_serving_runtimes.py EXPORT_DIR FEATURES.npy RESULT.npz [EXPORT_DIR FEATURES.npy RESULT.npz ...]

Loads ``model.keras`` with plain Keras (safe mode), ``saved_model/`` with
``tf.saved_model.load``, ``model.tflite`` with the LiteRT interpreter and
``model.onnx`` with onnxruntime, feeds each the raw features, and saves every
output as ``FORMAT.OUTPUT`` in RESULT.npz, plus ``RESULT.json`` beside it: each
format's input and output names. Fails if anything imported trainkit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(export_dir: Path, features: Path, result: Path) -> None:
    x = np.load(features)
    outputs: dict[str, np.ndarray] = {}
    names: dict[str, dict] = {}

    import keras

    model = keras.models.load_model(export_dir / "model.keras", safe_mode=True)
    outputs["keras.output"] = np.asarray(model.predict(x, verbose=0))
    names["keras"] = {"inputs": [t.name for t in model.inputs]}

    import tensorflow as tf

    served = tf.saved_model.load(str(export_dir / "saved_model"))
    signature = served.signatures["serving_default"]
    for key, value in signature(features=tf.constant(x)).items():
        outputs[f"saved_model.{key}"] = value.numpy()
    names["saved_model"] = {"inputs": sorted(signature.structured_input_signature[1]), "outputs": sorted(signature.structured_outputs)}
    metadata = json.loads((export_dir / "saved_model" / "assets.extra" / "trainkit.json").read_text())
    names["saved_model"]["class_names"] = metadata["class_names"]

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(export_dir / "model.tflite"))
    runner = interpreter.get_signature_runner("serving_default")
    for key, value in runner(features=x).items():
        outputs[f"tflite.{key}"] = np.asarray(value)
    names["tflite"] = interpreter.get_signature_list()["serving_default"]

    import onnxruntime

    session = onnxruntime.InferenceSession(str(export_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    output_names = [o.name for o in session.get_outputs()]
    for key, value in zip(output_names, session.run(None, {"features": x}), strict=True):
        outputs[f"onnx.{key}"] = value
    meta = session.get_modelmeta().custom_metadata_map
    names["onnx"] = {"inputs": [i.name for i in session.get_inputs()], "outputs": sorted(output_names), "class_names": json.loads(meta["trainkit"])["class_names"]}

    assert not [m for m in sys.modules if m == "trainkit" or m.startswith("trainkit.")], "trainkit was imported"
    np.savez(result, **outputs)
    result.with_suffix(".json").write_text(json.dumps(names))


if __name__ == "__main__":
    arguments = [Path(a) for a in sys.argv[1:]]
    for i in range(0, len(arguments), 3):  # one process for several exports: TensorFlow starts once
        main(*arguments[i : i + 3])
