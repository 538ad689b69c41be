"""A run directory and a YAML file are data: hostile ones are refused on one line,
never followed, expanded or executed (docs/security.md)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import TINY, cli, run_cli
from conftest import one_error_line as _one_line

import trainkit
from trainkit import api
from trainkit.errors import ConfigError, RunDirError
from trainkit.files import write_json_atomic
from trainkit.loader import load_recipe, parse_yaml
from trainkit.rundir import RunDir


def _bomb(levels: int = 9) -> str:
    names = [chr(ord("a") + i) for i in range(levels)]
    text = f"{names[0]}: &{names[0]} [{', '.join(['lol'] * 9)}]\n"
    for prev, name in zip(names, names[1:], strict=False):
        text += f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]\n"
    return text


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished three-step run of a Python recipe that registers its own model."""
    folder = tmp_path_factory.mktemp("tiny")
    source = folder / "own_model.py"
    source.write_text(
        '''"""A recipe with its own model builder."""
import trainkit

@trainkit.register_model("own_dense_for_hardening")
def own_dense(*, input_shape, num_outputs):
    import keras
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, keras.layers.Dense(num_outputs)(inputs))

def recipe():
    return {
        "name": "own_model",
        "data": {"source": {"type": "sklearn", "name": "iris"}},
        "model": {"type": "own_dense_for_hardening"},
        "loss": {"type": "SparseCategoricalCrossentropy", "from_logits": True},
        "trainer": {"steps": 3, "progress": False},
        "export": {"formats": []},
    }
'''
    )
    trainkit.train(load_recipe(source), run_dir=folder / "run")
    return folder / "run"


@pytest.fixture(scope="module")
def own_recipe(tiny_run):
    """The tiny run's recipe, loaded once (its module registered its builder already)."""
    return RunDir(tiny_run).read_recipe()


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, symlinks=True)
    return to


# ------------------------------------------------------------------------- YAML


@pytest.mark.parametrize(
    "text, expected",
    [
        (_bomb(), "expand to more than"),
        ("[" * 100_000, "nested more than"),
        ("{a: " * 70 + "1" + "}" * 70, "nested more than"),
        ("a: &a [*a, *a]\n", "refers to itself"),
        ("a: " + "x" * (2 << 20), "characters of YAML"),
    ],
    ids=["alias-bomb", "deep-flow", "deep-mapping", "recursive-alias", "huge"],
)
def test_hostile_yaml_is_refused_at_once(text, expected):
    started = time.monotonic()
    with pytest.raises(ConfigError, match=expected):
        parse_yaml(text, source="evil.yaml")
    assert time.monotonic() - started < 5  # refused, not expanded (a bound, not a timing)


def test_ordinary_yaml_with_aliases_still_reads():
    assert parse_yaml("base: &b {units: 8}\nlayers: [*b, *b]\n", source="ok.yaml") == {
        "base": {"units": 8},
        "layers": [{"units": 8}, {"units": 8}],
    }


def test_an_alias_bomb_config_and_run_dir_config_are_one_line(tmp_path, tiny_run):
    (tmp_path / "bomb.yaml").write_text("base: digits_mlp\n" + _bomb())
    line = _one_line(cli("show", "digits_mlp", "-c", str(tmp_path / "bomb.yaml"), cwd=tmp_path))
    assert "bomb.yaml" in line and "expand to more than" in line

    run = _copy(tiny_run, tmp_path / "run")
    (run / "config.yaml").write_text(_bomb())
    line = _one_line(cli("eval", str(run), cwd=tmp_path))
    assert f"{run / 'config.yaml'} cannot be read back" in line and "--restart" in line


# ------------------------------------------------------------- names and paths


@pytest.mark.parametrize("name", ["..", ".", "../x", "a/b", ".hidden", "-x", "x" * 101])
def test_a_recipe_name_is_a_name_not_a_path(tmp_path, name):
    with pytest.raises(ConfigError, match="name.*a recipe name is a name, not a path"):
        load_recipe("digits_mlp", overrides={"name": name})


def test_name_dotdot_writes_nothing_from_the_command_line(tmp_path):
    before = sorted(os.listdir(tmp_path))
    line = _one_line(cli("train", "digits_mlp", "name=..", *TINY, cwd=tmp_path))
    assert "a recipe name is a name, not a path" in line
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("cache", ["../../x", "..", "a/../../b", "../"])
def test_a_relative_cache_path_may_not_leave_the_run_directory(cache):
    with pytest.raises(ConfigError, match="leads out of the run directory"):
        load_recipe("digits_mlp", overrides={"data.cache": cache})


def test_cache_paths_inside_or_absolute_are_accepted(tmp_path):
    for cache in ["cache", "a/../b", str(tmp_path / "elsewhere")]:
        assert load_recipe("digits_mlp", overrides={"data.cache": cache}).data.cache == cache


# -------------------------------------------------------------------- symlinks


@pytest.mark.parametrize("link", [".lock", "metrics.jsonl", "run.json", "checkpoints/checkpoint"])
def test_a_symlink_in_a_run_directory_is_refused_and_its_target_untouched(tmp_path, tiny_run, own_recipe, link):
    run = _copy(tiny_run, tmp_path / "run")
    target = tmp_path / "victim.txt"
    target.write_text("precious\n")
    (run / link).unlink(missing_ok=True)
    (run / link).symlink_to(target)
    with pytest.raises(RunDirError, match=f"holds a symbolic link, {run / link}"):
        RunDir(run).acquire()
    with pytest.raises(RunDirError, match="symbolic link"):
        trainkit.train(own_recipe, run_dir=run)
    assert target.read_text() == "precious\n"


