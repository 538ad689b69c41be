"""The command line every benchmark shares: its help, numbers checked before anything
runs or is written, and a bad recipe setting said in one line.

A benchmark's option of 0 repeats or a negative step count used to run, crash in
its report and leave an empty results file behind; here argparse refuses it first
(exit 2, one line), as trainkit's own commands do.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser whose description is the module docstring's first paragraph, whole."""
    first = (doc or "").strip().split("\n\n")[0]
    return argparse.ArgumentParser(description=" ".join(first.split()))


def count(text: str) -> int:
    """A whole number, 1 or more (repeats, steps, examples, a batch size)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give a whole number, 1 or more, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"give a whole number, 1 or more, got {value}")
    return value


def seconds(text: str) -> float:
    """A finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"give a number of seconds above 0, got {text!r}")
    return value


def run(main: Callable[[], object]) -> None:
    """``main()``, with trainkit's bad-input errors (a misspelt override, an unknown
    recipe) printed as their one line and exit 2, not a traceback."""
    from trainkit.errors import ConfigError

    try:
        main()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
