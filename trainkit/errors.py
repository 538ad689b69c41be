"""Errors a user can act on.

Every mistake in a recipe, a config file, an override or the data it names is
raised as a :class:`ConfigError` with one line that names the field, where it was
set, and what would be valid. The CLI prints that line and exits with code 2;
the Python API lets it propagate so notebooks show it too.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

USAGE_EXIT_CODE = 2


class TrainkitError(Exception):
    """Base class of trainkit's own errors."""


class ConfigError(TrainkitError, ValueError):
    """A recipe, config, override or dataset that cannot be used as given."""

    exit_code = USAGE_EXIT_CODE


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
