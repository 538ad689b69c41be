"""Writers of the four export formats, each atomic and never through a link
(:mod:`trainkit.files`): written under a temporary name beside the target,
then renamed over it.

- ``keras``: ``model.keras``, plain ``keras.models.load_model`` (safe mode).
- ``saved_model``: ``saved_model/`` with a ``serving_default`` signature taking
  ``features`` and giving ``probabilities`` and ``class_ids`` (classification) or
  ``predictions`` (regression); the metadata in ``assets.extra/trainkit.json``
  (where TensorFlow Serving expects extra files).
- ``tflite``: ``model.tflite`` converted from that SavedModel (same signature
  names), optionally with dynamic-range quantization.
- ``onnx``: ``model.onnx``, with the same input and output names, the metadata
  in the model's ``metadata_props``. Keras's ``model.export(format="onnx")``
  hands tf2onnx a function whose captured constants (Normalization's mean and
  variance, stored as tensors rather than variables) become extra graph inputs;
  freezing the serving function first (``convert_variables_to_constants_v2``)
  folds them into the graph, so the ONNX model has the one ``features`` input.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from trainkit import compat
from trainkit.files import atomic_folder, atomic_path, write_bytes_atomic, write_json_atomic

FILES = {"keras": "model.keras", "saved_model": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}
ONNX_OPSET = 17


def serving_function(model: keras.Model, spec: dict[str, Any]):
    """The ``serving_default`` function: named outputs fitting the task."""
    raw = spec["input"]
    signature = [tf.TensorSpec([None, *raw["shape"]], tf.as_dtype(raw["dtype"]), name=raw["name"])]
    classification = spec["task"] == "classification"

    def serve(features):
        y = model(features, training=False)
        if classification:
            return {
                "probabilities": tf.identity(y, name="probabilities"),
                "class_ids": tf.identity(tf.argmax(y, axis=-1), name="class_ids"),
            }
        return {"predictions": tf.identity(y, name="predictions")}

    return serve, signature


def write_keras(model: keras.Model, target: Path) -> None:
    with atomic_path(target) as tmp:
        model.save(tmp)


@contextlib.contextmanager
def _tensorflow_logs_at(level: str) -> Iterator[None]:
    """TensorFlow's Python logger at ``level`` for a block, then as it was."""
    logger = tf.get_logger()
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


def write_saved_model(model: keras.Model, spec: dict[str, Any], target: Path, metadata: dict) -> None:
    serve, signature = serving_function(model, spec)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=signature)
    # (its "Assets written to: ...tmp..." INFO line reached a notebook's cell)
    with atomic_folder(target) as tmp, _tensorflow_logs_at("WARNING"):
        archive.write_out(str(tmp), verbose=False)
        extra = tmp / "assets.extra"
        extra.mkdir(exist_ok=True)
        write_json_atomic(extra / "trainkit.json", metadata)


def write_tflite(saved_model: Path, target: Path, *, quantize: str) -> None:
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serving_default"])
    if quantize == "dynamic_range":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # int8 weights, float activations
    write_bytes_atomic(target, converter.convert())


def write_onnx(model: keras.Model, spec: dict[str, Any], target: Path, metadata: dict) -> None:
    import onnx
    import tf2onnx

    serve, signature = serving_function(model, spec)
    names = list(spec["outputs"])
    with _tensorflow_logs_at("ERROR"):  # tf2onnx calls TF1 graph utilities that warn about their deprecation
        frozen = compat.freeze_function(tf.function(serve, input_signature=signature).get_concrete_function())
        proto, _ = tf2onnx.convert.from_graph_def(
            frozen.graph.as_graph_def(),
            input_names=[f"{spec['input']['name']}:0"],
            output_names=[f"{name}:0" for name in names],
            opset=ONNX_OPSET,
        )
    undefined = sorted({node.op_type for node in proto.graph.node if not onnx.defs.has(node.op_type, node.domain or "")})
    if undefined:  # (tf2onnx leaves an op it cannot convert as the TensorFlow op: onnxruntime cannot load the file)
        raise ValueError(f"tf2onnx left TensorFlow ops that ONNX does not define: {', '.join(undefined[:5])}")
    _strip_tensor_suffix(proto, [spec["input"]["name"], *names])
    for key, value in (("trainkit", json.dumps(metadata)),):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_path(target) as tmp:
        onnx.save(proto, str(tmp))


def _strip_tensor_suffix(proto, names: list[str]) -> None:
    """Rename TensorFlow's ``features:0`` to ``features`` in the ONNX graph."""
    renames = {f"{name}:0": name for name in names}
    graph = proto.graph
    for value in [*graph.input, *graph.output]:
        value.name = renames.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
