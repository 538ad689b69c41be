"""Generated hostile input, one test per surface: overrides, YAML configs, predict inputs
(CSV, JSON lines, .npy) and run-directory files. Each example must be accepted, or
refused with one line (a :class:`~trainkit.errors.TrainkitError`, exit 2 on the command
line) with nothing written, and it must end within a bound: never a traceback, never
a hang, never memory filled (docs/security.md)."""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trainkit
from trainkit.errors import TrainkitError
from trainkit.loader import load_recipe

#: Seconds one example may take: far above what any takes, far below a hang.
BOUND = 10
GENERATED = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _accepted_or_one_line(call) -> object:
    """``call()``'s result, or None when it was refused with one short line; anything else fails."""
    started = time.monotonic()
    try:
        return call()
    except TrainkitError as err:
        line = str(err)
        assert getattr(err, "exit_code", 2) == 2, line
        assert line and "\n" not in line and len(line) < 1000, repr(line)
        return None
    finally:
        assert time.monotonic() - started < BOUND  # a bound against hangs, not a timing


@pytest.fixture(scope="module")
def base_recipe() -> dict:
    return load_recipe("digits_mlp").to_dict()


# ------------------------------------------------------------------------- overrides

KEYS = ["trainer.epochs", "trainer.steps", "model.hidden_units", "model.hidden_units.0", "optimizer.learning_rate",
        "optimizer", "optimizer.groups", "model.freeze", "name", "seed", "data.batch_size", "trainer.stages",
        "model.dropout", "loss.type", "data.source.name", "trainer.checkpoint.keep"]
PIECES = ["", ".", "0", "\u00b2", "\u0663", "x", "type", "\x00", "-1", "99999999999", "9" * 60, "[", "]", "{", "}",
          ":", ",", " ", "'", '"', "*a", "&a", "!!python/object:os.system", "<<", ".inf", ".nan", "null", "\n", "\t", "#", "\U0001f600"]
text_pieces = st.lists(st.sampled_from(PIECES) | st.text(max_size=5), max_size=8).map("".join)


@GENERATED
@given(key=st.sampled_from(KEYS) | text_pieces, suffix=text_pieces, value=text_pieces)
def test_generated_overrides(base_recipe, key, suffix, value):
    _accepted_or_one_line(lambda: load_recipe(base_recipe, overrides=[f"{key}{suffix}={value}"]))


# ---------------------------------------------------------------------- YAML configs

YAML_PIECES = ["base: digits_mlp\n", "base: evil.py\n", "base: ../x.yaml\n", "base: [1]\n", "trainer:\n", "  epochs: ",
               "  steps: ", "optimizer: {learning_rate: ", "}", "model:\n  hidden_units: [", "]", "- ", "a: &a [1, 2]\n",
               "b: *a\n", "c: {<<: *a}\n", "<<: {x: 1}\n", "? [1, 2]\n: 3\n", "!!python/object/apply:os.system ['true']\n",
               "\x00", "\ufeff", "1" * 50, ".inf", "null", "'", '"', "\n", "  ", "\t", "name: x\n", "name: ..\n",
               "trainer: 3\n", "{", "[", "&b ", "*b", "seed: -1\n", "seed: 0x10\n", "%YAML 1.1\n", "---\n", "...\n"]


@GENERATED
@given(text=st.lists(st.sampled_from(YAML_PIECES) | st.text(max_size=6), max_size=14).map("".join))
def test_generated_yaml_configs(text):
    folder = Path(tempfile.mkdtemp(prefix="trainkit-yaml-"))
    marker = folder / "pwned"
    try:
        (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\ndef recipe():\n    return {{}}\n")
        (folder / "cfg.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
        _accepted_or_one_line(lambda: load_recipe("digits_mlp", configs=[folder / "cfg.yaml"]))
        _accepted_or_one_line(lambda: load_recipe(folder / "cfg.yaml"))
        assert not marker.exists()
    except UnicodeEncodeError:
        pass  # (a lone surrogate cannot be a file's text)
    finally:
        shutil.rmtree(folder)


# -------------------------------------------------------------------- predict inputs

SPEC = {"input": {"name": "features", "shape": [4], "dtype": "float32", "columns": ["a", "b", "c", "d"], "image": None}}
CELLS = ["1", "-2.5", "1e300", "nan", "inf", "-inf", "a", "b", "c", "d", "", " ", "x" * 20, '"', '"1,2"', "\x00", "\u00e9",
         "\ufeff", "0x10", "1_000", "\u0663"]
csv_text = st.lists(st.lists(st.sampled_from(CELLS), max_size=6).map(",".join), max_size=6).map("\n".join)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.sampled_from(["a", "b", "c", "d", "features", "x"]), inner, max_size=5),
    max_leaves=24,
)


