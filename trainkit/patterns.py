"""User regular expressions (``model.freeze``, ``optimizer.groups.*.match``, a stage's
``unfreeze``, ``model.init.skip``), bounded.

A recipe is data that may come from someone else, and a backtracking regex can take
exponential time on a short name (``(a+)+$``). Patterns are limited in length and
matched with the ``regex`` module's timeout, so a hostile one is one line, at once.
"""

from __future__ import annotations

from typing import Any

import regex

from trainkit.errors import ConfigError

MAX_PATTERN_LENGTH = 200
"""Layer names and variable paths are short; a pattern over this is a mistake or an attack."""
MATCH_SECONDS = 0.25
"""Time one pattern may take on one name (an ordinary pattern takes microseconds)."""


def _shown(pattern: str) -> str:
    text = pattern if pattern.isprintable() else pattern.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 60 else f"{text[:60]}..."


def check_pattern(pattern: str, field: str) -> str:
    """``pattern`` if it is a usable regular expression, else a ConfigError naming ``field``."""
    compile_pattern(pattern, field)
    return pattern


def compile_pattern(pattern: str, field: str) -> Any:
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ConfigError(
            f"{field}: a regular expression of {len(pattern):,} characters; at most {MAX_PATTERN_LENGTH} ('{_shown(pattern)}')"
        )
    try:
        return regex.compile(pattern, regex.VERSION0)
    except (regex.error, ValueError, OverflowError, RecursionError) as err:
        raise ConfigError(f"{field}: '{_shown(pattern)}' is not a valid regular expression: {err}") from None


def search(compiled: Any, text: str, field: str) -> bool:
    """Whether ``compiled`` finds something in ``text``, within :data:`MATCH_SECONDS`."""
    try:
        return compiled.search(text, timeout=MATCH_SECONDS) is not None
    except TimeoutError:
        raise ConfigError(
            f"{field}: '{_shown(compiled.pattern)}' took over {MATCH_SECONDS} s to match the name '{text[:80]}' "
            "(catastrophic backtracking, e.g. (a+)+); simplify the regular expression"
        ) from None
