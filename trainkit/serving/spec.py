"""What an exported model needs to know about the data, recorded once per run.

The inference model is the fitted preprocessing (``data.scale`` statistics,
``data.feature_shape``, the deterministic ``data.transforms`` and
``data.eval_transforms``) as Keras layers in front of the trained model. Its
description -- the raw input (shape, dtype, column names, image settings), the
preprocessing steps with their fitted numbers, the task, the class names and how
the model's outputs become probabilities -- is written to ``inference.json`` in
the run directory when training starts, so that any later checkpoint can be
exported or used for prediction without fitting anything again.

Augmentation and label-side transforms (``one_hot``, label casts) stay out: they
never reach a model at inference time. This module imports no TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainkit.errors import ConfigError

if TYPE_CHECKING:
    from trainkit.data.pipeline import PreparedData
    from trainkit.recipe import Recipe

SPEC_FILE = "inference.json"
INPUT_NAME = "features"


def describe(recipe: Recipe, data: PreparedData, model: Any, loss: Any, *, identity: str | None = None) -> dict[str, Any]:
    """The inference description of a built run (``data``: its PreparedData;
    ``identity``: the run's, :class:`trainkit.recipe.RunIdentity`)."""
    raw_x, _ = data.raw_dataset("train", batch_size=1).element_spec
    info, section = data.info, recipe.data
    unsupported = None
    if isinstance(raw_x, dict):
        unsupported = (
            f"the features are a dict of named inputs ({', '.join(raw_x)}); export takes one feature tensor"
        )
        shape, dtype = [], "float32"
    else:
        shape, dtype = [int(d) for d in raw_x.shape[1:]], raw_x.dtype.name
    steps: list[dict[str, Any]] = []
    if data.scaler is not None:
        steps.append(
            {
                "type": "normalize",
                "field": "data.scale",
                "mean": data.scaler.offset.tolist(),
                "std": data.scaler.scale.tolist(),
                "per": "element",
            }
        )
    if section.feature_shape:
        steps.append({"type": "reshape", "field": "data.feature_shape", "shape": list(section.feature_shape)})
    for group in ("transforms", "eval_transforms"):
        for i, transform in enumerate(getattr(section, group)):
            field_name = f"data.{group}.{i}"
            try:
                step = _step(transform, field_name, data.statistics)
            except _Unsupported as reason:
                unsupported = unsupported or str(reason)
                continue
            if step is not None:
                steps.append(step)
    columns = info.feature_names if len(shape) == 1 and info.feature_names and len(info.feature_names) == shape[0] else None
    source = section.source
    image = None
    if source.type == "image_folder":
        image = {"channels": source.channels, "size": shape[:2], "resize": source.image_size is not None}
    outputs = _outputs(model)
    if info.task == "classification":
        from_logits = bool(getattr(loss, "from_logits", False))
        if outputs == 1:
            head = "binary_logits" if from_logits else "binary"
        else:
            head = "softmax" if from_logits else "probabilities"
    else:
        head = "identity"
    return {
        "recipe": recipe.name,
        "recipe_hash": identity or recipe.hash,
        "task": info.task,
        "num_classes": info.num_classes,
        "class_names": _class_names(info),
        "input": {"name": INPUT_NAME, "shape": shape, "dtype": dtype, "columns": columns, "image": image},
        "preprocessing": steps,
        "head": head,
        "outputs": ["probabilities", "class_ids"] if info.task == "classification" else ["predictions"],
        "unsupported": unsupported,
    }


def _class_names(info) -> list[str] | None:
    if info.task != "classification":
        return None
    return list(info.class_names) if info.class_names else [str(k) for k in range(int(info.num_classes))]


def _outputs(model) -> int:
    shape = model.output_shape
    if isinstance(shape, list):
        shape = shape[0]
    return int(shape[-1]) if len(shape) > 1 and shape[-1] else 1


class _Unsupported(Exception):
    """A transform that has no Keras layer counterpart."""


def _step(transform: Any, field_name: str, statistics: dict) -> dict[str, Any] | None:
    kind = transform.type
    if hasattr(transform, "kwargs"):
        raise _Unsupported(f"{field_name}: registered transform '{kind}' has no Keras layer to export it with")
    if kind == "scale":
        return {"type": "rescale", "field": field_name, "scale": transform.factor, "offset": transform.offset}
    if kind == "normalize":
        mean, std = (transform.mean, transform.std) if transform.mean is not None else statistics[field_name]
        as_list = (lambda v: [float(x) for x in v]) if isinstance(mean, list) else (lambda v: [float(v)])
        return {"type": "normalize", "field": field_name, "mean": as_list(mean), "std": as_list(std), "per": "channel"}
    if kind in ("one_hot",) or getattr(transform, "target", "features") == "label":
        return None  # label-side: not part of inference
    if kind == "cast":
        if transform.dtype != "float32":
            raise _Unsupported(f"{field_name}: a cast of the features to {transform.dtype} is not exported")
        return {"type": "cast_float", "field": field_name}
    if kind == "resize":
        return {"type": "resize", "field": field_name, "size": list(transform.size), "method": transform.method}
    if kind == "center_crop":
        return {"type": "center_crop", "field": field_name, "size": list(transform.size)}
    if kind == "reshape":
        return {"type": "reshape", "field": field_name, "shape": list(transform.shape)}
    raise _Unsupported(f"{field_name}: transform '{kind}' is not exported")


def write(directory: Path, spec: dict[str, Any]) -> None:
    from trainkit.files import write_json_atomic

    write_json_atomic(Path(directory) / SPEC_FILE, spec)


def read(directory: Path) -> dict[str, Any] | None:
    path = Path(directory) / SPEC_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def check_exportable(spec: dict[str, Any]) -> None:
    if spec.get("unsupported"):
        raise ConfigError(f"export: {spec['unsupported']} (the inference model takes raw features)")
