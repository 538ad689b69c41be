"""The Recipe: a typed, validated, hashable description of one experiment.

A recipe has the sections ``data``, ``model``, ``loss``, ``metrics``,
``optimizer`` (with its learning-rate ``schedule``), ``trainer``, ``runtime`` and
``export``, plus ``name``, ``description`` and ``seed``. Every section is strict:
an unknown key is an error. Components (layers, losses, metrics, optimizers,
callbacks, model builders) are named by ``type`` and looked up in
:mod:`trainkit.registry` when the recipe is built; their keyword arguments are
checked against the component's signature then.

This module imports no TensorFlow, so parsing, printing and hashing a recipe is
fast. Example::

    >>> from trainkit.recipe import Recipe
    >>> r = Recipe.model_validate({
    ...     "name": "demo",
    ...     "data": {"source": {"type": "sklearn", "name": "iris"}},
    ...     "model": {"type": "mlp", "hidden_units": [16]},
    ...     "loss": "sparse_categorical_crossentropy",
    ...     "trainer": {"epochs": 2},
    ... })
    >>> Recipe.from_yaml(r.to_yaml()) == r
    True
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PositiveFloat,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    StrictBool,
    Tag,
    field_validator,
    model_serializer,
    model_validator,
)

from trainkit.errors import ConfigError
from trainkit.patterns import check_pattern

#: The largest count (batch size, steps, buffer, ...) a recipe may give: TensorFlow
#: holds many of them as int32, and nothing real comes near it; 10**20 would
#: otherwise surface as an OverflowError deep inside a build.
MAX_COUNT = 2**31 - 1
PositiveInt = Annotated[int, Field(gt=0, le=MAX_COUNT)]
NonNegativeInt = Annotated[int, Field(ge=0, le=MAX_COUNT)]
#: Seeds are unsigned 32-bit, as NumPy's and TensorFlow's seeding accept them.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


def _usable_pattern(value: str) -> str:
    try:
        check_pattern(value, "")
    except ConfigError as err:
        raise ValueError(str(err).removeprefix(": ")) from None
    return value


Pattern = Annotated[str, AfterValidator(_usable_pattern)]
"""A regular expression over layer names or variable paths: bounded in length, compilable."""


class _NumbersAreNumbers(BaseModel):
    """A section whose number fields refuse YAML's booleans."""

    @model_validator(mode="before")
    @classmethod
    def _a_boolean_is_no_number(cls, data: Any) -> Any:
        """``epochs: true`` would be 1 epoch: YAML's booleans are refused where a number goes."""
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name) if isinstance(name, str) else None
                if isinstance(value, bool) and field is not None and _takes_numbers_not_booleans(field.annotation):
                    raise ValueError(f"{name}: {str(value).lower()} is a boolean, not a number")
        return data


class Section(_NumbersAreNumbers):
    """A strict recipe section: unknown keys are errors. Numbers are finite: an infinite
    learning rate or multiplier only fails at the first step, after the run directory exists."""

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


def _takes_numbers_not_booleans(annotation: Any) -> bool:
    import types
    import typing

    kinds = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (annotation,)
    kinds = tuple(typing.get_args(k)[0] if typing.get_origin(k) is Annotated else k for k in kinds)
    return bool not in kinds and any(k in (int, float) for k in kinds)


class _OmitsUnusedFields(_NumbersAreNumbers):
    """A section whose optional fields named in ``_omitted_when_default`` are left
    out of its data while they hold their default: recipes that do not use them
    print and hash exactly as before the fields existed (runs stay resumable)."""

    model_config = ConfigDict(allow_inf_nan=False)
    _omitted_when_default: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for name in self._omitted_when_default:
            if getattr(self, name) == type(self).model_fields[name].get_default(call_default_factory=True):
                data.pop(name, None)
        return data


class Component(BaseModel):
    """A registered component named by ``type`` with its keyword arguments.

    ``"adam"`` is shorthand for ``{"type": "adam"}``. The arguments are kept as
    given and checked against the component's signature when it is built.
    """

    model_config = ConfigDict(extra="allow")

    type: str

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"type": value}
        return value

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


# --------------------------------------------------------------------------- data


SplitName = Literal["train", "validation", "test"]


class SklearnSource(Section):
    """One of scikit-learn's bundled datasets (no download needed)."""

    type: Literal["sklearn"] = "sklearn"
    name: Literal["digits", "iris", "wine", "breast_cancer", "diabetes"]


class ArraysSource(Section):
    """In-memory arrays from a function registered with ``trainkit.register_dataset``.

    The function returns ``(x, y)`` (split by ``data.splits``) or a dict of splits
    ``{"train": (x, y), "test": (x, y), ...}``.
    """

    type: Literal["arrays"] = "arrays"
    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


class TfdsSource(Section):
    """A TensorFlow Datasets dataset that is already prepared on disk (never downloaded).

    ``splits`` maps trainkit's splits to TFDS split expressions, slicing
    included: ``{train: "train[:90%]", validation: "train[90%:]", test: test}``.
    """

    type: Literal["tfds"] = "tfds"
    name: Annotated[str, Field(min_length=1)]
    version: str | None = None
    """A version such as ``3.0.1``; default: the version the installed TFDS defines."""
    data_dir: str | None = None
    """Where prepared datasets live; default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``."""
    splits: dict[SplitName, str] = Field(default_factory=lambda: {"train": "train", "test": "test"})
    as_supervised: StrictBool = True
    """Read ``(features, label)`` from the dataset's supervised keys."""
    features: str | list[str] | None = None
    """Feature key(s) of each example (instead of the supervised keys); a list gives a dict."""
    label: str | None = None
    """Label key of each example (with ``features``)."""

    @model_validator(mode="after")
    def _keys(self) -> TfdsSource:
        if (self.features is None) != (self.label is None):
            raise ValueError("set both features and label (or neither, to use the supervised keys)")
        if not self.splits:
            raise ValueError("name at least the train split")
        if "train" not in self.splits:
            raise ValueError("splits needs a 'train' entry")
        return self


