"""One thing in one place: the first line of an error message, the preprocessing
transforms that training and serving share."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "trainkit"


def test_the_first_line_of_an_error_is_taken_in_one_place():
    # errors.first_line is the one helper; retyping it drifts (one copy forgot the
    # exception's ``message``, another the type name of an empty message).
    retyped = re.compile(r"(str\((err|e|exc|error)\)|\.message|or str\(\w+\)\)).*splitlines\(\)")
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "errors.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if retyped.search(line)
    ]
    assert not found, f"use trainkit.errors.first_line: {found}"


def test_first_line_cuts_to_a_limit_and_names_an_empty_error():
    from trainkit.errors import first_line

    assert first_line(ValueError("one\ntwo")) == "one"
    assert first_line(ValueError("x" * 50), limit=10) == "x" * 10
    assert first_line(KeyError()) == "KeyError"
