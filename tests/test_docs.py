"""Every documented command runs: the docs cannot drift from the code.

Each ``trainkit ...`` command and each Python snippet in README.md, docs/*.md and
``trainkit --help``'s examples is extracted and run, in document order, in one
fresh working directory per document (so ``trainkit eval runs/x`` finds the run
an earlier ``trainkit train x`` made). Commands run through ``trainkit.cli.main``
in the test process (:func:`conftest.cli`: what a command does and prints, without
a TensorFlow import per command; the process-level behaviour of ``trainkit`` is
tested in test_cli.py and the fault tests); Python snippets run as the scripts a
user runs, each in a fresh interpreter. New documents and sections are picked up
without touching this file. Commands that train are smoke-sized: the CLI appends
``trainer.epochs=1``, or one epoch per stage for a staged recipe (the last layer
wins, and the budget is a setting a run may change). A command written after a ``$ `` prompt and followed by output must
print that output. Synopsis lines (``trainkit train RECIPE [-c CONFIG]...``) are
not commands. A YAML block headed ``# configs/NAME.yaml`` must say what the file
says.

The only commands not run are in :data:`SKIP`, each with its reason, and in
:data:`RUN_ELSEWHERE`: multi-process commands that a named test runs in full,
only parsed and resolved here. Input files
a user brings (``trainkit predict RUN new_digits.csv``) are made by
:func:`user_files` in every working directory first.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, checkout_env, cli

#: Documented commands and snippets that cannot run here, by a piece of their text.
SKIP = {
    "trainkit data mnist_cnn": "reads TFDS mnist, which needs a download (tests run offline)",
    "runtime.strategy=multi_worker_mirrored --run-dir /shared": "one worker of a two-machine cluster: it waits for the other machine",
    "SlurmClusterResolver": "needs a Slurm allocation",
    '{..., "model"': "a fragment: `...` stands for the rest of a recipe",
    "--storage postgresql://sweeper": "a sweep on a PostgreSQL server of many machines (tests/test_sweeps.py starts a real one)",
}

#: Documented commands that start several TensorFlow processes (about six
#: seconds of CPU each just to import it) and that a named test already runs, the
#: same command made smaller, with its behaviour asserted. Here such a command is
#: parsed by the real command line and its recipe or sweep file resolved with its
#: overrides, so a renamed option, recipe, config or field still fails this test;
#: the named test must exist. Keys: (document, a piece of the command's text).
RUN_ELSEWHERE = {
    ("docs/distributed.md", "digits_mlp -c digits_mlp_smoke trainer.epochs=5 --run-dir runs/mw"):
        "tests/test_distribute.py::test_two_workers_match_one_process_and_only_the_chief_writes",
    ("docs/distributed.md", "# 2 workers, multi_worker_mirrored"):
        "tests/test_distribute.py::test_two_workers_match_one_process_and_only_the_chief_writes",
    ("docs/distributed.md", "launch -n 2 --evaluator digits_mlp"):
        "tests/test_sidecar.py::test_launch_with_an_evaluator_validates_beside_two_workers_that_never_validate",
    ("trainkit --help", "trainkit launch -n 2 digits_mlp"):
        "tests/test_distribute.py::test_two_workers_match_one_process_and_only_the_chief_writes",
    ("docs/sweeps.md", "--workers 2 --sweep-dir runs/sweeps/two"):
        "tests/test_sweeps.py::test_local_workers_share_the_default_storage",
}

TRAINING_COMMANDS = ("train", "launch")


def parse(words: list[str]):
    """``(arguments, leftover words)`` of a command line (without ``trainkit``), as the CLI parses it."""
    from trainkit.cli import make_parser

    return make_parser().parse_known_args(words)


def command_recipe(args, extra: list[str]):
    """The recipe a parsed ``train``/``launch`` command trains: its recipe, configs and overrides."""
    import trainkit

    return trainkit.load_recipe(args.recipe, configs=args.config, overrides=[*args.overrides, *extra])


def smoke(words: list[str]) -> list[str]:
    """Overrides appended to a training command so that it takes seconds."""
    recipe = command_recipe(*parse(words))
    if recipe.trainer.stages:
        return [f"trainer.stages.{i}.epochs=1" for i in range(len(recipe.trainer.stages))]
    return ["trainer.epochs=1"]
PLACEHOLDER = re.compile(r"^\[?[A-Z][A-Z_]*\]?(\.\.\.)?$|\.\.\.")


def user_files(directory: Path) -> None:
    """The files the docs assume a user has: new examples to predict, from the same
    scikit-learn sources the recipes train on (raw features, as a user holds them);
    ``rows.csv`` has the bad cell the README shows the error for (row 3)."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer, load_digits

    digits = load_digits().data[:5]
    np.save(directory / "new_digits.npy", digits)
    for name in ("new_digits.csv", "new.csv"):
        np.savetxt(directory / name, digits, delimiter=",", fmt="%g")
    cancer = load_breast_cancer()
    rows = [list(cancer.feature_names)] + [[f"{v:g}" for v in row] for row in cancer.data[:3]]
    rows[2][list(cancer.feature_names).index("mean texture")] = "n/a"
    (directory / "rows.csv").write_text("\n".join(",".join(row) for row in rows) + "\n")