class CsvSource(Section):
    """A CSV file with a header row, read into memory.

    ``path`` is one file (split by ``data.splits``) or a file per split.
    """

    type: Literal["csv"] = "csv"
    path: str | dict[SplitName, str]
    label: str
    """The label column: integers or text are classes, real numbers a regression target."""
    features: list[str] | None = None
    """Feature columns; default: every column but the label."""
    column_types: dict[str, Literal["int", "float", "string"]] = Field(default_factory=dict)
    """Declared column types; undeclared ones are inferred (int, then float, else string)."""
    delimiter: Annotated[str, Field(min_length=1, max_length=1)] = ","


class ImageFolderSource(Section):
    """Images in one subfolder per class (``path/cat/1.png``, ``path/dog/2.jpg``).

    ``path`` is one folder (split by ``data.splits``) or a folder per split. Images
    are decoded and resized in the pipeline (float32, values 0..255), never all
    loaded at once.
    """

    type: Literal["image_folder"] = "image_folder"
    path: str | dict[SplitName, str]
    image_size: tuple[PositiveInt, PositiveInt] | None = None
    """``[height, width]`` to resize to; default: the size of the first image."""
    channels: Literal[1, 3, 4] = 3
    extensions: list[str] = Field(default_factory=lambda: [".png", ".jpg", ".jpeg", ".bmp", ".gif"])
    class_names: list[str] | None = None
    """Class folders in label order; default: every subfolder, sorted."""
    skip_bad_images: StrictBool = False
    """Skip (and count) files that are not readable images instead of failing."""


class TextFolderSource(Section):
    """Text files in one subfolder per class (``path/pos/1.txt``, ``path/neg/2.txt``),
    the layout of ``keras.utils.text_dataset_from_directory``; each file is one
    example (a string feature).

    ``path`` is one folder (split by ``data.splits``) or a folder per split.
    """

    type: Literal["text_folder"] = "text_folder"
    path: str | dict[SplitName, str]
    encoding: str = "utf-8"
    extensions: list[str] = Field(default_factory=lambda: [".txt"])
    class_names: list[str] | None = None
    """Class folders in label order; default: every subfolder, sorted."""
    skip_bad_files: StrictBool = False
    """Skip (and count) files that are not valid text in ``encoding`` instead of failing."""


class JsonlSource(Section):
    """A JSON-lines file (one object per line), read into memory: ``features`` are
    keys holding numbers or one key holding text (a string feature)."""

    type: Literal["jsonl"] = "jsonl"
    path: str | dict[SplitName, str]
    label: str
    """The label key: integers or text are classes, real numbers a regression target."""
    features: list[str] | None = None
    """Feature keys; default: every key of the first line but the label."""


class TfrecordFeature(Section):
    """How one feature of a ``tf.train.Example`` is parsed."""

    dtype: Literal["float32", "int64", "string"] = "float32"
    shape: list[NonNegativeInt] = Field(default_factory=list)
    """Shape of the value (``[]``: a scalar); for an image, its decoded ``[height, width, channels]``."""
    image: StrictBool = False
    """A string holding an encoded image (PNG, JPEG, ...): decoded to uint8."""
    channels: Literal[0, 1, 3, 4] = 0
    """Channels of a decoded image (0: as stored)."""


class TfrecordSource(Section):
    """TFRecord files of ``tf.train.Example`` protos, streamed.

    ``files`` is a glob or a list of paths/globs (split by ``data.splits``), or
    the same per split.
    """

    type: Literal["tfrecord"] = "tfrecord"
    files: str | list[str] | dict[SplitName, str | list[str]]
    features: dict[str, TfrecordFeature]
    """The feature spec: every key to parse, with its type and shape."""
    inputs: str | list[str]
    """The feature key(s) fed to the model; a list gives a dict of features."""
    label: str
    compression: Literal["none", "GZIP", "ZLIB"] = "none"

    @model_validator(mode="after")
    def _keys_in_spec(self) -> TfrecordSource:
        from trainkit.errors import did_you_mean

        wanted = [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)
        for key in [*wanted, self.label]:
            if key not in self.features:
                raise ValueError(f"'{key}' is not in features; {did_you_mean(key, self.features)}")
        return self


class GeneratorSource(Section):
    """Examples from a Python generator function a recipe registers with
    ``trainkit.register_dataset``; it is called anew for every pass.

    The function yields ``(x, y)`` pairs. With ``splits`` it is called with
    ``split=NAME`` for each split; without, its stream is split by ``data.splits``.
    """

    type: Literal["generator"] = "generator"
    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    splits: list[SplitName] | None = None


ColumnName = Annotated[str | int, Field(union_mode="left_to_right")]


class TimeseriesSource(Section):
    """Windows over a series: ``sequence_length`` rows of ``columns`` as the inputs,
    the ``targets`` ``horizon`` rows after the window's last row as the label
    (the pairing of ``keras.utils.timeseries_dataset_from_array``).

    The series is a CSV file (``path``: a header row, one column per variable,
    rows in time order) or a dataset a recipe registers (``name``: a function
    returning a ``[time, variables]`` array, whose columns are named ``0``, ``1``,
    ..., or a dict of 1-D columns). ``data.splits`` cut the rows in time order
    (train first, then validation, then test) and no window crosses a cut.
    """

    type: Literal["timeseries"] = "timeseries"
    path: str | None = None
    name: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the registered dataset ``name``."""
    columns: list[ColumnName] | None = None
    """The input variables; default: every numeric column."""
    targets: list[ColumnName] | None = None
    """The variables to forecast; default: the only input column, when there is one."""
    sequence_length: PositiveInt
    """Rows (time steps) in each input window."""
    horizon: PositiveInt = 1
    """How many rows after a window's last row its target is (1: the next row)."""
    stride: PositiveInt = 1
    """Rows between the starts of consecutive windows."""
    delimiter: Annotated[str, Field(min_length=1, max_length=1)] = ","

    @model_validator(mode="after")
    def _one_series(self) -> TimeseriesSource:
        if (self.path is None) == (self.name is None):
            raise ValueError("give the series as path (a CSV file) or name (a registered dataset), one of them")
        if self.kwargs and self.name is None:
            raise ValueError("kwargs are the arguments of a registered dataset (name)")
        return self