def _read(path: Path):
    from trainkit.serving.predict import read_inputs

    result = _accepted_or_one_line(lambda: read_inputs(str(path), SPEC))
    if result is not None:
        names, array = result
        assert array.shape == (len(names), 4) and np.isfinite(array).all()


@GENERATED
@given(text=csv_text, raw=st.binary(max_size=40), binary=st.booleans())
def test_generated_csv_inputs(tmp_path, text, raw, binary):
    path = tmp_path / "in.csv"
    path.write_bytes(raw + text.encode("utf-8", "surrogatepass") if binary else text.encode("utf-8", "surrogatepass"))
    _read(path)


@GENERATED
@given(lines=st.lists(json_value.map(json.dumps) | st.text(max_size=10), max_size=6))
def test_generated_json_lines_inputs(tmp_path, lines):
    path = tmp_path / "in.jsonl"
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass"))
    _read(path)


@GENERATED
@given(
    shape=st.lists(st.integers(0, 10**12), max_size=4),
    dtype=st.sampled_from(["<f4", "<f8", "<i8", "|b1", "<U3", "|O", "|V8", ">f4", "<c8"]),
    body=st.binary(max_size=200),
    cut=st.integers(0, 300),
)
def test_generated_npy_inputs(tmp_path, shape, dtype, body, cut):
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': ({', '.join(map(str, shape))}{',' if len(shape) == 1 else ''}), }}"
    header = header.ljust(118) + "\n"
    data = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin-1") + body
    path = tmp_path / "in.npy"
    path.write_bytes(data[: len(data) - cut] if cut < len(data) else data)
    _read(path)


def test_generated_npy_of_a_real_array_reads(tmp_path):
    buffer = io.BytesIO()
    np.save(buffer, np.arange(8, dtype=np.float32).reshape(2, 4))
    (tmp_path / "ok.npy").write_bytes(buffer.getvalue())
    _read(tmp_path / "ok.npy")


# ------------------------------------------------------------------ run-directory files


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("generated") / "run"
    trainkit.train(load_recipe("digits_mlp", overrides=["trainer.epochs=null", "trainer.steps=2", "trainer.progress=false", "export.formats=[]"]), run_dir=run)
    return run


RUN_FILES = ["config.yaml", "run.json", "inference.json", "eval.json", "metrics.jsonl", "checkpoints/checkpoint"]


def _readers(run: Path, recipe):
    from trainkit.rundir import RunDir
    from trainkit.runs import read_history
    from trainkit.serving import spec

    return [
        lambda: RunDir(run).read_recipe(),
        lambda: RunDir(run).read_status(),
        lambda: spec.read(run),
        lambda: read_history(run),
        lambda: trainkit.load_run(run).metrics,
        lambda: trainkit.compare([run]),
        lambda: RunDir(run).check_compatible(recipe),
    ]


@settings(GENERATED, max_examples=50)
@given(name=st.sampled_from(RUN_FILES), content=st.binary(max_size=200) | json_value.map(lambda v: json.dumps(v).encode()))
def test_generated_run_directory_files(tiny_run, tmp_path, name, content):
    from trainkit.rundir import RunDir

    run = tmp_path / "run"
    if run.exists():
        shutil.rmtree(run)
    shutil.copytree(tiny_run, run)
    (run / name).write_bytes(content)
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    for read in _readers(run, RunDir(tiny_run).read_recipe()):
        _accepted_or_one_line(read)
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before  # nothing written
