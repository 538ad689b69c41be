"""Instantiate registered components with their arguments checked first.

Every component a recipe names (a layer, loss, metric, optimizer, callback or
model builder) is built through :func:`instantiate`, so a misspelt or
mistyped argument gets the same one-line error everywhere::

    model.layers.2: Dense has no argument 'unit'; did you mean 'units'?
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from trainkit.errors import ConfigError, TrainkitError, did_you_mean, first_line, user_code_error

# Keyword arguments every Keras layer accepts through ``**kwargs``.
LAYER_BASE_KWARGS = ("name", "dtype", "trainable", "autocast", "input_shape", "input_dim", "batch_size", "activity_regularizer")


def accepted_arguments(target: Callable) -> tuple[set[str], bool]:
    """Names ``target`` accepts, and whether it takes arbitrary ``**kwargs``."""
    fn = target.__init__ if inspect.isclass(target) else target
    params = inspect.signature(fn).parameters.values()
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def check_arguments(
    target: Callable,
    kwargs: dict[str, Any],
    *,
    field: str,
    label: str,
    also_accepted: Iterable[str] = (),
    provided: Iterable[str] = (),
) -> None:
    """Raise a ConfigError for an argument ``target`` would not accept.

    ``provided`` are arguments trainkit fills in itself (a recipe may not set them).
    """
    names, _ = accepted_arguments(target)
    names |= set(also_accepted)
    provided = set(provided)
    defaults = _defaults(target)
    for key, value in kwargs.items():
        if key in provided:
            raise ConfigError(f"{field}: '{key}' is set by trainkit from the data; remove it", key=f"{field}.{key}")
        if key not in names:
            raise ConfigError(f"{field}: {label} has no argument '{key}'; {did_you_mean(key, names - provided)}", key=f"{field}.{key}")
        if key in defaults:
            _check_kind(value, defaults[key], field=f"{field}.{key}", label=label)


def _defaults(target: Callable) -> dict[str, Any]:
    fn = target.__init__ if inspect.isclass(target) else target
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


#: Numeric arguments that take text too (TensorBoard's ``profile_batch: "10,20"``).
_TEXT_ALSO = {"profile_batch": True}


def _check_kind(value: Any, default: Any, *, field: str, label: str) -> None:
    """Refuse a value of the wrong kind for an argument whose default shows its kind.

    Keras takes ``from_logits="abc"`` as true and ``patience="3"`` fails only
    mid-training; a boolean argument takes a boolean, a numeric one a number.
    (Other kinds are left to the component: many accept several.)
    """
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{field}: {label} takes true or false here, got {value!r}")
    elif isinstance(default, int | float) and not _TEXT_ALSO.get(field.rsplit(".", 1)[-1]):
        if isinstance(value, bool | str | dict):
            raise ConfigError(f"{field}: {label} takes a number here (default {default!r}), got {value!r}")


def instantiate(target: Callable, kwargs: dict[str, Any], *, field: str, label: str, also_accepted: Iterable[str] = ()) -> Any:
    """``target(**kwargs)`` after checking the names; errors become one ConfigError line."""
    check_arguments(target, kwargs, field=field, label=label, also_accepted=also_accepted)
    try:
        return target(**kwargs)
    except TrainkitError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{field}: {label}: {first_line(err)}") from None
    except Exception as err:  # user code (a registered class's constructor): still one line
        raise user_code_error(err, f"{field}: {label}") from None
