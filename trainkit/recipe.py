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
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    model_validator,
)

NonNegativeInt = Annotated[int, Field(ge=0)]


class Section(BaseModel):
    """A strict recipe section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


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


Source = Annotated[SklearnSource | ArraysSource, Field(discriminator="type")]


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


class DataSection(Section):
    source: Source
    splits: SplitFractions = Field(default_factory=SplitFractions)
    split_seed: int = 0
    batch_size: PositiveInt = 32
    """The global batch size: split across replicas under a distribution strategy."""
    eval_batch_size: PositiveInt | None = None
    shuffle_buffer: NonNegativeInt = 10_000
    """0 turns shuffling off. In-memory sources are always shuffled fully (an
    index permutation per epoch); streaming sources use a buffer of this size."""
    scale: Literal["none", "standard", "minmax"] = "none"
    """Feature scaling, fitted on the training split only."""
    feature_shape: list[PositiveInt] | None = None
    """Reshape each example's features, e.g. ``[8, 8, 1]`` for the 8x8 digits."""
    cache: bool = True
    drop_remainder: bool = False
    prefetch: bool = True


# -------------------------------------------------------------------------- model


class ModelSection(BaseModel):
    """``type`` names a model builder (``sequential``, ``functional``, ``mlp``, ``cnn``
    or one a recipe registers); the other keys are that builder's arguments."""

    model_config = ConfigDict(extra="allow")

    type: str

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
    staircase: bool = False


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


class OptimizerSection(BaseModel):
    """``type`` names a Keras optimizer; other keys are its arguments
    (``weight_decay``, ``clipnorm``, ``global_clipnorm``, ``use_ema``,
    ``gradient_accumulation_steps``, ...)."""

    model_config = ConfigDict(extra="allow")

    type: str = "adam"
    learning_rate: PositiveFloat = 1e-3
    schedule: Schedule | None = None

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
    """When to save; the final state is always saved. Saving at every epoch end
    is off by default: for small epochs it can cost more than the training."""

    every_steps: PositiveInt | None = None
    every_seconds: PositiveFloat | None = 60.0
    every_epoch: bool = False
    keep: PositiveInt = 3
    """How many of the most recent checkpoints to keep."""


class TrainerSection(Section):
    epochs: PositiveInt | None = None
    steps: PositiveInt | None = None
    """The budget: training stops at whichever of ``epochs`` and ``steps`` comes first."""
    steps_per_execution: PositiveInt | Literal["auto"] = "auto"
    """Training steps run per ``tf.function`` call; ``auto`` picks from a timing probe."""
    log_every_steps: PositiveInt = 50
    validation: ValidationPolicy = Field(default_factory=ValidationPolicy)
    checkpoint: CheckpointPolicy = Field(default_factory=CheckpointPolicy)
    callbacks: list[Component] = Field(default_factory=list)
    """Keras callbacks by name, e.g. ``{type: EarlyStopping, monitor: val_loss, patience: 3}``."""
    evaluate: list[Literal["train", "validation", "test"]] = ["validation", "test"]
    """Splits evaluated when training ends (written to ``eval.json``)."""
    progress: bool = True

    @model_validator(mode="after")
    def _has_budget(self) -> TrainerSection:
        if self.epochs is None and self.steps is None:
            raise ValueError("set a training budget: trainer.epochs and/or trainer.steps")
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
    deterministic: bool = False
    """Deterministic ops and seeded everything: the same recipe gives the same weights."""
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"
    jit_compile: bool = False
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


class ExportSection(Section):
    formats: list[Literal["keras", "saved_model"]] = ["keras"]


# ------------------------------------------------------------------------- recipe


class Recipe(Section):
    """One experiment. Build it with :func:`trainkit.load_recipe` or directly."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    description: str = ""
    seed: int = 0
    data: DataSection
    model: ModelSection
    loss: Component
    metrics: list[Component] = Field(default_factory=list)
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    trainer: TrainerSection
    runtime: RuntimeSection = Field(default_factory=RuntimeSection)
    export: ExportSection = Field(default_factory=ExportSection)

    # The Python recipe file this came from (its registered components are
    # needed again to evaluate a run); not part of the recipe's identity.
    _source: str | None = PrivateAttr(default=None)

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
        """A stable digest of everything in the recipe (12 hex digits)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


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
    "data.eval_batch_size",
    "export",
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