Source = Annotated[
    SklearnSource
    | ArraysSource
    | TfdsSource
    | CsvSource
    | JsonlSource
    | ImageFolderSource
    | TextFolderSource
    | TfrecordSource
    | GeneratorSource
    | TimeseriesSource,
    Field(discriminator="type"),
]


# ---------------------------------------------------------------------- transforms


class _Transform(Section):
    random: ClassVar[bool] = False


class ScaleTransform(_Transform):
    """``x * factor + offset`` as float32 (default: 0..255 pixels to 0..1)."""

    type: Literal["scale"] = "scale"
    factor: float = 1 / 255
    offset: float = 0.0


class NormalizeTransform(_Transform):
    """``(x - mean) / std`` per channel (last axis); statistics from the training split."""

    type: Literal["normalize"] = "normalize"
    mean: float | list[float] | None = None
    std: float | list[float] | None = None
    """Given statistics; default: computed on the training split (one pass)."""

    @model_validator(mode="after")
    def _both(self) -> NormalizeTransform:
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither (computed from the training split)")
        return self


class OneHotTransform(_Transform):
    """Class labels to one-hot vectors (use CategoricalCrossentropy then)."""

    type: Literal["one_hot"] = "one_hot"
    num_classes: PositiveInt | None = None
    """Default: the data's number of classes."""


class CastTransform(_Transform):
    type: Literal["cast"] = "cast"
    dtype: Literal["float32", "float16", "bfloat16", "int32", "int64", "uint8"] = "float32"
    target: Literal["features", "label"] = "features"


class ResizeTransform(_Transform):
    type: Literal["resize"] = "resize"
    size: tuple[PositiveInt, PositiveInt]
    method: Literal["bilinear", "nearest", "bicubic", "area", "lanczos3"] = "bilinear"


class CenterCropTransform(_Transform):
    type: Literal["center_crop"] = "center_crop"
    size: tuple[PositiveInt, PositiveInt]


class ReshapeTransform(_Transform):
    """Reshape each example's features (``[8, 8, 1]`` for flat 64-value rows)."""

    type: Literal["reshape"] = "reshape"
    shape: list[Annotated[int, Field(ge=-1)]]


class RenameTransform(_Transform):
    """Rename keys of dict features."""

    type: Literal["rename"] = "rename"
    mapping: dict[str, str]


class SelectTransform(_Transform):
    """Keep some keys of dict features; one key (a string) makes the features that tensor."""

    type: Literal["select"] = "select"
    keys: str | list[str]


class RandomCropTransform(_Transform):
    """A random ``size`` crop, after zero-padding each side by ``padding`` pixels."""

    random: ClassVar[bool] = True
    type: Literal["random_crop"] = "random_crop"
    size: tuple[PositiveInt, PositiveInt]
    padding: NonNegativeInt = 0


class RandomFlipTransform(_Transform):
    random: ClassVar[bool] = True
    type: Literal["random_flip"] = "random_flip"
    mode: Literal["horizontal", "vertical", "horizontal_and_vertical"] = "horizontal"


class RandomBrightnessTransform(_Transform):
    random: ClassVar[bool] = True
    type: Literal["random_brightness"] = "random_brightness"
    max_delta: PositiveFloat


class RandomContrastTransform(_Transform):
    random: ClassVar[bool] = True
    type: Literal["random_contrast"] = "random_contrast"
    lower: PositiveFloat = 0.8
    upper: PositiveFloat = 1.2

    @model_validator(mode="after")
    def _order(self) -> RandomContrastTransform:
        if self.lower >= self.upper:
            raise ValueError("lower must be below upper")
        return self


class RegisteredTransform(BaseModel):
    """A transform function a recipe registers with ``trainkit.register_transform``;
    the other keys are its keyword arguments."""

    model_config = ConfigDict(extra="allow")
    random: ClassVar[bool] = False
    type: str

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


BUILTIN_TRANSFORMS: dict[str, type[_Transform]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        ScaleTransform,
        NormalizeTransform,
        OneHotTransform,
        CastTransform,
        ResizeTransform,
        CenterCropTransform,
        ReshapeTransform,
        RenameTransform,
        SelectTransform,
        RandomCropTransform,
        RandomFlipTransform,
        RandomBrightnessTransform,
        RandomContrastTransform,
    )
}


def _transform_tag(value: Any) -> str:
    name = value if isinstance(value, str) else (value.get("type") if isinstance(value, dict) else getattr(value, "type", None))
    return name if name in BUILTIN_TRANSFORMS else "registered"


def _transform_from_name(value: Any) -> Any:
    return {"type": value} if isinstance(value, str) else value


Transform = Annotated[
    Annotated[
        Annotated[ScaleTransform, Tag("scale")]
        | Annotated[NormalizeTransform, Tag("normalize")]
        | Annotated[OneHotTransform, Tag("one_hot")]
        | Annotated[CastTransform, Tag("cast")]
        | Annotated[ResizeTransform, Tag("resize")]
        | Annotated[CenterCropTransform, Tag("center_crop")]
        | Annotated[ReshapeTransform, Tag("reshape")]
        | Annotated[RenameTransform, Tag("rename")]
        | Annotated[SelectTransform, Tag("select")]
        | Annotated[RandomCropTransform, Tag("random_crop")]
        | Annotated[RandomFlipTransform, Tag("random_flip")]
        | Annotated[RandomBrightnessTransform, Tag("random_brightness")]
        | Annotated[RandomContrastTransform, Tag("random_contrast")]
        | Annotated[RegisteredTransform, Tag("registered")],
        Discriminator(_transform_tag),
    ],
    BeforeValidator(_transform_from_name),
]