@dataclass
class Snippet:
    kind: str  # "command", "python" or "config"
    text: str
    line: int
    expected: list[str] = field(default_factory=list)
    """For a ``$ `` command: the output lines shown after it."""


def documents() -> dict[str, str]:
    """Every document a user reads, by name: README.md, docs/*.md and the CLI's --help examples."""
    from trainkit.cli import EXAMPLES

    docs = {"README.md": (ROOT / "README.md").read_text()}
    for path in sorted((ROOT / "docs").glob("*.md")):
        docs[f"docs/{path.name}"] = path.read_text()
    # --help's examples, as an indented block of commands
    docs["trainkit --help"] = "\n".join(f"    {line}" for line in EXAMPLES.splitlines() if line.startswith("  trainkit "))
    return docs


def extract(text: str) -> list[Snippet]:
    """The commands, Python snippets and config files shown in a markdown text."""
    out: list[Snippet] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped.startswith("```"):
            lang = stripped[3:].strip().lower()
            indent = len(lines[i]) - len(lines[i].lstrip())
            start = i + 1
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                i += 1
            body = [line[indent:] for line in lines[start:i]]
            if lang == "python":
                out.append(Snippet("python", "\n".join(body), start + 1))
            elif lang == "yaml" and body and re.fullmatch(r"# configs/[\w.-]+\.ya?ml", body[0].strip()):
                out.append(Snippet("config", "\n".join(body), start + 1))
            elif lang in ("", "sh", "bash", "shell", "console", "text"):
                out += _commands(body, start)
        elif lines[i].startswith("    ") and _is_command(stripped):
            # an indented (unfenced) code block
            start = i
            block = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                block.append(lines[i][4:])
                i += 1
            out += _commands(block, start)
            continue
        i += 1
    return out


def _is_command(line: str) -> bool:
    return line.startswith(("trainkit ", "$ trainkit "))


def _commands(body: list[str], first_line: int) -> list[Snippet]:
    out: list[Snippet] = []
    prompted = False
    for n, raw in enumerate(body):
        line = raw.strip()
        if _is_command(line):
            prompted = line.startswith("$ ")
            command = line.removeprefix("$ ")
            out.append(Snippet("command", command, first_line + n + 1))
        elif line.startswith("$ ") or not line:
            prompted = False
        elif prompted and out:
            out[-1].expected.append(line)  # the output shown after a `$ ` command
    return [s for s in out if not _is_synopsis(s.text)]


def _is_synopsis(command: str) -> bool:
    words = shlex.split(command, comments=True)
    return any(PLACEHOLDER.search(word) for word in words[1:])


def skip_reason(snippet: Snippet) -> str | None:
    return next((reason for piece, reason in SKIP.items() if piece in snippet.text), None)


def run_elsewhere(document: str, snippet: Snippet) -> str | None:
    """The test that runs this command in full, if it is one of :data:`RUN_ELSEWHERE`."""
    return next((test for (doc, piece), test in RUN_ELSEWHERE.items() if doc == document and piece in snippet.text), None)


DOCUMENTS = documents()


def test_the_extractor_finds_the_documented_commands():
    readme = extract(DOCUMENTS["README.md"])
    commands = [s.text for s in readme if s.kind == "command"]
    assert "trainkit ls                                            # recipes and configs" in commands
    assert not any("RECIPE" in c for c in commands)  # synopses are not commands
    errors = next(s for s in readme if s.text == "trainkit train digits_mlp trainer.epoch=3")
    assert errors.expected == ["error: unknown key 'epoch' in trainer (in override trainer.epoch=3); did you mean 'epochs'?"]
    assert any(s.kind == "python" and "trainkit.evaluate(" in s.text for s in readme)
    help_commands = [s.text for s in extract(DOCUMENTS["trainkit --help"])]
    assert any(c.startswith("trainkit eval runs/digits_cnn") for c in help_commands)


