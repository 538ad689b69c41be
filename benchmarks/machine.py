"""What every benchmark records next to its figures: the load of the machine, the date,
the command; and the rule that a figure taken on a busy machine is not published as
comparable."""

from __future__ import annotations

import os
import statistics
import sys
import time

MAX_LOAD = 1.5
"""Above this one-minute load average a figure is marked "not comparable"."""


def load() -> float:
    """The one-minute load average now."""
    return os.getloadavg()[0]


def comparable(loads: list[float]) -> bool:
    return bool(loads) and max(loads) <= MAX_LOAD


def spread(values: list[float], fmt: str = ".2f") -> str:
    """``median (min..max)``."""
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}..{max(values):{fmt}})"


def ratio(value: float, loads: list[float], fmt: str = ".2f") -> str:
    """A ratio as published: the number, or "not comparable" when it was taken above MAX_LOAD."""
    if comparable(loads):
        return f"{value:{fmt}}x"
    return f"not comparable (load {max(loads):.1f} > {MAX_LOAD})"


def provenance(loads: list[float]) -> str:
    """One line saying where the figures come from: command, date (UTC), load."""
    command = "python " + " ".join(sys.argv)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    seen = f"{min(loads):.2f}..{max(loads):.2f}" if loads else "unknown"
    verdict = "" if comparable(loads) else f" **Taken above load {MAX_LOAD}: not comparable; rerun on an idle machine.**"
    return f"Command: `{command}`; {when}; one-minute load average during the runs {seen}.{verdict}"


def verdict(met: bool, loads: list[float]) -> str:
    """Whether a goal was met, or "not comparable" when the figure was taken above MAX_LOAD."""
    return ("yes" if met else "no") if comparable(loads) else "not comparable"