class VectorizeText(Section):
    """Keras ``TextVectorization``, its vocabulary adapted on the training split only."""

    type: Literal["vectorize"] = "vectorize"
    max_tokens: Annotated[int, Field(ge=3)] = 20_000
    """The vocabulary's size, padding and out-of-vocabulary tokens included."""
    sequence_length: PositiveInt | None = 200
    """Token ids per example (``int``): longer texts are cut, shorter ones padded with 0."""
    ngrams: Annotated[int, Field(ge=1, le=5)] | None = None
    standardize: Literal["lower_and_strip_punctuation", "lower", "strip_punctuation", "none"] = "lower_and_strip_punctuation"
    output_mode: Literal["int", "multi_hot", "tf_idf"] = "int"

    @model_validator(mode="after")
    def _length_for_ids(self) -> VectorizeText:
        if self.output_mode == "int" and self.sequence_length is None:
            raise ValueError("sequence_length: int output needs a length (examples of one size can be batched)")
        return self


class WordPieceText(Section):
    """KerasHub's ``WordPieceTokenizer`` on a vocabulary file (one token per line, as
    ``keras_hub.tokenizers.compute_word_piece_vocabulary`` gives), ``[PAD]`` first (id 0,
    padding) and ``[UNK]`` in it. The file's content is kept in the run directory."""

    type: Literal["wordpiece"] = "wordpiece"
    vocabulary: str
    """The vocabulary file (a path)."""
    sequence_length: PositiveInt = 200
    """Token ids per example: longer texts are cut, shorter ones padded with 0."""
    lowercase: StrictBool = True


class SentencePieceText(Section):
    """KerasHub's ``SentencePieceTokenizer`` on a trained SentencePiece model file
    (``.model``, a serialized proto). Id 0 is padding (train it with ``pad_id=0``).
    The file's content is kept in the run directory."""

    type: Literal["sentencepiece"] = "sentencepiece"
    proto: str
    """The SentencePiece model file (a path)."""
    sequence_length: PositiveInt = 200
    """Token ids per example: longer texts are cut, shorter ones padded with 0."""


class PresetText(Section):
    """A KerasHub preset's own text preprocessor (its ``TextClassifierPreprocessor``):
    the preset's tokenizer, packing with its special tokens (``[CLS] ... [SEP]`` for
    BERT) and the padding mask. The default for string features when ``model`` is
    ``{type: pretrained, source: PRESET}``; the preprocessor is kept in the run
    directory (``text_preprocessor.json``), so a continued run needs no preset."""

    type: Literal["preset"] = "preset"
    source: str | None = None
    """The preset (a ``save_to_preset`` directory or a ``kaggle://``/``hf://`` handle);
    default: ``model.source``."""
    sequence_length: PositiveInt | None = None
    """Token ids per example, special tokens included: longer texts are cut, shorter
    ones padded. Default: the preprocessor's own, at most the backbone's ``max_sequence_length``."""
    _implicit: bool = PrivateAttr(default=False)
    # (True where data.text was left unset: then features that are token ids already
    # need no preprocessor, rather than being refused as not text)


class NoText(Section):
    """``data.text: none``: no tokenizer at all, not even a KerasHub preset's (data that is token ids already)."""

    type: Literal["none"] = "none"


TextSection = Annotated[VectorizeText | WordPieceText | SentencePieceText | PresetText | NoText, Field(discriminator="type")]


class SplitFractions(Section):
    """Fractions of a source without its own splits; they must sum to 1."""

    train: Annotated[float, Field(gt=0, le=1)] = 0.8
    validation: Annotated[float, Field(ge=0, lt=1)] = 0.1
    test: Annotated[float, Field(ge=0, lt=1)] = 0.1

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitFractions:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must sum to 1, got {total:g}")
        return self


