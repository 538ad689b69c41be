"""What an exported model needs to know about the data, recorded once per run.

The inference model is the fitted preprocessing (``data.scale`` statistics,
``data.feature_shape``, the deterministic ``data.transforms`` and
``data.eval_transforms``) as Keras layers in front of the trained model: the very
steps the ``tf.data`` pipeline applies (:mod:`trainkit.data.transforms`). Its
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
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainkit.errors import ConfigError, RunDirError, first_line
from trainkit.files import read_regular

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
    steps = list(data.preprocessing)  # the layers the pipeline applies: one definition
    unsupported = unsupported or data.not_exportable
    columns = info.feature_names if len(shape) == 1 and info.feature_names and len(info.feature_names) == shape[0] else None
    source = section.source
    if dtype == "string":  # one text per example: the text column of a CSV or JSON lines, or a TFRecord's key
        key = [source.inputs] if source.type == "tfrecord" and isinstance(source.inputs, str) else None
        columns = info.feature_names if info.feature_names and len(info.feature_names) == 1 else key
    series = {"columns": list(info.feature_names)} if source.type == "timeseries" and info.feature_names else None
    delimiter = getattr(source, "delimiter", ",")  # (a CSV to predict on is split like the training file)
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
        "input": {"name": INPUT_NAME, "shape": shape, "dtype": dtype, "columns": columns, "image": image,
                  **({"series": series} if series else {}),  # (a window's columns: predict cuts a series CSV)
                  **({"delimiter": delimiter} if delimiter != "," else {})},
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


def write(directory: Path, spec: dict[str, Any]) -> None:
    from trainkit.files import write_json_atomic

    write_json_atomic(Path(directory) / SPEC_FILE, spec)


def read(directory: Path) -> dict[str, Any] | None:
    """The run's inference description, checked: a damaged or foreign file is one line."""
    path = Path(directory) / SPEC_FILE
    if not path.is_file():
        return None
    way_out = "it is damaged or not trainkit's: copy the run again, or train it again with --restart"
    try:
        data = json.loads(read_regular(path, MAX_SPEC_BYTES).decode("utf-8"))
        _InferenceSpec.model_validate(data)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "the file"
        raise RunDirError(f"{path} is not a valid inference description ({where}: {first['msg']}); {way_out}") from None
    except (ValueError, RecursionError, OSError) as err:  # bad JSON, not UTF-8
        reason = first_line(err, limit=200)
        raise RunDirError(f"{path} cannot be read ({reason}); {way_out}") from None
    return data


MAX_SPEC_BYTES = 16 << 20
"""Normalization statistics of a large image are the biggest part; far below this."""

_Strict = ConfigDict(strict=True, extra="allow")
_Dim = Annotated[int, Field(gt=0, le=1 << 20)]


class _Input(BaseModel):
    model_config = _Strict
    name: str
    shape: Annotated[list[_Dim], Field(max_length=8)]
    dtype: str
    columns: list[str] | None = None
    image: dict[str, Any] | None = None
    series: dict[str, list[str]] | None = None
    """A time-series run's input columns, in a window's order."""
    delimiter: Annotated[str, Field(min_length=1, max_length=1)] = ","
    """The CSV source's delimiter: a CSV to predict on is split by it."""

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        import numpy as np

        if value != "string":
            try:
                np.dtype(value)
            except TypeError:
                raise ValueError(f"unknown dtype {value[:40]!r}") from None
        return value