def test_a_symlinked_lock_from_the_command_line_exits_2_and_writes_nothing(tmp_path, tiny_run):
    run = _copy(tiny_run, tmp_path / "run")
    target = tmp_path / "victim.txt"
    target.write_text("precious\n")
    (run / ".lock").symlink_to(target)
    line = _one_line(cli("train", str(tiny_run.parent / "own_model.py"), "--run-dir", str(run), cwd=tmp_path))
    assert "symbolic link" in line and target.read_text() == "precious\n"


def test_atomic_writes_replace_a_symlink_instead_of_writing_through_it(tmp_path):
    target = tmp_path / "victim.txt"
    target.write_text("precious\n")
    (tmp_path / "status.json").symlink_to(target)
    (tmp_path / ".status.json.tmp").symlink_to(target)  # a planted temporary name too (the writer's own is unguessable)
    write_json_atomic(tmp_path / "status.json", {"ok": True})
    assert target.read_text() == "precious\n"
    assert not (tmp_path / "status.json").is_symlink()
    assert json.loads((tmp_path / "status.json").read_text()) == {"ok": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".status.json.tmp", "status.json", "victim.txt"]  # none of its own left


# ------------------------------------------------- eval never imports run code


def _copy_naming_a_hostile_source(tiny_run, tmp_path, name: str):
    """A copy of ``tiny_run`` whose run.json names a recipe source that would leave a marker
    file if it ever ran; returns ``(run, source, marker)``."""
    run = _copy(tiny_run, tmp_path / "run")
    marker = tmp_path / "pwned"
    evil = tmp_path / name
    evil.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    status = json.loads((run / "run.json").read_text())
    status["recipe_source"] = str(evil)
    (run / "run.json").write_text(json.dumps(status))
    return run, evil, marker


@pytest.mark.slow
def test_eval_never_imports_the_recipe_source_a_run_json_names(tmp_path, tiny_run):
    run, evil, marker = _copy_naming_a_hostile_source(tiny_run, tmp_path, "evil.py")

    line = _one_line(run_cli("eval", str(run), cwd=tmp_path, timeout=120))
    assert not marker.exists()
    # The run's own builder is not registered in a fresh process: say how to supply it.
    assert "own_dense_for_hardening" in line and f"--recipe {evil}" in line

    # Naming the recipe file on the command line is the user's choice: it is imported.
    good = run_cli("eval", str(run), "--recipe", str(tiny_run.parent / "own_model.py"), cwd=tmp_path, timeout=120)
    assert good.returncode == 0, good.stderr[-2000:]
    assert "loss" in json.loads(good.stdout)["test"]
    assert not marker.exists()


def test_in_process_eval_of_a_copied_run_does_not_import_its_source(tmp_path, tiny_run):
    run, _, marker = _copy_naming_a_hostile_source(tiny_run, tmp_path, "evil2.py")
    assert "loss" in api.evaluate(run, split="test")  # the builder is registered in this process
    assert not marker.exists()


# -------------------------------------------------------- damaged metadata


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("run.json", b"\xff\xfe\x00garbage\x9c", "run.json is not trainkit's status"),
        ("run.json", b"[1, 2]", "run.json is not trainkit's status"),
        ("run.json", b"", "run.json is not trainkit's status"),
        ("config.yaml", b"\xff\xfe\x00garbage\x9c", "not UTF-8 text"),
        ("config.yaml", b"!!python/object/apply:os.system ['true']", "tags that build Python objects"),
        ("config.yaml", b"", "holds nothing"),
        ("config.yaml", b"name: x\nsurprise: 1\n", "cannot be read back"),
    ],
    ids=["run-binary", "run-list", "run-empty", "config-binary", "config-tagged", "config-empty", "config-unknown-key"],
)
def test_damaged_metadata_is_one_line_naming_the_file_and_the_way_out(tmp_path, tiny_run, own_recipe, name, content, expected):
    run = _copy(tiny_run, tmp_path / "run")
    (run / name).write_bytes(content)
    attempts = [lambda: RunDir(run).check_compatible(own_recipe)]  # train
    if name == "config.yaml":  # eval reads no run.json
        attempts.append(lambda: api.evaluate(run))
    for attempt in attempts:
        with pytest.raises(RunDirError) as caught:
            attempt()
        line = str(caught.value)
        assert "\n" not in line and str(run / name) in line and expected in line, line
        assert ("delete it" in line) if name == "run.json" else ("--restart" in line)


def test_damaged_metadata_from_the_command_line_exits_2(tmp_path, tiny_run):
    run = _copy(tiny_run, tmp_path / "run")
    (run / "run.json").write_bytes(b"\xff\xfe\x00garbage\x9c")
    line = _one_line(cli("train", str(tiny_run.parent / "own_model.py"), "--run-dir", str(run), cwd=tmp_path))
    assert f"{run / 'run.json'} is not trainkit's status" in line


def test_a_damaged_checkpoint_list_is_rebuilt_from_the_files(tmp_path, tiny_run, own_recipe, capsys):
    run = _copy(tiny_run, tmp_path / "run")
    (run / "checkpoints" / "checkpoint").write_bytes(b"\xff\xfe\x00garbage\x9c\n")
    assert "loss" in api.evaluate(run, split="test")  # eval only reads: the files tell
    trainkit.train(load_recipe(own_recipe, overrides={"trainer.steps": 5}), run_dir=run)
    err = capsys.readouterr().err
    assert f"{run / 'checkpoints' / 'checkpoint'} could not be read" in err and "rebuilt it" in err
    assert json.loads((run / "run.json").read_text())["step"] == 5