def test_every_skip_entry_still_names_a_documented_snippet():
    texts = [s.text for doc in DOCUMENTS.values() for s in extract(doc)]
    for piece in SKIP:
        assert any(piece in t for t in texts), f"SKIP entry {piece!r} matches nothing: remove it"


def test_every_command_run_elsewhere_is_documented_and_its_test_exists():
    for (document, piece), test in RUN_ELSEWHERE.items():
        assert any(piece in s.text for s in extract(DOCUMENTS[document]) if s.kind == "command"), (document, piece)
        path, name = test.split("::")
        assert f"def {name}(" in (ROOT / path).read_text(), f"{test} is gone: run the command here again"


def test_a_command_run_elsewhere_is_still_checked_against_the_command_line():
    good = Snippet("command", "trainkit launch -n 2 digits_mlp -c digits_mlp_smoke trainer.epochs=5", 1)
    assert _resolve_command(good) is None
    assert "did you mean 'epochs'" in _resolve_command(Snippet("command", "trainkit launch -n 2 digits_mlp trainer.epoch=5", 1))
    assert "does not parse" in _resolve_command(Snippet("command", "trainkit launch digits_mlp", 1))  # -n is required
    assert "unknown options" in _resolve_command(Snippet("command", "trainkit launch -n 2 digits_mlp --evaluater", 1))
    assert "digits_mlp_sweeep" in _resolve_command(Snippet("command", "trainkit sweep digits_mlp_sweeep --workers 2", 1))


@pytest.mark.slow
@pytest.mark.parametrize("document", list(DOCUMENTS))
def test_every_documented_command_and_snippet_runs(tmp_path, document):
    failures = []
    ran = 0
    user_files(tmp_path)
    for number, snippet in enumerate(extract(DOCUMENTS[document])):
        if skip_reason(snippet):
            continue
        where = f"{document}:{snippet.line}"
        if snippet.kind == "config":
            failure = _check_config(snippet)
        elif snippet.kind == "python":
            failure = _run_python(snippet, tmp_path, number)
        elif run_elsewhere(document, snippet):
            failure = _resolve_command(snippet)
        else:
            failure = _run_command(snippet, tmp_path)
        ran += 1
        if failure:
            failures.append(f"{where}: {snippet.text.splitlines()[0]!r}: {failure}")
    assert not failures, "\n".join(failures)
    if document == "README.md":
        assert ran >= 6


def _run_command(snippet: Snippet, cwd: Path) -> str | None:
    words = shlex.split(snippet.text, comments=True)[1:]
    if words and words[0] in TRAINING_COMMANDS and not snippet.expected:
        words += smoke(words)
    result = cli(*words, cwd=cwd)
    output = result.stdout + result.stderr
    if snippet.expected:
        missing = [line for line in snippet.expected if line not in output.splitlines()]
        return f"documented output not printed: {missing}; got: {output[-800:]}" if missing else None
    if result.returncode != 0:
        return f"exit {result.returncode}: {output[-800:]}"
    return None


def _resolve_command(snippet: Snippet) -> str | None:
    """Parse a command as ``trainkit`` does and resolve what it would train or sweep."""
    from trainkit.errors import ConfigError
    from trainkit.sweeps.space import load_sweep

    words = shlex.split(snippet.text, comments=True)[1:]
    try:
        args, extra = parse(words)
    except SystemExit:
        return "the command line does not parse"
    if [word for word in extra if word.startswith("-")]:
        return f"unknown options: {extra}"
    try:
        if args.command == "sweep":
            load_sweep(args.sweep, [*args.overrides, *extra])
        else:
            command_recipe(args, extra)
    except ConfigError as err:
        return str(err)
    return None


def _run_python(snippet: Snippet, cwd: Path, number: int) -> str | None:
    path = cwd / f"snippet_{number}.py"
    path.write_text(snippet.text + "\n")
    if re.search(r"^def recipe\(", snippet.text, re.M):
        # A recipe file: it must resolve to a valid recipe.
        result = cli("show", str(path), cwd=cwd)
    else:
        result = subprocess.run(
            [sys.executable, str(path)], cwd=cwd, capture_output=True, text=True, timeout=300, env=checkout_env()
        )
    if result.returncode != 0:
        return f"exit {result.returncode}: {(result.stdout + result.stderr)[-800:]}"
    return None


def _check_config(snippet: Snippet) -> str | None:
    name = snippet.text.splitlines()[0].strip().removeprefix("# ")
    shown = yaml.safe_load(snippet.text)
    actual = yaml.safe_load((ROOT / name).read_text())
    return None if shown == actual else f"differs from {name}: shown {shown}, the file has {actual}"