def _numbers(value: Any, depth: int = 0) -> Any:
    """Numbers nested as lists (one statistic per value of a feature of any rank)."""
    if isinstance(value, list) and depth < 8:
        return [_numbers(item, depth + 1) for item in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    raise ValueError("expected numbers, in lists nested at most 8 deep")


class _Normalize(BaseModel):
    model_config = _Strict
    type: Literal["normalize"]
    mean: list[Any]
    std: list[Any]
    per: Literal["element", "channel"]

    @field_validator("mean", "std")
    @classmethod
    def _nested_numbers(cls, value: list[Any]) -> list[Any]:
        return _numbers(value)


class _Rescale(BaseModel):
    model_config = _Strict
    type: Literal["rescale"]
    scale: float
    offset: float


class _CastFloat(BaseModel):
    model_config = _Strict
    type: Literal["cast_float"]


class _Reshape(BaseModel):
    model_config = _Strict
    type: Literal["reshape"]
    shape: Annotated[list[_Dim], Field(max_length=8)]


class _Resize(BaseModel):
    model_config = _Strict
    type: Literal["resize", "center_crop"]
    size: Annotated[list[_Dim], Field(min_length=2, max_length=2)]
    method: str = "bilinear"


class _Vectorize(BaseModel):
    model_config = _Strict
    type: Literal["vectorize"]
    standardize: Literal["lower_and_strip_punctuation", "lower", "strip_punctuation", "none"]
    ngrams: Annotated[int, Field(ge=1, le=5)] | None
    output_mode: Literal["int", "multi_hot", "tf_idf"]
    sequence_length: _Dim | None
    vocabulary: Annotated[list[str], Field(min_length=2)]
    idf_weights: list[float] | None


class _WordPiece(BaseModel):
    model_config = _Strict
    type: Literal["wordpiece"]
    sequence_length: _Dim
    lowercase: bool
    vocabulary: Annotated[list[str], Field(min_length=3)]
    vocabulary_size: Annotated[int, Field(ge=3)]


class _SentencePiece(BaseModel):
    model_config = _Strict
    type: Literal["sentencepiece"]
    sequence_length: _Dim
    proto: str
    """The model file's bytes in base64."""
    vocabulary_size: Annotated[int, Field(ge=2)]


class _Preset(BaseModel):
    model_config = _Strict
    type: Literal["preset"]
    source: str
    preprocessor: str
    """The class name of the preset's preprocessor."""
    tokenizer: dict[str, Any]
    """The KerasHub tokenizer's Keras config (``serialize_keras_object``)."""
    assets: dict[str, str]
    """Its asset files (the vocabulary) in base64, by file name."""
    start_id: int
    end_id: int
    pad_id: int
    sequence_length: Annotated[int, Field(ge=3, le=1 << 20)]
    vocabulary_size: Annotated[int, Field(ge=2)]

    @field_validator("tokenizer")
    @classmethod
    def _keras_hub(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not str(value.get("registered_name", "")).startswith("keras_hub>"):
            raise ValueError("not a KerasHub tokenizer")
        return value

    @field_validator("assets")
    @classmethod
    def _file_names(cls, value: dict[str, str]) -> dict[str, str]:
        if any(not name or name.startswith(".") or "/" in name or "\\" in name for name in value):
            raise ValueError("asset names are plain file names")
        return value


class _InferenceSpec(BaseModel):
    model_config = _Strict
    recipe: str
    recipe_hash: str
    task: Literal["classification", "regression"]
    num_classes: Annotated[int, Field(ge=1, le=1 << 20)] | None
    class_names: list[str] | None
    input: _Input
    preprocessing: list[Annotated[_Normalize | _Rescale | _CastFloat | _Reshape | _Resize | _Vectorize | _WordPiece | _SentencePiece | _Preset, Field(discriminator="type")]]
    head: Literal["binary_logits", "binary", "softmax", "probabilities", "identity"]
    outputs: list[str]
    unsupported: str | None = None

    @model_validator(mode="after")
    def _classes_named(self) -> _InferenceSpec:
        if self.task == "classification" and (not self.class_names or len(self.class_names) < 2):
            raise ValueError("a classification run names at least two classes in class_names")
        return self


def check_exportable(spec: dict[str, Any]) -> None:
    if spec.get("unsupported"):
        raise ConfigError(f"export: {spec['unsupported']} (the inference model takes raw features)")
