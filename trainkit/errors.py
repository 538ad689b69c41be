"""Errors a user can act on.

Every mistake in a recipe, a config file, an override or the data it names is
raised as a :class:`ConfigError` with one line that names the field, where it was
set, and what would be valid. The CLI prints that line and exits with code 2;
the Python API lets it propagate so notebooks show it too.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from typing import Any

USAGE_EXIT_CODE = 2


class TrainkitError(Exception):
    """Base class of trainkit's own errors."""


class ConfigError(TrainkitError, ValueError):
    """A recipe, config, override or dataset that cannot be used as given; ``key``: the
    recipe key at fault, where one is (so that the layer that set it can be named)."""

    exit_code = USAGE_EXIT_CODE

    def __init__(self, message: str = "", *, key: str | None = None):
        super().__init__(message)
        self.key = key


class MissingExtra(TrainkitError):
    """An optional dependency is not installed: the message names the extra to install."""

    exit_code = USAGE_EXIT_CODE


class ExportError(TrainkitError):
    """A converter (LiteRT, tf2onnx) could not write a format of a trained model."""

    exit_code = 1


class RunDirError(TrainkitError):
    """A run directory that cannot be used: another recipe lives there, or it is locked."""

    exit_code = USAGE_EXIT_CODE


def did_you_mean(name: str, choices: Iterable[str], *, limit: int = 12) -> str:
    """A short hint: the closest valid name, else a list of valid names.

    >>> did_you_mean("Dnse", ["Dense", "Dropout"])
    "did you mean 'Dense'?"
    """
    choices = sorted(set(choices))
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    if close:
        return f"did you mean '{lowered[close[0]]}'?"
    shown = ", ".join(choices[:limit])
    more = f", ... ({len(choices)} in all)" if len(choices) > limit else ""
    return f"valid: {shown}{more}"


def as_list(value: Any, field: str) -> list:
    """A Python argument that takes several names as a list: one name alone is a list
    of one (``configs="digits_cnn_smoke"`` was read a character at a time)."""
    if value is None:
        return []
    if isinstance(value, str | os.PathLike):
        return [value]
    if isinstance(value, list | tuple):
        return list(value)
    raise ConfigError(f"{field}: give a list (or one item alone), got {type(value).__name__} {value!r}"[:300])


def first_line(err: BaseException, *, limit: int | None = None) -> str:
    """The first line of an exception's message (its type name when it has none),
    cut to ``limit`` characters when given.

    Keras wraps an error raised inside a layer's ``call`` in a message whose first
    line only names the layer ("Exception encountered when calling Resizing.call()."):
    the cause, the next line, is taken instead. TensorFlow's errors from a compiled
    function start "Graph execution error:", then the frames where the op was
    defined: the first reason after them is taken (see :func:`graph_error_reasons`).
    """
    lines = _message_lines(err)
    if len(lines) > 1 and lines[0].startswith("Exception encountered when calling"):
        line = f"{lines[0].split()[-1].removesuffix('.call().')}: {lines[1]}"
    elif lines and lines[0] == _GRAPH_ERROR:
        line = next(iter(_reasons(lines)), lines[0])
    else:
        line = lines[0] if lines else type(err).__name__
    return line[:limit] if limit else line


_GRAPH_ERROR = "Graph execution error:"


def graph_error_reasons(err: BaseException) -> list[str]:
    """The lines of a TensorFlow error that say what went wrong, without the header,
    the frames that defined the op and the ``[[{{node ...}}]]``/``[Op:...]`` tags."""
    return _reasons(_message_lines(err))


def _reasons(lines: list[str]) -> list[str]:
    reasons = [line for line in lines if not line.startswith(("File ", "[[", "Detected at node")) and line != _GRAPH_ERROR]
    reasons = [re.sub(r"\s*\[\[\{\{node.*$|\s*\[Op:.*$", "", line) for line in reasons]
    return [line for line in reasons if line]


def _message_lines(err: BaseException) -> list[str]:
    text = re.sub(r"\x1b\[[0-9;]*m", "", getattr(err, "message", None) or str(err)).strip()
    return [line.strip() for line in text.splitlines() if line.strip()]


def _is_download_failure(err: BaseException) -> bool:
    import urllib.error

    # keras.utils.get_file (keras.applications weights) raises a bare Exception
    # "URL fetch failure on URL: ..." whose cause is the URLError.
    return isinstance(err, urllib.error.URLError) or "URL fetch failure" in str(err)


def user_code_error(err: Exception, where: str) -> ConfigError:
    """One line for an exception raised inside user code (a model builder, a
    registered dataset or transform, a callback's constructor): ``where`` names
    the component and the recipe field, e.g. ``model: builder 'resnet'``.

    TypeError and ValueError are argument mistakes, shown as they are; any other
    exception is named by its type, since its message alone may not say what went
    wrong (``Exception: URL fetch failure ...``).
    """
    if isinstance(err, TypeError | ValueError):
        return ConfigError(f"{where} failed: {first_line(err)}")
    hint = ""
    if _is_download_failure(err):
        hint = (
            " (a download failed: trainkit runs offline; put the file on disk and point the recipe at it, "
            "e.g. weights=None or a local weights path)"
        )
    return ConfigError(f"{where} failed: {type(err).__name__}: {first_line(err)[:300]}{hint}")
