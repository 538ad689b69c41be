"""Calling a registered model builder with its arguments checked."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, ValidationError, create_model

from trainkit import registry
from trainkit.components import check_arguments
from trainkit.data.pipeline import DataInfo
from trainkit.errors import ConfigError, TrainkitError, user_code_error
from trainkit.recipe import ModelSection

# Filled in by trainkit from the data, never written in a recipe.
CONTEXT_ARGUMENTS = ("input_shape", "num_outputs", "num_classes", "task")


def _context(info: DataInfo) -> dict[str, Any]:
    return {
        "input_shape": tuple(info.feature_shape),
        "num_outputs": info.num_outputs,
        "num_classes": info.num_classes,
        "task": info.task,
    }


def check_builder_arguments(section: ModelSection) -> None:
    """Names and types of a builder's arguments, checked against its signature."""
    import trainkit.models.builders  # noqa: F401  (registers the built-in builders)
    import trainkit.models.pretrained  # noqa: F401  (registers 'pretrained')

    builder = registry.models.get(section.type, field="model.type")
    kwargs = section.kwargs
    check_arguments(builder, kwargs, field="model", label=f"builder '{section.type}'", provided=CONTEXT_ARGUMENTS)
    fields = {}
    for param in inspect.signature(builder).parameters.values():
        if param.name in CONTEXT_ARGUMENTS or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        annotation = Any if param.annotation is inspect.Parameter.empty else param.annotation
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    schema = create_model(
        f"{section.type}_arguments",
        __config__=ConfigDict(arbitrary_types_allowed=True),
        __module__=builder.__module__,
        **fields,
    )
    try:
        schema.model_validate(kwargs)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        if first["type"] == "missing":
            raise ConfigError(f"model.{where}: builder '{section.type}' needs this argument") from None
        raise ConfigError(f"model.{where}: {first['msg']}, got {first.get('input')!r}") from None
    except (NameError, TypeError):  # annotations pydantic cannot use: skip type checks
        pass


def build_model(section: ModelSection, info: DataInfo):
    """The ``keras.Model`` a recipe's ``model`` section describes, for this data."""
    return build_with_sources(section, info)[0]


def build_with_sources(
    section: ModelSection, info: DataInfo, *, stored_source: Path | None = None, runs: Mapping[str, Any] | None = None
) -> tuple[Any, list]:
    """The model, and the pretrained sources (:class:`~trainkit.models.pretrained.SourceUse`) it came from.

    ``stored_source``: a run's copy of its ``model.source``, used when the source is gone.
    ``runs``: the models of sources that are run directories, restored by the plan.
    """
    check_builder_arguments(section)
    if section.type == "pretrained":
        from trainkit.models import pretrained

        kwargs = dict(section.kwargs)
        kwargs["source_checkpoint"] = str(kwargs.get("source_checkpoint", "final"))
        model, use = pretrained.build(
            **{"head": "keep", "cut_at": None, "output_activation": "auto", **kwargs},
            task=info.task, num_outputs=info.num_outputs, stored=stored_source, runs=runs,
            input_shape=info.feature_shape if isinstance(info.feature_shape, dict) else tuple(info.feature_shape),
        )
        return model, [use]
    builder = registry.models.get(section.type, field="model.type")
    wanted = inspect.signature(builder).parameters
    context = {k: v for k, v in _context(info).items() if k in wanted}
    import keras
    import tensorflow as tf

    try:
        model = builder(**context, **section.kwargs)
    except TrainkitError:
        raise
    except (tf.errors.ResourceExhaustedError, MemoryError) as err:
        shape = _oom_shape(err)
        raise ConfigError(
            f"model: builder '{section.type}' made a model too large for this machine's memory"
            f"{f' (a weight of shape {shape})' if shape else ''}; make it smaller"
        ) from None
    except Exception as err:  # a builder is user code: any failure is one line, exit 2
        raise user_code_error(err, f"model: builder '{section.type}'") from None

    if not isinstance(model, keras.Model):
        raise ConfigError(f"model: builder '{section.type}' must return a keras.Model, got {type(model).__name__}")
    check_fits_in_memory(model, field="model")
    return model, []


#: Bytes per parameter while training: the weight, its gradient and two optimizer
#: slots (Adam's moments), in float32. Activations come on top.
TRAINING_BYTES_PER_PARAMETER = 4 * 4


def check_fits_in_memory(model, *, field: str, available: int | None = None) -> None:
    """Refuse a model whose parameters alone could not be trained in the memory there is."""
    parameters = int(model.count_params())
    needed = parameters * TRAINING_BYTES_PER_PARAMETER
    available = available_memory() if available is None else available
    if available and needed > available:
        raise ConfigError(
            f"{field}: {parameters:,} parameters need about {_gib(needed)} to train (weights, gradients, "
            f"optimizer state), more than the {_gib(available)} of memory available; make the model smaller"
        )


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


def _oom_shape(err: BaseException) -> str:
    import re

    match = re.search(r"tensor with shape\s*(\[[0-9, ]+\])", str(err))
    return match.group(1) if match else ""