class DataSection(Section, _OmitsUnusedFields):
    _omitted_when_default = ("text",)

    source: Source
    splits: SplitFractions = Field(default_factory=SplitFractions)
    """How a source without its own splits is divided (deterministically, by ``split_seed``)."""
    split_seed: Seed = 0
    batch_size: PositiveInt = 32
    """The global batch size: split across replicas under a distribution strategy."""
    eval_batch_size: PositiveInt | None = None
    shuffle_buffer: NonNegativeInt = 10_000
    """0 turns shuffling off. Sources held in memory or as a file list (arrays,
    sklearn, csv, image_folder) are shuffled fully by an index permutation per
    epoch; streamed ones (tfds, tfrecord, generator, or anything cached) through
    a buffer of this size. Either way the order is a function of (seed, epoch)."""
    num_classes: PositiveInt | None = None
    """Declare the number of classes: every label must lie in ``0..num_classes-1``.
    Default: from the source's metadata, else the largest label + 1."""
    class_names: list[str] | None = None
    """A name per class, in label order; default: the source's (scikit-learn
    ``target_names``, TFDS label names, image folder names, CSV text labels).
    Kept in the run directory and the exports, and used by ``trainkit predict``."""
    scale: Literal["none", "standard", "minmax"] = "none"
    """Feature scaling of in-memory sources, fitted on the training split only
    (for any source: the ``normalize`` transform)."""
    text: TextSection | None = None
    """How string features become numbers (``{type: vectorize, ...}``, fitted on the
    training split; ``wordpiece`` or ``sentencepiece`` from a file; ``preset``, a KerasHub
    preset's own preprocessor), part of the exported model. Unset (default): no tokenizer,
    except the preset's preprocessor for string features when ``model.source`` is a
    KerasHub preset; ``none``: no tokenizer at all (token ids already)."""
    feature_shape: list[PositiveInt] | None = None
    """Reshape each example's features, e.g. ``[8, 8, 1]`` for the 8x8 digits."""
    transforms: list[Transform] = Field(default_factory=list)
    """Applied in order to every split, for training and evaluation alike."""
    augment: list[Transform] = Field(default_factory=list)
    """Applied in order after ``transforms``, to the training split only; random
    transforms are seeded by (seed, epoch, example), so a resumed run is exact."""
    eval_transforms: list[Transform] = Field(default_factory=list)
    """Applied in order after ``transforms`` wherever ``augment`` is not: to every
    split read for evaluation (validation, test, and the training split when it
    is evaluated). The deterministic counterpart of an augmentation that changes
    the examples' shape: ``random_crop`` to ``[24, 24]`` in ``augment``,
    ``center_crop`` to ``[24, 24]`` here. Training and evaluation examples must
    end up with the same shapes and dtypes (checked before training). Random
    transforms and ``normalize`` are refused here."""
    cache: StrictBool | str = False
    """``true``/``memory``: keep decoded, transformed examples in memory after the
    first epoch; a path: in files there, written during the first epoch. A
    relative path is inside the run directory (``runs/NAME/PATH/train``, ...),
    written only once the run is validated and locked, and a resumed run reads
    it; outside a run (``trainkit data``, ``trainkit eval``) it falls back to
    memory and nothing is written. In-memory sources need no cache. ``none``: no
    cache at all. Unset (``false``), the splits of a streamed source that
    ``data.text`` tokenizes are kept in memory all the same where they fit
    (``trainkit.data.pipeline.choose_cache``; the start header says so)."""
    parallel_calls: PositiveInt | Literal["auto"] = "auto"
    """Parallel map calls (``auto``: tf.data.AUTOTUNE)."""
    deterministic: StrictBool = True
    """Keep the element order of parallel maps; ``false`` may be faster (the order
    then varies, and so does a resumed run)."""
    prefetch: StrictBool | PositiveInt = True
    """Prefetch batches (``true``: AUTOTUNE, a number: that many)."""
    drop_remainder: StrictBool = False

    @field_validator("text", mode="before")
    @classmethod
    def _text_off(cls, value: Any) -> Any:
        # ("none" is kept, as {type: none}: unlike leaving it unset, it turns a preset's preprocessor off)
        return {"type": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _transform_placement(self) -> DataSection:
        for i, spec in enumerate(self.transforms):
            if spec.random:
                raise ValueError(
                    f"transforms.{i}: '{spec.type}' is random, training-only augmentation: put it in data.augment"
                )
        for i, spec in enumerate(self.augment):
            if spec.type == "normalize":
                raise ValueError(f"augment.{i}: normalize belongs in data.transforms (every split needs it)")
        for i, spec in enumerate(self.eval_transforms):
            if spec.random:
                raise ValueError(
                    f"eval_transforms.{i}: '{spec.type}' is random, but evaluation must see the same examples "
                    "every time: use a deterministic transform here (center_crop, resize) and put random ones in data.augment"
                )
            if spec.type == "normalize":
                raise ValueError(
                    f"eval_transforms.{i}: normalize belongs in data.transforms (training needs it too; "
                    "its statistics come from the training split)"
                )
        if isinstance(self.cache, str) and not self.cache.strip():
            raise ValueError("cache: give true, 'memory' or a path")
        if isinstance(self.cache, str) and not posixpath.isabs(self.cache):
            # A relative path is inside the run directory; '..' would leave it.
            if posixpath.normpath(self.cache.replace("\\", "/")).split("/")[0] == "..":
                raise ValueError(
                    f"cache: '{self.cache}' leads out of the run directory; a relative path stays inside it "
                    "(use an absolute path for a cache elsewhere)"
                )
        return self


# -------------------------------------------------------------------------- model


class InitSection(Section):
    """Weights for a recipe's own architecture from another model (``model.init``)."""

    source: Annotated[str, Field(min_length=1)]
    """A trainkit run directory or a ``.keras`` file."""
    source_checkpoint: str = "final"
    """Of a run directory: ``last``, ``best``, ``final`` or a step number."""
    skip: list[Pattern] = Field(default_factory=list)
    """Regexes over variable paths (``layer/name``) never loaded from the source."""
    strict: bool = False
    """``true``: every variable of the model must be restored (none missing or of another shape)."""


class ModelSection(_OmitsUnusedFields):
    """``type`` names a model builder (``sequential``, ``functional``, ``mlp``, ``cnn``,
    ``pretrained`` or one a recipe registers); the other keys are that builder's
    arguments, except the fine-tuning fields below, which apply to any model."""

    model_config = ConfigDict(extra="allow")
    _omitted_when_default: ClassVar[tuple[str, ...]] = ("freeze", "init", "lora_rank")

    type: str
    freeze: list[Pattern] = Field(default_factory=list)
    """Regexes over layer names: matching layers are not trained (a frozen
    BatchNormalization runs in inference mode). Each must match a layer."""
    init: InitSection | None = None
    """Restore every variable whose layer name and shape match from another model."""
    lora_rank: PositiveInt | None = None
    """LoRA of this rank on a KerasHub backbone (its ``enable_lora``)."""

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


# ---------------------------------------------------------------------- optimizer


class _Warmup(Section):
    warmup_steps: NonNegativeInt = 0
    """Linear warmup from ``warmup_start * learning_rate`` over this many steps."""
    warmup_start: Annotated[float, Field(ge=0, le=1)] = 0.0


class ConstantSchedule(_Warmup):
    type: Literal["constant"] = "constant"


class CosineSchedule(_Warmup):
    type: Literal["cosine"] = "cosine"
    decay_steps: PositiveInt | None = None
    """Steps of decay after warmup; default: the rest of the training budget."""
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Final learning rate as a fraction of the initial one."""


class ExponentialSchedule(_Warmup):
    type: Literal["exponential"] = "exponential"
    decay_steps: PositiveInt
    decay_rate: PositiveFloat
    staircase: StrictBool = False


class PiecewiseSchedule(_Warmup):
    type: Literal["piecewise"] = "piecewise"
    boundaries: list[PositiveInt]
    multipliers: list[PositiveFloat]
    """``learning_rate * multipliers[i]`` between boundaries; one more than boundaries."""

    @model_validator(mode="after")
    def _lengths(self) -> PiecewiseSchedule:
        if len(self.multipliers) != len(self.boundaries) + 1:
            raise ValueError(
                f"multipliers needs one more entry than boundaries "
                f"({len(self.boundaries)} boundaries, {len(self.multipliers)} multipliers)"
            )
        if self.boundaries != sorted(set(self.boundaries)):
            raise ValueError("boundaries must be strictly increasing")
        return self


Schedule = Annotated[
    ConstantSchedule | CosineSchedule | ExponentialSchedule | PiecewiseSchedule,
    Field(discriminator="type"),
]


class ParameterGroup(Section):
    """Trainable variables whose path (``layer/name``) matches ``match`` (a regex)
    take steps of ``learning_rate_multiplier`` times the optimizer's."""

    match: Annotated[Pattern, Field(min_length=1)]
    learning_rate_multiplier: Annotated[float, Field(ge=0)]


class OptimizerSection(_OmitsUnusedFields):
    """``type`` names a Keras optimizer; other keys are its arguments
    (``weight_decay``, ``clipnorm``, ``global_clipnorm``, ``use_ema``,
    ``gradient_accumulation_steps``, ...)."""

    model_config = ConfigDict(extra="allow")
    _omitted_when_default: ClassVar[tuple[str, ...]] = ("groups",)

    type: str = "adam"
    learning_rate: PositiveFloat = 1e-3
    schedule: Schedule | None = None
    groups: list[ParameterGroup] = Field(default_factory=list)
    """Per-variable learning-rate multipliers; each trainable variable falls in at most one group."""

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


# ------------------------------------------------------------------------ trainer


class ValidationPolicy(Section):
    every_epochs: PositiveInt | None = 1
    every_steps: PositiveInt | None = None
    steps: PositiveInt | None = None
    """Batches per validation; default: the whole validation split."""


class CheckpointPolicy(Section):
    """When to save and what to keep (see docs/checkpoints.md).

    The final state is always saved (``checkpoints/final/``). Saving at every
    epoch end is off by default: for small epochs it can cost more than the
    training itself; a save every 60 seconds bounds the work a kill can lose.
    """

    every_steps: PositiveInt | None = None
    every_seconds: PositiveFloat | None = 60.0
    every_epoch: StrictBool = False
    keep: PositiveInt = 3
    """How many of the most recent checkpoints to keep."""
    monitor: str | None = "auto"
    """Keep the best checkpoint by this metric (``val_loss``, ``val_accuracy``,
    ``loss``, ...) in ``checkpoints/best/``, apart from the last ``keep``.
    ``auto`` (the default): ``val_loss`` when the data has a validation split, as
    Keras's ``ModelCheckpoint`` monitors by default; else none. ``null``: none."""
    mode: Literal["auto", "min", "max"] = "auto"
    """Whether a smaller or a larger ``monitor`` is better; ``auto``: larger for
    accuracy-like names (acc, auc, precision, recall, f1, iou), else smaller."""


class Stage(Section):
    """One stage of a fine-tuning run, with its own budget."""

    epochs: PositiveInt
    unfreeze: Literal["all"] | list[Pattern] | None = None
    """At the stage's start: ``all`` layers trainable again, or those matching these regexes."""
    learning_rate: PositiveFloat | None = None
    """The optimizer's learning rate from this stage on (a schedule still multiplies it)."""


class TrainerSection(Section, _OmitsUnusedFields):
    _omitted_when_default: ClassVar[tuple[str, ...]] = ("stages",)

    epochs: PositiveInt | None = None
    steps: PositiveInt | None = None
    """The budget: training stops at whichever of ``epochs`` and ``steps`` comes first."""
    steps_per_execution: PositiveInt | Literal["auto"] = "auto"
    """Training steps run per ``tf.function`` call; ``auto`` picks from a timing probe."""
    log_every_steps: PositiveInt = 50
    validation: ValidationPolicy | Literal["sidecar"] = Field(default_factory=ValidationPolicy)
    """When to validate in the training loop. ``sidecar``: the cluster's ``evaluator``
    task validates each checkpoint instead (``trainkit launch --evaluator``,
    docs/distributed.md), so the workers never wait for it; without an evaluator
    task, the default in-loop validation (every epoch)."""
    checkpoint: CheckpointPolicy = Field(default_factory=CheckpointPolicy)
    callbacks: list[Component] = Field(default_factory=list)
    """Keras callbacks by name, e.g. ``{type: EarlyStopping, monitor: val_loss, patience: 3}``."""
    nan_policy: Literal["stop", "rollback"] = "stop"
    """On a NaN or infinite training loss or weight: ``stop`` (exit code 3, the last good
    checkpoint kept), or ``rollback`` to the last good checkpoint, skipping the
    batches read since it, at most ``nan_max_retries`` times in a run."""
    nan_max_retries: NonNegativeInt = 3
    evaluate: list[Literal["train", "validation", "test"]] = ["validation", "test"]
    """Splits evaluated when training ends (written to ``eval.json``)."""
    progress: StrictBool = True
    profile_steps: list[NonNegativeInt] | None = None
    """``[first, last]``: write a TensorBoard profile of these steps to ``tensorboard/plugins/profile``."""
    measure_input: StrictBool = True
    """Report how much of training waited for input (timed inside the training
    loop, every step), at the end and in run.json, with the likely fix when input
    is the bottleneck."""

    stages: list[Stage] | None = None
    """Fine-tuning stages run one after another; they replace ``epochs``."""

    @model_validator(mode="after")
    def _has_budget(self) -> TrainerSection:
        if self.stages is not None:
            if not self.stages:
                raise ValueError("stages: give at least one stage, or leave stages out")
            if self.epochs is not None:
                raise ValueError("set trainer.stages or trainer.epochs, not both (each stage has its own epochs)")
            if self.stages[0].unfreeze is not None:
                raise ValueError("stages.0.unfreeze: the first stage trains what model.freeze leaves; unfreeze from stage 2 on")
        elif self.epochs is None and self.steps is None:
            raise ValueError("set a training budget: trainer.epochs and/or trainer.steps")
        if self.profile_steps is not None and (
            len(self.profile_steps) != 2 or self.profile_steps[0] >= self.profile_steps[1]
        ):
            raise ValueError(f"profile_steps must be [first, last] with first < last, got {self.profile_steps}")
        return self


class RuntimeSection(Section):
    """Where and how a recipe runs. Changing it never changes what is computed:
    the batch size is global, so the same recipe gives the same training on one
    device, several GPUs, several workers or a TPU (docs/distributed.md)."""

    strategy: Literal[
        "auto", "one_device", "mirrored", "multi_worker_mirrored", "parameter_server", "tpu"
    ] = "auto"
    """``auto``: a configured TPU (``runtime.tpu`` or local TPU devices), else all
    GPUs mirrored if there are several, else one device. The cluster of
    ``multi_worker_mirrored`` and ``parameter_server`` comes from ``TF_CONFIG``
    (``trainkit launch`` sets it for local workers)."""
    cpu_devices: PositiveInt | None = None
    """Split the CPU into this many logical devices (for ``mirrored`` without GPUs)."""
    deterministic: StrictBool = False
    """Deterministic ops and seeded everything: the same recipe gives the same weights."""
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"
    jit_compile: StrictBool = False
    communication: Literal["auto", "ring", "nccl"] = "auto"
    """Cross-worker all-reduce of ``multi_worker_mirrored``: ``nccl`` needs GPUs."""
    tpu: str | None = None
    """The TPU of ``strategy: tpu``: a Cloud TPU name, ``grpc://HOST:PORT``, or
    ``local`` (a TPU VM's own chips); unset means ``local``."""
    scale_learning_rate: Literal["none", "linear"] = "none"
    """``linear``: the learning rate is ``optimizer.learning_rate * data.batch_size
    / reference_batch_size`` (Goyal et al., 2017), so a recipe tuned at one global
    batch keeps its behaviour when the batch grows with the hardware."""
    reference_batch_size: PositiveInt | None = None
    """The global batch size ``optimizer.learning_rate`` was tuned for (for ``linear``)."""

    @model_validator(mode="after")
    def _scaling_has_reference(self) -> RuntimeSection:
        if self.scale_learning_rate == "linear" and self.reference_batch_size is None:
            raise ValueError(
                "scale_learning_rate: linear needs runtime.reference_batch_size "
                "(the global batch size the learning rate was tuned for)"
            )
        return self


ExportFormat = Literal["keras", "saved_model", "tflite", "onnx"]


class ExportSection(Section):
    """What the end of training exports into the run directory: the inference
    model (the fitted preprocessing as Keras layers, then the trained model), which
    takes features as the data source gives them."""

    formats: list[ExportFormat] = ["keras"]
    """``keras`` (model.keras), ``saved_model`` (saved_model/, ``serving_default``),
    ``tflite`` (model.tflite, LiteRT) and/or ``onnx`` (model.onnx)."""
    quantize: Literal["none", "dynamic_range"] = "none"
    """LiteRT only: ``dynamic_range`` stores weights as int8 (smaller file)."""


#: Why an export format cannot take raw strings (a run with ``data.text``): measured
#: with TF 2.21, tf2onnx 1.17 and ai-edge-litert.
NO_STRING_INPUTS = {
    "tflite": (
        "LiteRT converts the text tokenizer only as TensorFlow ops (Select TF ops: StringLower, RegexReplace, "
        "a lookup table), and the ai-edge-litert interpreter cannot run them (it has no Flex delegate)"
    ),
    "onnx": "ONNX has no string ops for the text tokenizer, so an ONNX model cannot take raw strings",
}

#: Why an export format cannot take a model of the ``rnn`` builder (Keras 3's recurrent
#: layers run a while loop over a TensorList): measured with TF 2.21, tf2onnx 1.17 and ai-edge-litert.
NO_RECURRENT = {
    "tflite": (
        "the LiteRT converter cannot lower the recurrent loop of Keras 3's LSTM and GRU layers (a TensorList of "
        "dynamic shape), and converted with a fixed batch the interpreter fails on the loop's variables"
    ),
    "onnx": "tf2onnx leaves the recurrent loop of Keras 3's LSTM and GRU layers as TensorFlow ops (TensorListReserve) that onnxruntime cannot load",
}


# ------------------------------------------------------------------------- recipe


class MlflowTracking(Section):
    """Where a run is mirrored in MLflow (docs/distributed.md, "Tracking in MLflow")."""

    uri: str | None = None
    """A tracking URI (``http://host:5000``, ``sqlite:///path/mlflow.db``); default:
    ``MLFLOW_TRACKING_URI`` when set, else a SQLite store in ``mlruns/`` beside the
    run directory (``runs/mlruns``), which ``mlflow ui`` opens from that folder."""
    experiment: str | None = None
    """The MLflow experiment; default: the recipe's name."""


class TrackingSection(Section):
    """Experiment tracking: a run's parameters, metrics and artifacts mirrored
    elsewhere. Tracking never fails a training: an unreachable tracker warns once."""

    mlflow: MlflowTracking | None = None


#: What a recipe or sweep name may be: a name, never a path (it names a folder under runs/).
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


class Recipe(Section, _OmitsUnusedFields):
    """One experiment. Build it with :func:`trainkit.load_recipe` or directly."""

    _omitted_when_default: ClassVar[tuple[str, ...]] = ("tracking",)

    name: str
    """A name, not a path: letters, digits, ``_``, ``-`` and ``.``, not starting
    with ``.`` or ``-`` (``..`` would put the run outside ``runs/``)."""
    description: str = ""
    seed: Seed = 0
    data: DataSection
    model: ModelSection
    loss: Component
    metrics: list[Component] = Field(default_factory=list)
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    trainer: TrainerSection
    runtime: RuntimeSection = Field(default_factory=RuntimeSection)
    export: ExportSection = Field(default_factory=ExportSection)
    tracking: TrackingSection | None = None

    @model_validator(mode="after")
    def _token_ids_for_sequence_models(self) -> Recipe:
        """``rnn`` and ``transformer`` embed token ids: a multi-hot or TF-IDF vector would be
        read as ids (silently meaningless, or an index error at the first step)."""
        mode = getattr(self.data.text, "output_mode", "int")
        if self.model.type in ("rnn", "transformer") and mode != "int":
            raise ValueError(
                f"data.text.output_mode: {mode} gives one value per vocabulary entry, and the {self.model.type} builder "
                "takes token ids; use output_mode: int, or an mlp for a bag of words"
            )
        return self

    @model_validator(mode="after")
    def _text_exports(self) -> Recipe:
        for name in self.export.formats:
            if self.data.text is not None and self.data.text.type != "none" and name in NO_STRING_INPUTS:
                raise ValueError(
                    f"export.formats: {name} cannot take the raw text this run's exports take: {NO_STRING_INPUTS[name]}; "
                    "export keras and/or saved_model"
                )
            if self.model.type == "rnn" and name in NO_RECURRENT:
                raise ValueError(
                    f"export.formats: {name} cannot take the recurrent model of the rnn builder: {NO_RECURRENT[name]}; "
                    "export keras and/or saved_model (or use the transformer builder)"
                )
        return self

    @field_validator("name")
    @classmethod
    def _a_name_not_a_path(cls, value: str) -> str:
        if not NAME_PATTERN.fullmatch(value):
            raise ValueError(
                "a recipe name is a name, not a path: 1 to 100 letters, digits, '_', '-' or '.', "
                "starting with a letter, digit or '_'"
            )
        return value

    # The Python recipe file this came from (its registered components are
    # needed again to evaluate a run); not part of the recipe's identity.
    _source: str | None = PrivateAttr(default=None)
    # The config layer this recipe was last varied by, when that layer left
    # ``name`` alone: its run gets its own default directory (see run_name).
    _config_name: str | None = PrivateAttr(default=None)
    # Where each key was set ("model.units" -> a file, or an override), for messages.
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    def origin_of(self, key: str) -> str | None:
        """The file or override that set ``key`` (or the nearest section above it), if known."""
        parts = key.split(".")
        for n in range(len(parts), 0, -1):
            found = self._origins.get(".".join(parts[:n]))
            if found:
                return found
        return None

    @property
    def run_name(self) -> str:
        """The default run directory's name: the last config layer's name (a variant
        of a recipe is a different run), unless a layer or an override set ``name``."""
        return self._config_name or self.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Recipe) and self.to_dict() == other.to_dict()

    __hash__ = None  # mutable: use .hash for a digest

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible data: what ``to_yaml`` prints and ``hash`` digests."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    @classmethod
    def from_yaml(cls, text: str) -> Recipe:
        return cls.model_validate(yaml.safe_load(text))

    @property
    def hash(self) -> str:
        """A stable digest of everything in the recipe (12 hex digits).

        A run's identity adds the digests of its pretrained weights: :class:`RunIdentity`."""
        return _digest(self.to_dict())


