"""A sweep file: a recipe plus a search space, read and checked before any trial runs.

::

    base: digits_mlp
    metric: val_accuracy        # direction: max, or min for loss-like names
    trials: 20
    sampler: tpe                # tpe | random | grid | cmaes
    pruner: median              # median | hyperband | none
    space:
      optimizer.learning_rate: {loguniform: [1.0e-4, 1.0e-1]}
      model.hidden_units: {choice: [[64], [128, 64]]}
      model.dropout: {uniform: [0.0, 0.5]}
      data.batch_size: {choice: [32, 64, 128]}

Every key of ``space`` is a recipe path. Before the first trial each one is
tried against the recipe schema (and the model builder's and optimizer's
arguments) at both ends of its range and with every choice, so an unknown path,
a range of the wrong type or a refused choice is one line naming the sweep
file and the key, and nothing is written.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trainkit.errors import ConfigError, did_you_mean
from trainkit.loader import parse_yaml, search_roots
from trainkit.recipe import Recipe

KINDS = ("loguniform", "uniform", "int", "choice")
#: Metric names whose smaller values are better (the direction is inferred from them).
_LOSS_LIKE = re.compile(r"(^|_)(loss|error|mse|mae|mape|msle|rmse|crossentropy|hinge|perplexity)s?$")


#: The most trials one sweep queues: each is a journal entry and a run directory.
MAX_TRIALS = 100_000


class SweepFile(BaseModel):
    """The sweep file's schema (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    base: Annotated[str, Field(min_length=1)]
    """The recipe (a name in recipes/ or configs/, or a file) every trial starts from."""
    configs: list[str] = Field(default_factory=list)
    """YAML configs layered on ``base`` for every trial."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    """Fixed settings of every trial, by dotted path (``trainer.epochs: 2``)."""
    name: str | None = None
    """The study's name and default directory (``runs/sweeps/NAME``); default: the file's name."""

    @field_validator("name")
    @classmethod
    def _a_name_not_a_path(cls, value: str | None) -> str | None:
        from trainkit.recipe import NAME_PATTERN

        if value is not None and not NAME_PATTERN.fullmatch(value):  # (a downloaded sweep file never picks where it writes)
            raise ValueError(
                "a sweep name is a name, not a path: 1 to 100 letters, digits, '_', '-' or '.', starting with a letter, digit or '_'"
            )
        return value
    description: str = ""
    metric: Annotated[str, Field(min_length=1)]
    direction: Literal["max", "min"] | None = None
    """Default: ``min`` for loss-like names (loss, error, mse, ...), else ``max``."""
    trials: Annotated[int, Field(gt=0, le=MAX_TRIALS)] = 20
    sampler: Literal["tpe", "random", "grid", "cmaes"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    """The sampler's seed: the same sweep on the same storage proposes the same parameters."""
    space: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Dimension:
    """One searched recipe field: ``kind`` over ``low``..``high``, or one of ``choices``."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple = ()

    @property
    def labels(self) -> list:
        """The choices as Optuna stores them: scalars as they are, lists and mappings as JSON text."""
        return [c if c is None or isinstance(c, str | int | float | bool) else json.dumps(c) for c in self.choices]

    def suggest(self, trial) -> Any:
        """This dimension's value for an Optuna trial (the stored one for a resumed trial)."""
        if self.kind == "choice":
            label = trial.suggest_categorical(self.key, self.labels)
            return self.choices[self.labels.index(label)]
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high)
        return trial.suggest_float(self.key, self.low, self.high, log=self.kind == "loguniform")

    def value_of(self, stored: Any) -> Any:
        """The recipe value of an Optuna parameter value."""
        if self.kind == "choice":
            return self.choices[self.labels.index(stored)]
        return stored

    def grid(self) -> list:
        if self.kind == "choice":
            return self.labels
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1))
        raise ConfigError(f"space.{self.key}: sampler grid needs choice or int, not {self.kind} (a grid is finite)")

    def probes(self) -> list:
        """Values that show whether the recipe takes this dimension: both ends, a fractional point, every choice."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return [self.low, self.high]
        inside = self.low * (self.high / self.low) ** 0.37 if self.kind == "loguniform" else self.low + 0.37 * (self.high - self.low)
        return [self.low, self.high, inside]


@dataclass
class Sweep:
    """A sweep file read and checked: what every trial starts from and what it varies."""

    name: str
    source: str
    spec: SweepFile
    dimensions: list[Dimension]
    cli_overrides: dict[str, Any]

    @property
    def direction(self) -> str:
        return self.spec.direction or ("min" if _LOSS_LIKE.search(self.spec.metric) else "max")

    @property
    def fixed(self) -> dict[str, Any]:
        """Settings of every trial: the file's ``overrides`` then the command line's."""
        return {**self.spec.overrides, **self.cli_overrides}

    def recipe(self, params: dict[str, Any]) -> Recipe:
        """The recipe of one trial: base, configs, fixed settings, then ``params`` (recipe values)."""
        from trainkit.loader import load_recipe

        return load_recipe(self.spec.base, configs=self.spec.configs, overrides={**self.fixed, **params})

    def recipe_values(self, optuna_params: dict[str, Any]) -> dict[str, Any]:
        """Recipe values of a trial's Optuna parameters."""
        by_key = {d.key: d for d in self.dimensions}
        return {key: by_key[key].value_of(value) for key, value in optuna_params.items() if key in by_key}


