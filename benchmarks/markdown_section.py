"""Replacing one benchmark's section of BENCHMARKS.md, between its two markers."""

from __future__ import annotations

from pathlib import Path

REPORT = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def replace_section(begin: str, end: str, section: str, report: Path = REPORT) -> None:
    """Put ``section`` (which starts with ``begin`` and ends with ``end``) in place of the
    old one in ``report``; append it when the report has none yet. Everything else stays."""
    old = report.read_text() if report.exists() else "# Benchmarks\n"
    if begin in old and end in old:
        new = old[: old.index(begin)] + section + old[old.index(end) + len(end) :]
    else:
        new = old.rstrip("\n") + "\n\n" + section + "\n"
    report.write_text(new)