def _digest(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RunIdentity:
    """What makes a run this run: its recipe and the pretrained weights it started from.

    A value beside the recipe, never inside it: building a recipe leaves
    ``recipe.hash`` alone. :attr:`hash` is the one identity a run shows, in the
    training header, ``run.json``, ``export.json`` and ``Run.hash``; without
    pretrained sources it is the recipe's own hash (``trainkit show``).
    """

    recipe_hash: str
    hash: str
    source_digests: tuple[tuple[str, str], ...] = ()
    """``(field, digest)`` of each pretrained source (``model.source``, ``model.init.source``)."""

    @classmethod
    def of(cls, recipe: Recipe, source_digests: dict[str, str] | None = None) -> RunIdentity:
        digests = dict(sorted((source_digests or {}).items()))
        if not digests:
            return cls(recipe.hash, recipe.hash)
        return cls(recipe.hash, _digest({**recipe.to_dict(), "source_digests": digests}), tuple(digests.items()))

    def with_recorded(self, recipe: Recipe, recorded: dict[str, str]) -> RunIdentity:
        """This identity with the digests a continued run recorded for sources it no longer reads."""
        digests = {**recorded, **dict(self.source_digests)}
        return RunIdentity.of(recipe, digests)


#: Keys whose change leaves a run the same run: resuming with them changed is allowed.
RESUMABLE_KEYS = (
    "description",
    "trainer.epochs",
    "trainer.steps",
    "trainer.log_every_steps",
    "trainer.validation",
    "trainer.checkpoint",
    "trainer.callbacks",
    "trainer.evaluate",
    "trainer.progress",
    "trainer.steps_per_execution",
    "trainer.profile_steps",
    "trainer.measure_input",
    "trainer.nan_policy",
    "trainer.nan_max_retries",
    "data.eval_batch_size",
    "export",
    "tracking",
    # Where a run runs, not what it computes: a run started on 2 workers may
    # resume on 1 GPU (the batch size is global). Learning-rate scaling is not here.
    "runtime.strategy",
    "runtime.cpu_devices",
    "runtime.communication",
    "runtime.tpu",
)


def diff(a: Recipe, b: Recipe) -> list[str]:
    """Dotted paths of the leaves that differ between two recipes."""
    out: list[str] = []

    def walk(x: Any, y: Any, path: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for key in sorted(set(x) | set(y)):
                walk(x.get(key), y.get(key), f"{path}.{key}" if path else key)
        elif x != y:
            out.append(path)

    walk(a.to_dict(), b.to_dict(), "")
    return out


def is_resumable_change(path: str) -> bool:
    return any(path == key or path.startswith(key + ".") for key in RESUMABLE_KEYS)