def sweep_roots() -> list[Path]:
    return [root / sub for root in search_roots() for sub in ("sweeps", "configs")]


def find_sweep(name_or_path: str | os.PathLike) -> Path:
    """The file a SWEEP argument names: a path, or a name in sweeps/ or configs/."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or os.sep in text:
        if path.is_file():
            return path
        raise ConfigError(f"sweep file not found: {text}")
    known = {p.stem: p for root in sweep_roots() for p in sorted(root.glob("*.y*ml")) if _is_sweep_file(p)}
    if text in known:
        return known[text]
    raise ConfigError(f"no sweep named '{text}' in sweeps/ or configs/; {did_you_mean(text, known)}")


def _is_sweep_file(path: Path) -> bool:
    try:
        head = path.read_text(encoding="utf-8")[:20_000]
    except (OSError, UnicodeDecodeError):
        return False
    return bool(re.search(r"^space\s*:", head, re.MULTILINE))


def load_sweep(name_or_path: str | os.PathLike, overrides: dict[str, Any] | list[str] | None = None) -> Sweep:
    """Read a sweep file, apply ``overrides`` (``KEY=VALUE``) to every trial, check the space.

    Raises :class:`~trainkit.errors.ConfigError` (one line) for anything invalid;
    nothing is written.
    """
    path = find_sweep(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from None
    data = parse_yaml(text, source=str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a sweep file is a mapping (base, metric, space, ...)")
    try:
        spec = SweepFile.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{path}: {_explain(err)}") from None
    both = [key for key in spec.overrides if key in spec.space]
    if both:
        raise ConfigError(f"{path}: {both[0]} is both fixed (overrides:) and searched (space:); keep one of them")
    if not spec.space:
        raise ConfigError(f"{path}: space: is empty; name at least one recipe key to search, for example optimizer.learning_rate: {{loguniform: [0.0001, 0.01]}}")
    fixed = _as_mapping(overrides)  # a searched key set on the command line is fixed: it leaves the search
    searched = {key: value for key, value in spec.space.items() if key not in fixed}
    if not searched:
        raise ConfigError(f"{path}: the command line fixes every searched key ({', '.join(spec.space)}); nothing is left to search")
    sweep = Sweep(
        name=spec.name or path.stem,
        source=str(path),
        spec=spec,
        dimensions=[parse_dimension(key, value, source=str(path)) for key, value in searched.items()],
        cli_overrides=fixed,
    )
    check_space(sweep)
    return sweep


def _as_mapping(overrides: dict[str, Any] | list[str] | None) -> dict[str, Any]:
    if isinstance(overrides, dict):
        return dict(overrides)
    from trainkit.loader import parse_override

    return dict(parse_override(text) for text in overrides or ())


def _explain(err: ValidationError) -> str:
    first = err.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "sweep"
    if first["type"] == "extra_forbidden":
        return f"unknown key '{where}'; {did_you_mean(where, SweepFile.model_fields)}"
    if first["type"] == "missing":
        return f"{where}: required field is missing"
    got = first.get("input")
    shown = "" if isinstance(got, dict | list) else f", got {got!r}"
    return f"{where}: {first['msg']}{shown}"


def parse_dimension(key: str, spec: dict[str, Any], *, source: str) -> Dimension:
    """One ``space`` entry: ``{loguniform: [lo, hi]}``, ``{uniform: ...}``, ``{int: ...}`` or ``{choice: [...]}``."""
    where = f"{source}: space.{key}"
    if len(spec) != 1 or next(iter(spec)) not in KINDS:
        given = ", ".join(map(str, spec)) or "nothing"
        hint = did_you_mean(str(next(iter(spec))), KINDS) if len(spec) == 1 else f"valid: {', '.join(KINDS)}"
        raise ConfigError(f"{where}: give exactly one of {', '.join(KINDS)} (got {given}); {hint}")
    kind, value = next(iter(spec.items()))
    if kind == "choice":
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{where}: choice takes a non-empty list of values, got {value!r}")
        seen = [json.dumps(v, sort_keys=True, default=repr) for v in value]  # 1, 1.0 and true stay distinct
        twice = [seen[i] for i in range(len(seen)) if seen[i] in seen[:i]]
        if twice:
            raise ConfigError(f"{where}: choice lists {twice[0]} more than once; list each value once")
        return Dimension(key, kind, choices=tuple(value))
    if not isinstance(value, list) or len(value) != 2:
        raise ConfigError(f"{where}: {kind} takes [low, high], got {value!r}")
    low, high = value
    number = int if kind == "int" else (int, float)
    if not all(isinstance(v, number) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        wanted = "integers" if kind == "int" else "finite numbers"
        raise ConfigError(f"{where}: {kind} takes two {wanted} [low, high], got {value!r}")
    if low >= high:
        raise ConfigError(f"{where}: {kind} needs low < high, got {value!r}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: loguniform needs low > 0, got {value!r}")
    return Dimension(key, kind, low=low if kind == "int" else float(low), high=high if kind == "int" else float(high))


def check_space(sweep: Sweep) -> None:
    """Every dimension tried against the recipe: the schema, then the components' arguments.

    One probe per value at the ends of each range (and a fractional value,
    which an integer field refuses), and every choice, the other dimensions at
    the base recipe's values.
    """
    from trainkit.plan import check_components

    base = _tried(sweep, {}, label="the base recipe with the sweep's settings")
    check_components(base)
    for dimension in sweep.dimensions:
        if sweep.spec.sampler == "grid":
            try:
                dimension.grid()
            except ConfigError as err:
                raise ConfigError(f"{sweep.source}: {err}") from None
        for value in dimension.probes():
            recipe = _tried(sweep, {dimension.key: value}, dimension=dimension)
            try:
                check_components(recipe)
            except ConfigError as err:
                raise ConfigError(f"{sweep.source}: space.{dimension.key}: {dimension.kind} value {value!r}: {err}") from None


def _tried(sweep: Sweep, params: dict[str, Any], *, dimension: Dimension | None = None, label: str = "") -> Recipe:
    try:
        return sweep.recipe(params)
    except ConfigError as err:
        if dimension is None:
            raise ConfigError(f"{sweep.source}: {label}: {err}") from None
        value = params[dimension.key]
        raise ConfigError(f"{sweep.source}: space.{dimension.key}: {dimension.kind} value {value!r}: {err}") from None

