"""Hostile input on the newer surfaces -- YAML ``base:``, overrides, recipe regexes and
numbers, predict inputs, output paths, run directories as data, closed pipes -- is
refused on one line (exit 2), never run, followed, expanded or held in memory
(docs/security.md lists each promise with its test here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import ROOT, TINY, checkout_env, cli, run_cli
from conftest import one_error_line as _one_line

import trainkit
from trainkit import api
from trainkit.errors import ConfigError, RunDirError, TrainkitError
from trainkit.loader import load_recipe, parse_yaml
from trainkit.serving.predict import read_inputs


def _refused(call, error=TrainkitError, match: str = "") -> str:
    """The one line ``call`` is refused with (holding the text ``match``)."""
    with pytest.raises(error) as caught:
        call()
    line = str(caught.value)
    assert "\n" not in line and len(line) < 600 and match in line, line
    return line


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished three-step digits_mlp run with its inference model (model.keras)."""
    run = tmp_path_factory.mktemp("surfaces") / "run"
    recipe = load_recipe("digits_mlp", overrides=["trainer.epochs=null", "trainer.steps=3", "trainer.progress=false", "export.formats=[keras]"])
    trainkit.train(recipe, run_dir=run)
    return run


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, symlinks=True)
    return to


# ------------------------------------------------------------ YAML base: never runs code


@pytest.mark.parametrize("base", ["evil.py", "./evil.py", "../evil.py", "sub/evil.yaml", str(Path("/tmp") / "evil.py")])
def test_base_naming_a_file_is_refused_and_never_imported(tmp_path, base):
    marker = tmp_path / "pwned"
    for folder in (tmp_path, tmp_path / "sub", tmp_path.parent):
        folder.mkdir(exist_ok=True)
        (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\ndef recipe():\n    return {{}}\n")
    (tmp_path / "sub" / "evil.yaml").write_text("base: digits_mlp\n")
    (tmp_path / "cfg.yaml").write_text(f"base: {base}\n")
    line = _refused(lambda: load_recipe(tmp_path / "cfg.yaml"), ConfigError, "base")
    assert "names a recipe in recipes/ or configs/" in line and "on the command line" in line
    assert not marker.exists()


def test_base_naming_a_python_file_from_the_command_line_is_one_line(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (tmp_path / "cfg.yaml").write_text("base: evil.py\n")
    line = _one_line(cli("show", "cfg.yaml", cwd=tmp_path))
    assert "trainkit train FILE.py -c" in line and not marker.exists()


def test_base_by_recipe_name_still_layers(tmp_path):
    (tmp_path / "cfg.yaml").write_text("base: digits_mlp\ntrainer: {epochs: 2}\n")
    assert load_recipe(tmp_path / "cfg.yaml").trainer.epochs == 2


def test_configs_naming_each_other_as_base_are_a_loop_in_one_line(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "loop_a.yaml").write_text("base: loop_b\n")
    (tmp_path / "configs" / "loop_b.yaml").write_text("base: loop_a\n")
    line = _refused(lambda: load_recipe("loop_a"), ConfigError, "in a loop")
    assert "loop_a.yaml -> loop_b.yaml -> loop_a.yaml" in line


def test_a_config_named_like_the_recipe_it_builds_on_builds_on_that_recipe(tmp_path, monkeypatch):
    monkeypatch.delenv("TRAINKIT_HOME")  # the working directory comes first, as for a user
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "digits_mlp.yaml").write_text("base: digits_mlp\ntrainer: {epochs: 7}\n")
    recipe = load_recipe("digits_mlp")  # the working directory's config, over the recipe it hides
    assert recipe.trainer.epochs == 7 and recipe.name == "digits_mlp" and recipe.model.type == "mlp"
    assert load_recipe("digits_mlp", configs=["digits_mlp"]).trainer.epochs == 7
    (tmp_path / "configs" / "alone.yaml").write_text("base: alone\n")  # nothing else has its name
    _refused(lambda: load_recipe("alone"), ConfigError, "a config cannot be its own base")


def test_a_config_built_on_a_config_layers_with_c_through_its_chain(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "on_smoke.yaml").write_text("base: digits_mlp_smoke\ntrainer: {epochs: 7}\n")
    (tmp_path / "configs" / "on_cnn.yaml").write_text("base: digits_cnn_smoke\ntrainer: {epochs: 7}\n")
    smoke = load_recipe("digits_mlp", configs=["digits_mlp_smoke"])
    layered = load_recipe("digits_mlp", configs=["on_smoke"])
    assert layered.trainer.epochs == 7 and layered.description == smoke.description  # the smoke layer applied too
    assert load_recipe("digits_mlp_smoke", configs=["on_smoke"]).trainer.epochs == 7
    line = _refused(lambda: load_recipe("digits_mlp", configs=["on_cnn"]), ConfigError, "is for recipe 'digits_cnn', not 'digits_mlp'")
    assert "on_cnn.yaml, through digits_cnn_smoke.yaml" in line


def test_a_misspelt_argument_names_the_layer_that_set_it(tmp_path):
    from trainkit.plan import check_components

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "typo.yaml").write_text("base: digits_mlp\noptimizer: {learning_rte: 0.1}\n")
    line = _refused(lambda: check_components(load_recipe("typo")), ConfigError, "has no argument 'learning_rte'; did you mean 'learning_rate'?")
    assert line.endswith(f"(set in {tmp_path / 'configs' / 'typo.yaml'})"), line
    line = _refused(lambda: check_components(load_recipe("digits_mlp", overrides=["model.hiden_units=[3]"])), ConfigError)
    assert line.endswith("(set in override model.hiden_units=[3])"), line


def test_a_chain_of_bases_too_deep_is_one_line(tmp_path):
    from trainkit.loader import MAX_BASE_DEPTH

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "d0.yaml").write_text("base: digits_mlp\n")
    for i in range(1, 2 * MAX_BASE_DEPTH):
        (tmp_path / "configs" / f"d{i}.yaml").write_text(f"base: d{i - 1}\n")
    assert load_recipe(f"d{MAX_BASE_DEPTH - 1}").name == "digits_mlp"
    line = _refused(lambda: load_recipe(f"d{2 * MAX_BASE_DEPTH - 1}"), ConfigError, f"more than {MAX_BASE_DEPTH} deep")
    _refused(lambda: load_recipe("digits_mlp", configs=[f"d{2 * MAX_BASE_DEPTH - 1}"]), ConfigError, f"more than {MAX_BASE_DEPTH} deep")
    assert f"d{2 * MAX_BASE_DEPTH - 1}.yaml ->" in line


# ----------------------------------------------------------------- YAML and overrides


@pytest.mark.parametrize(
    "override, expected",
    [
        ("name=a\x00b", "U+0000"),
        ("trainer.epochs=" + "9" * 5000, "an integer of 5,000 digits"),
        ("model.hidden_units.\u00b2=3", "index it with a number"),
        ("model.hidden_units.\u0663=3", "index it with a number"),
        ("trainer.epochs.x=1", "trainer.epochs is a single value"),
        ("trainer.epochs.x.y=1", "cannot set a key inside"),
        ("optimizer.learning_rate=.inf", "finite number"),
        ("trainer.stages=[{epochs: 1}, {epochs: 1, learning_rate: .inf}]", "finite number"),
        ("optimizer.groups=[{match: dense, learning_rate_multiplier: .inf}]", "finite number"),
        ("model.freeze=['" + "a" * 201 + "']", "a regular expression of 201 characters"),
        ("model.freeze=['(']", "not a valid regular expression"),
        ("trainer.epochs=true", "epochs: true is a boolean, not a number"),
        ("data.batch_size=false", "batch_size: false is a boolean, not a number"),
        ("optimizer.learning_rate=true", "learning_rate: true is a boolean, not a number"),
        ("data.prefetch=0", "data.prefetch (in override data.prefetch=0): Input should be a valid boolean or greater than 0, got 0"),
        ("data.parallel_calls=fast", "Input should be a valid integer or 'auto', got 'fast'"),
        ("trainer.stages=[{epochs: 1}, {epochs: 1, unfreeze: ['*conv']}]", "trainer.stages.1.unfreeze.0 (in override"),
        ("trainer.stages=[{epochs: 1}, {epoch: 1}]", "unknown key 'epoch' in trainer.stages.1"),
        ("optimizer.groups=[{match: x, lr_mult: 0.1}]", "unknown key 'lr_mult' in optimizer.groups.0"),
    ],
    ids=["nul", "5000-digits", "superscript-index", "arabic-index", "into-scalar", "under-scalar",
         "inf-lr", "inf-stage-lr", "inf-multiplier", "long-regex", "bad-regex", "boolean-epochs", "boolean-batch", "boolean-lr",
         "prefetch-either", "parallel-either", "stage-regex", "stage-typo", "group-typo"],
)
def test_hostile_overrides_are_one_short_line(override, expected):
    line = _refused(lambda: load_recipe("digits_mlp", overrides=[override]), ConfigError, expected)
    assert len(line) < 400 and "\x00" not in line


@pytest.mark.parametrize("recipe", ["text_lstm", "text_transformer"])
@pytest.mark.parametrize("mode", ["multi_hot", "tf_idf"])
def test_a_sequence_model_on_a_bag_of_words_is_one_line(recipe, mode):
    _refused(lambda: load_recipe(recipe, overrides=[f"data.text.output_mode={mode}"]), ConfigError, "takes token ids; use output_mode: int")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("? [a, b]\n: 1\n", "a key must be text or a number, not a list"),
        ("{[1]: 2}", "a key must be text or a number"),
        ("a: \x00\n", "U+0000"),
        ("seed: " + "1" * 5000 + "\n", "an integer of 5,000 digits"),
        ("".join(f"k{i}: {i}\n" for i in range(50_001)), "more than 100,000 values; a recipe or config never holds"),
    ],
    ids=["list-key", "flow-list-key", "nul", "huge-int", "plain-many-keys"],
)
def test_hostile_yaml_is_one_line_that_says_what_is_wrong(text, expected):
    line = _refused(lambda: parse_yaml(text, source="x.yaml"), ConfigError, expected)
    assert "alias" not in line and "tag" not in line


def test_merge_keys_are_plain_yaml_and_own_keys_win():
    text = "defaults: &d {units: 8, activation: relu}\nlayer:\n  <<: *d\n  units: 16\n"
    assert parse_yaml(text, source="ok.yaml")["layer"] == {"units": 16, "activation": "relu"}


# ------------------------------------------------------------------ bounded regexes


def test_a_catastrophic_group_regex_is_one_line_at_once():
    from trainkit.models.finetune import group_of_variables

    variables = [SimpleNamespace(path="a" * 40 + "/kernel")]
    groups = [SimpleNamespace(match="(a|aa)+$", learning_rate_multiplier=1.0)]
    started = time.monotonic()
    line = _refused(lambda: group_of_variables(None, variables, groups), ConfigError, "optimizer.groups.0.match")
    assert "catastrophic backtracking" in line
    assert time.monotonic() - started < 10  # a bound (the unbounded match takes hours), not a timing


def test_a_catastrophic_freeze_regex_is_one_line_at_once():
    from trainkit.models.finetune import freeze

    model = SimpleNamespace(layers=[SimpleNamespace(name="a" * 40 + "!")])
    _refused(lambda: freeze(model, ["(a|aa)+$"]), ConfigError, "took over")


# -------------------------------------------------------------------- model memory


def test_a_lora_rank_beyond_the_kernels_is_refused_before_allocation(monkeypatch):
    from trainkit.models.finetune import _check_lora_size

    kernel = SimpleNamespace(shape=(64, 4, 16))
    layer = SimpleNamespace(name="query", kernel=kernel)
    backbone = SimpleNamespace(layers=[layer], default_lora_layer_names=lambda: ["query"], count_params=lambda: 10_000)
    # (A stand-in backbone: its sublayers are its layers, where Keras would walk a real one.)
    monkeypatch.setattr("trainkit.compat.all_sublayers", lambda model: model.layers)
    _refused(lambda: _check_lora_size(backbone, 10_000_000), ConfigError, "model.lora_rank: 10,000,000 is larger")
    _check_lora_size(backbone, 8)  # an ordinary rank passes


def test_parameters_beyond_memory_are_refused_before_allocation():
    from trainkit.models.memory import check_parameters_fit

    _refused(lambda: check_parameters_fit(10**12, field="model.lora_rank", available=2**33), ConfigError, "model.lora_rank: 1,000,000,000,000 parameters")


# ------------------------------------------------------------------------ zip bombs


def _keras_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: _keras_zip(p, {"config.json": b" " * (80 << 20), "metadata.json": b"{}"}), "a zip bomb"),
        (lambda p: _keras_zip(p, {"model.weights.h5": b"\0" * (8 << 20), "config.json": b"{}"}), "times larger than it is stored"),
        (lambda p: p.write_bytes(b"PK\x03\x04 half a zip"), "damaged or truncated"),
        (lambda p: _keras_zip(p, {"x.txt": b"hello"}), "not a Keras model"),
    ],
    ids=["json-bomb", "weights-bomb", "truncated", "foreign-zip"],
)
def test_a_hostile_keras_source_is_one_line_before_keras_opens_it(tmp_path, make, expected):
    source = tmp_path / "source.keras"
    make(source)
    from trainkit.models.pretrained import load_source

    line = _refused(lambda: load_source(str(source), field="model.source"), ConfigError, expected)
    assert line.startswith("model.source")


# ------------------------------------------------------------------- predict inputs

SPEC = {"input": {"name": "features", "shape": [4], "dtype": "float32", "columns": ["a", "b", "c", "d"], "image": None}}


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _sparse(path: Path) -> Path:
    with open(path, "wb") as f:
        f.truncate(3 << 30)  # 3 GiB of nothing: never read whole
    return path


def _npy_claiming(path: Path) -> Path:
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000, 4), }"
    header += b" " * (118 - len(header)) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\0" * 64)
    return path


@pytest.mark.parametrize(
    "name, make, expected",
    [
        ("big.csv", lambda p: p.write_text("a,b,c,d\n" + "1" * 200_000 + ",1,1,1\n"), "field larger than field limit"),
        ("sparse.csv", _sparse, "predict reads text inputs of up to"),
        ("nul.csv", lambda p: p.write_bytes(b"\0" * 1000 + b"\n1,2,3,4\n"), "holds a NUL byte"),
        ("latin.csv", lambda p: p.write_bytes("a,b,c,d\n1,2,3,\u00e9\n".encode("latin-1")), "line 2: not UTF-8 text"),
        ("latin.jsonl", lambda p: p.write_bytes(b'["\xe9"]\n'), "not UTF-8 text"),
        ("deep.jsonl", lambda p: p.write_text("[" * 100_000 + "]" * 100_000 + "\n"), "nested too deeply"),
        ("nested.jsonl", lambda p: p.write_text("[[[[[1]]]]]\n"), "nested deeper than an example"),
        ("nan.csv", lambda p: p.write_text("1,2,3,nan\n"), "holds NaN or infinity"),
        ("inf.jsonl", lambda p: p.write_text("[1, 2, 3, Infinity]\n"), "holds NaN or infinity"),
        ("overflow.csv", lambda p: p.write_text("1,2,3,1e300\n"), "holds NaN or infinity"),
        ("nan.npy", lambda p: np.save(p, np.full((2, 4), np.nan)), "holds NaN or infinity"),
        ("empty.npy", lambda p: np.save(p, np.zeros((0, 4))), "no examples"),
        ("complex.npy", lambda p: np.save(p, np.ones((2, 4), complex)), "holds complex128 values"),
        ("huge.npy", _npy_claiming, "its header claims shape"),
        ("fifo.csv", _fifo, "not a regular file"),
        ("header.csv", lambda p: p.write_text("x" * 1000 + ",b,c,d\n1,2,3,4\n"), "no column 'a'"),
    ],
)
def test_hostile_predict_inputs_are_one_short_line(tmp_path, name, make, expected):
    path = tmp_path / name
    make(path)
    line = _refused(lambda: read_inputs(str(path), SPEC), ConfigError, expected)
    assert len(line) < 500, line


def test_a_device_file_is_not_read():
    _refused(lambda: read_inputs("/dev/zero", SPEC), ConfigError, "not a regular file")


def test_csv_rows_to_predict_keep_their_numbers_and_an_empty_text_is_a_text(tmp_path):
    (tmp_path / "gap.csv").write_text("a,b,c,d\n1,2,3,4\n\n5,6,7,8\n\n")
    _refused(lambda: read_inputs(str(tmp_path / "gap.csv"), SPEC), ConfigError, "gap.csv, row 3: 0 values but the header has 4 columns")
    (tmp_path / "blank.csv").write_text("\na,b,c,d\n1,2,3,4\n,,,\n5,6,7,8\n")
    _refused(lambda: read_inputs(str(tmp_path / "blank.csv"), SPEC), ConfigError, "row 3, column 'a': '' is not a number")
    texts = {"input": {"name": "features", "shape": [], "dtype": "string", "columns": ["review"], "image": None}}
    (tmp_path / "texts.csv").write_text('review\n"two\nlines"\n""\nlast\n')
    names, values = read_inputs(str(tmp_path / "texts.csv"), texts)
    assert names == ["2", "3", "4"] and list(values) == ["two\nlines", "", "last"]
    (tmp_path / "no_header.csv").write_text('"a first text\nof two lines"\n')
    _refused(lambda: read_inputs(str(tmp_path / "no_header.csv"), texts), ConfigError, "no column 'review' in the header")


def test_ordinary_predict_inputs_still_read(tmp_path):
    (tmp_path / "ok.csv").write_text("d,c,b,a\n4,3,2,1\n")
    names, x = read_inputs(str(tmp_path / "ok.csv"), SPEC)
    assert names == ["2"] and x.tolist() == [[1, 2, 3, 4]]
    (tmp_path / "ok.jsonl").write_text('{"a": 1, "b": 2, "c": 3, "d": 4}\n[5, 6, 7, 8]\n')
    assert read_inputs(str(tmp_path / "ok.jsonl"), SPEC)[1].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_a_notebooks_array_likes_are_examples_and_anything_else_is_one_line():
    import pandas as pd
    import tensorflow as tf

    rows = [[1, 2, 3, 4], [5, 6, 7, 8]]
    for given in (rows, tuple(map(tuple, rows)), tf.constant(rows), pd.DataFrame(rows, columns=list("abcd"))):
        assert read_inputs(given, SPEC)[1].tolist() == rows
    reordered = pd.DataFrame([[4, 3, 2, 1]], columns=list("dcba"))  # taken by name, as a CSV's columns
    assert read_inputs(reordered, SPEC)[1].tolist() == [[1, 2, 3, 4]]
    assert read_inputs(pd.Series([1, 2, 3, 4]), SPEC)[1].tolist() == [[1, 2, 3, 4]]  # one example
    _refused(lambda: read_inputs(pd.DataFrame(rows, columns=list("abcx")), SPEC), ConfigError, "the DataFrame has no column 'd'")
    for other in (3.0, None, {"a": 1}):
        _refused(lambda: read_inputs(other, SPEC), ConfigError, "is not examples; give a NumPy array, a list of examples")  # noqa: B023
    _refused(lambda: read_inputs([[1, 2, 3, 4], [5]], SPEC), ConfigError, "cannot be read as one array of examples")


def test_a_saved_model_export_says_nothing_of_its_temporary_folder(tmp_path, tiny_run):
    import logging

    import tensorflow as tf

    logger, heard = tf.get_logger(), []
    handler = logging.Handler()
    handler.emit = lambda record: heard.append(record.getMessage())
    level = logger.level
    logger.setLevel("INFO")  # (as in a notebook where absl logging is set up)
    logger.addHandler(handler)
    try:
        trainkit.export(tiny_run, formats=["saved_model"], out_dir=tmp_path / "out")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert not [line for line in heard if "Assets written" in line]
    assert logger.level == level


def test_one_name_alone_is_a_list_of_one_in_the_python_api(tmp_path, tiny_run):
    assert list(trainkit.export(tiny_run, formats="keras", out_dir=tmp_path / "out")["formats"]) == ["keras"]
    assert load_recipe("digits_mlp", configs="digits_mlp_smoke").description == load_recipe("digits_mlp", configs=["digits_mlp_smoke"]).description
    assert load_recipe("digits_mlp", overrides="trainer.epochs=3").trainer.epochs == 3
    _refused(lambda: load_recipe("digits_mlp", overrides=5), ConfigError, "overrides: give a list (or one item alone), got int 5")
    _refused(lambda: load_recipe("digits_mlp", overrides=[5]), ConfigError, "overrides: give KEY=VALUE texts or a mapping")
    _refused(lambda: load_recipe(None), ConfigError, "recipe: give a recipe name, a .py or YAML file, a Recipe or a dict, got NoneType")


# ------------------------------------------------------------- run directories as data


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"{not json", "cannot be read"),
        (b"[1, 2]", "not a valid inference description"),
        (b'{"task": "classification"}', "not a valid inference description"),
        (None, "input.shape"),
    ],
    ids=["bad-json", "a-list", "missing-keys", "wrong-type"],
)
def test_a_damaged_inference_json_is_one_line_for_predict(tmp_path, tiny_run, content, expected):
    from trainkit.serving.predict import predict

    run = _copy(tiny_run, tmp_path / "run")
    if content is None:
        spec = json.loads((run / "inference.json").read_text())
        spec["input"]["shape"] = "64"
        content = json.dumps(spec).encode()
    (run / "inference.json").write_bytes(content)
    line = _refused(lambda: predict(run, np.zeros((1, 64))), RunDirError, expected)
    assert str(run / "inference.json") in line


@pytest.mark.parametrize("content", [b"PK\x03\x04 half", b"not a zip at all"], ids=["truncated", "foreign"])
def test_a_damaged_model_keras_is_one_line_for_predict(tmp_path, tiny_run, content):
    from trainkit.serving.predict import predict

    run = _copy(tiny_run, tmp_path / "run")
    (run / "model.keras").write_bytes(content)
    _refused(lambda: predict(run, np.zeros((1, 64))), ConfigError, "damaged or truncated")


def test_metrics_lines_that_are_not_objects_are_skipped(tmp_path, tiny_run):
    run = _copy(tiny_run, tmp_path / "run")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('[1, 2]\n"text"\n3\n{"split": "epoch", "epoch": "x", "loss": 1}\n{"split": "epoch", "epoch": 9, "loss": [1]}\n')
    history = trainkit.load_run(run).history
    assert all(isinstance(v, int | float) for values in history.values() for v in values)


@pytest.mark.parametrize("content", [b"[1]", b'{"test": 3}', b'{"test": {"loss": "x"}}', b"{"], ids=["list", "flat", "text", "bad-json"])
def test_an_eval_json_of_the_wrong_shape_is_one_line_for_compare(tmp_path, tiny_run, content):
    run = _copy(tiny_run, tmp_path / "run")
    (run / "eval.json").write_bytes(content)
    line = _refused(lambda: trainkit.compare([run, tiny_run]), RunDirError, "is not trainkit's evaluation")
    assert str(run / "eval.json") in line


def test_a_symlinked_export_folder_is_refused_and_its_target_untouched(tmp_path, tiny_run):
    from trainkit.serving.export import export

    run = _copy(tiny_run, tmp_path / "run")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "export-final").symlink_to(elsewhere)
    _refused(lambda: export(run, formats=["keras"]), RunDirError, "symbolic link")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("verb", ["evaluate", "predict", "load_run", "export"])
def test_every_verb_refuses_a_run_directory_holding_a_link(tmp_path, tiny_run, verb):
    from trainkit.serving.export import export
    from trainkit.serving.predict import predict

    run = _copy(tiny_run, tmp_path / "run")
    (tmp_path / "victim").write_text("precious\n")
    (run / "eval.json").unlink()
    (run / "eval.json").symlink_to(tmp_path / "victim")
    calls = {
        "evaluate": lambda: api.evaluate(run),
        "predict": lambda: predict(run, np.zeros((1, 64))),
        "load_run": lambda: trainkit.load_run(run),
        "export": lambda: export(run, formats=["keras"], out_dir=tmp_path / "out"),
    }
    _refused(calls[verb], RunDirError, "holds a symbolic link")
    assert (tmp_path / "victim").read_text() == "precious\n"


def test_a_damaged_final_checkpoint_falls_back_to_the_newest_good_one(tmp_path, tiny_run, capsys):
    run = _copy(tiny_run, tmp_path / "run")
    for index in (run / "checkpoints" / "final").glob("*.index"):
        index.write_bytes(b"garbage")
    assert "loss" in api.evaluate(run, checkpoint="final")
    assert "checkpoints/final cannot be read back; using the newest good checkpoint" in capsys.readouterr().err


def test_a_unicode_checkpoint_name_is_one_line(tiny_run):
    _refused(lambda: api.evaluate(tiny_run, checkpoint="\u00b2"), ConfigError, "no checkpoint at")


def test_a_run_cannot_name_itself_as_its_source(tmp_path, tiny_run):
    from trainkit.models.pretrained import check_not_itself

    _refused(lambda: check_not_itself(str(tiny_run), tiny_run, field="model.source"), ConfigError, "this run's own directory")
    check_not_itself(str(tiny_run), tmp_path / "other", field="model.source")


@pytest.mark.parametrize("place", ["/proc/trainkit-run", "/sys/kernel/x", "/dev/shm/../x"])
def test_a_run_directory_under_a_kernel_file_system_is_refused(place):
    from trainkit.rundir import RunDir

    _refused(lambda: RunDir(place).check_place(), RunDirError, "is the kernel's")


def test_training_a_finished_run_again_keeps_its_measurements(tmp_path):
    recipe = load_recipe("digits_mlp", overrides=TINY)
    trainkit.train(recipe, run_dir=tmp_path / "run")
    first = json.loads((tmp_path / "run" / "run.json").read_text())
    trainkit.train(recipe, run_dir=tmp_path / "run")
    again = json.loads((tmp_path / "run" / "run.json").read_text())
    for key in ("steps_per_second", "train_seconds", "phases"):
        assert again[key] == first[key], key
    assert [s["steps"] for s in again["sessions"]] == [3, 0]


# --------------------------------------------------------------------- output paths


@pytest.mark.parametrize(
    "args, expected",
    [
        (["predict", "RUN", "in.csv", "-o", "missing/out.csv"], "the folder missing does not exist"),
        (["predict", "RUN", "in.csv", "-o", "."], "it is a folder"),
        (["export", "RUN", "-o", "a_file"], "a file is there"),
        (["plot", "RUN", "-o", "curves.xyz"], "'.xyz' is not an image format"),
        (["plot", "RUN", "-o", "missing/curves.png"], "does not exist"),
        (["predict", "RUN", "in.csv", "-o", "RUN/config.yaml"], "a file of the run directory"),
        (["predict", "RUN", "in.csv", "-o", "RUN/checkpoints/checkpoint"], "a file of the run directory"),
        (["plot", "RUN", "-o", "RUN/metrics.jsonl"], "not an image format"),
        (["export", "RUN", "-o", "RUN"], "it is a run directory"),
        (["export", "RUN", "-o", "RUN/checkpoints"], "holds no export"),
    ],
    ids=["predict-missing-folder", "predict-folder", "export-onto-file", "plot-format", "plot-missing-folder",
         "predict-onto-config", "predict-onto-checkpoint-list", "plot-onto-metrics", "export-onto-the-run", "export-onto-checkpoints"],
)
def test_output_paths_are_checked_before_any_work(tmp_path, tiny_run, capsys, args, expected):
    from trainkit.cli import main

    (tmp_path / "a_file").write_text("keep\n")
    (tmp_path / "in.csv").write_text(",".join(["0"] * 64) + "\n")
    before, run_before = sorted(p.name for p in tmp_path.iterdir()), _snapshot(tiny_run)
    assert main([a.replace("RUN", str(tiny_run)) for a in args]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: -o ") and expected in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == before and (tmp_path / "a_file").read_text() == "keep\n"
    assert _snapshot(tiny_run) == run_before


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_outputs_may_go_into_a_run_directory_as_new_files_of_their_own_kind(tmp_path, tiny_run):
    run = _copy(tiny_run, tmp_path / "run")
    (tmp_path / "in.csv").write_text(",".join(["0"] * 64) + "\n")
    for _ in range(2):  # a file of predictions replaced by the same command again
        assert cli("predict", str(run), "in.csv", "-o", str(run / "predictions.csv"), cwd=tmp_path).returncode == 0
    assert cli("export", str(run), "--format", "keras", "-o", str(run / "export-final"), cwd=tmp_path).returncode == 0
    assert cli("export", str(run), "--format", "keras", "-o", str(run / "export-final"), cwd=tmp_path).returncode == 0
    assert trainkit.load_run(run).status == "completed"


@pytest.mark.parametrize(
    "change, recurrent, formats, inputs",
    [
        ({}, False, "LiteRT, ONNX", "a CSV with the training columns"),
        ({"dtype": "string", "shape": []}, False, ".keras, SavedModel\n", "a CSV or .jsonl with the text column"),
        ({"series": {"columns": ["a"]}, "shape": [6, 1]}, True, ".keras, SavedModel\n", "a CSV of the series"),
        ({"image": {"channels": 1, "size": [8, 8], "resize": False}, "shape": [8, 8, 1]}, False, "LiteRT, ONNX", "a folder of images"),
    ],
    ids=["table", "text", "recurrent-series", "images"],
)
def test_what_to_do_next_names_the_exports_and_inputs_of_the_run(tmp_path, tiny_run, change, recurrent, formats, inputs):
    from trainkit.cli import next_steps

    spec = json.loads((tiny_run / "inference.json").read_text())
    spec["input"].update(change)
    (tmp_path / "inference.json").write_text(json.dumps(spec))
    shown = next_steps(tmp_path, recurrent=recurrent) + "\n"
    assert formats in shown and f"INPUT: {inputs}" in shown, shown


def test_a_run_json_list_edited_into_another_type_does_not_stop_a_resume(tmp_path, tiny_run):
    run = _copy(tiny_run, tmp_path / "run")
    status = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**status, "resumed_at": 5}))
    recipe = load_recipe("digits_mlp", overrides=["trainer.epochs=null", "trainer.steps=4", "trainer.progress=false", "export.formats=[keras]"])
    assert trainkit.train(recipe, run_dir=run).status == "completed"
    resumed = json.loads((run / "run.json").read_text())
    assert resumed["step"] == 4 and len(resumed["resumed_at"]) == 1


def test_a_smaller_budget_on_a_finished_run_evaluates_it_and_keeps_the_recipe_it_was_trained_with(tmp_path, tiny_run):
    run = _copy(tiny_run, tmp_path / "run")
    before = (json.loads((run / "run.json").read_text())["recipe_hash"], (run / "config.yaml").read_text())
    recipe = load_recipe("digits_mlp", overrides=["trainer.epochs=null", "trainer.steps=2", "trainer.progress=false", "export.formats=[keras]"])
    again = trainkit.train(recipe, run_dir=run)
    assert again.status == "completed" and trainkit.load_run(run).recipe.trainer.steps == 3  # what it trained
    after = json.loads((run / "run.json").read_text())
    assert (after["recipe_hash"], (run / "config.yaml").read_text()) == before and after["step"] == 3


def test_a_run_trained_on_past_its_final_model_refuses_final_until_it_ends_again(tmp_path, tiny_run):
    """A finished run resumed with a larger budget and killed keeps its earlier final/
    and model.keras: neither is used as if it were the run's end."""
    from trainkit.serving.predict import predict

    run = _copy(tiny_run, tmp_path / "run")
    (final,) = (run / "checkpoints" / "final").glob("ckpt-*.index")
    ended = int(final.name[5:-6])
    for part in final.parent.glob(f"ckpt-{ended}.*"):  # the killed resume's newer checkpoint
        shutil.copy(part, run / "checkpoints" / part.name.replace(f"ckpt-{ended}", f"ckpt-{ended + 100}"))
    x = np.zeros((1, 64))
    for call in (lambda: predict(run, x), lambda: api.evaluate(run, checkpoint="final"),
                 lambda: trainkit.export(run, formats=["keras"], out_dir=tmp_path / "out")):
        line = _refused(call, RunDirError, f"was trained on past its final model (step {ended})")
        assert f"newest checkpoint is step {ended + 100}" in line and f"or {ended} for the model of its earlier end" in line
    assert not (tmp_path / "out").exists()
    for checkpoint in ("last", str(ended)):
        assert predict(run, x, checkpoint=checkpoint).probabilities.shape == (1, 10)


def _can_mount_in_a_namespace() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs none /mnt"], capture_output=True)
    return probe.returncode == 0


def _in_small_disk(tmp_path: Path, command: list[str], *, fill: bool, read_only: bool = False) -> subprocess.CompletedProcess:
    """``trainkit COMMAND`` with ``tmp_path/disk`` a 64 KiB file system of its own (full, or read-only)."""
    disk = tmp_path / "disk"
    disk.mkdir(exist_ok=True)
    options = "size=64k" + (",ro" if read_only else "")
    filler = f"dd if=/dev/zero of={disk}/filler bs=1k count=80 2>/dev/null; " if fill else ""
    trainkit_cmd = " ".join([sys.executable, "-m", "trainkit.cli", *command])
    env = checkout_env()
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o {options} none {disk} && {filler}{trainkit_cmd}; code=$?; "
         f"ls -A {disk} >&2; exit $code"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )


@pytest.mark.skipif(not _can_mount_in_a_namespace(), reason="needs user + mount namespaces for a small tmpfs")
def test_predict_onto_a_full_disk_is_exit_5_with_nothing_left(tmp_path, tiny_run):
    from trainkit.training.disk_full import DISK_FULL_EXIT_CODE

    rows = "\n".join(",".join(["0"] * 64) for _ in range(2000))
    (tmp_path / "in.csv").write_text(rows + "\n")
    result = _in_small_disk(tmp_path, ["predict", str(tiny_run), "in.csv", "-o", "disk/out.csv"], fill=True)
    assert result.returncode == DISK_FULL_EXIT_CODE, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: the disk is full") and "out.csv" in errors[0]
    assert result.stderr.strip().splitlines()[-1] == "filler"  # nothing else on the disk


@pytest.mark.skipif(not _can_mount_in_a_namespace(), reason="needs user + mount namespaces for a small tmpfs")
def test_predict_onto_a_read_only_file_system_is_one_line(tmp_path, tiny_run):
    (tmp_path / "in.csv").write_text(",".join(["0"] * 64) + "\n")
    line = _one_line(_in_small_disk(tmp_path, ["predict", str(tiny_run), "in.csv", "-o", "disk/out.csv"], fill=False, read_only=True))
    assert "read-only file system" in line


@pytest.mark.slow
@pytest.mark.skipif(not _can_mount_in_a_namespace(), reason="needs user + mount namespaces for a small tmpfs")
def test_export_onto_a_full_disk_is_exit_5_with_nothing_left(tmp_path, tiny_run):
    from trainkit.training.disk_full import DISK_FULL_EXIT_CODE

    result = _in_small_disk(tmp_path, ["export", str(tiny_run), "--format", "keras", "-o", "disk/out"], fill=True)
    assert result.returncode == DISK_FULL_EXIT_CODE, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: the disk is full"), errors
    left = result.stderr.strip().splitlines()
    assert not any(".tmp" in name for name in left), left


def test_output_errors_from_the_command_line_are_one_line(tmp_path, tiny_run):
    line = _one_line(cli("plot", str(tiny_run), "-o", "curves.xyz", cwd=tmp_path))
    assert "'.xyz' is not an image format" in line
    line = _one_line(cli("predict", str(tiny_run), "in.csv", "-o", "missing/out.csv", cwd=tmp_path))
    assert "the folder missing does not exist" in line


# ------------------------------------------------------------------------ closed pipes


def test_a_closed_pipe_ends_show_quietly(tmp_path):
    env = checkout_env(quiet=False)
    result = subprocess.run(
        ["sh", "-c", f"{sys.executable} -m trainkit.cli show digits_cnn | head -1"],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )
    assert result.stdout.startswith("# digits_cnn") and result.stderr == "", result.stderr


def test_a_closed_pipe_never_fails_a_training(tmp_path):
    env = checkout_env()
    command = f"{sys.executable} -m trainkit.cli train digits_mlp trainer.epochs=3 --run-dir run; echo $? > code"
    result = subprocess.run(["sh", "-c", f"({command}) | head -1"], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert (tmp_path / "code").read_text().strip() == "0"
    status = json.loads((tmp_path / "run" / "run.json").read_text())
    assert status["status"] == "completed" and status["epoch"] == 3


def test_every_test_docs_security_names_exists():
    import re

    text = (ROOT / "docs" / "security.md").read_text()
    current, named = None, []
    for file, name in re.findall(r"`(test_\w+\.py)?(?:::(\w+))?`", text):
        current = file or current
        if name:
            named.append((current, name))
    assert len(named) > 20
    for file, name in named:
        assert f"def {name}(" in (ROOT / "tests" / file).read_text(), f"{file}::{name}"


def test_predict_on_a_folder_of_images_for_a_table_model_prints_one_line_only(tmp_path, tiny_run):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    result = run_cli("predict", str(tiny_run), "images", cwd=tmp_path, timeout=120, env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: images: a folder of images, but this run's model takes 64 values per example, not images"
    ], result.stderr


def test_quantizing_an_export_without_litert_is_one_line(tmp_path, tiny_run):
    _refused(lambda: trainkit.export(tiny_run, formats=["keras"], quantize="dynamic_range", out_dir=tmp_path / "out"),
             ConfigError, "quantizes the LiteRT model only, and the formats are keras; add --format tflite")
    assert not (tmp_path / "out").exists()


def test_a_converter_that_fails_is_one_line_and_leaves_no_export(tmp_path, tiny_run, monkeypatch):
    from trainkit.errors import ExportError
    from trainkit.serving import formats

    def broken(*args, **kwargs):
        raise RuntimeError("an op the converter cannot lower\nand the rest of its log")

    monkeypatch.setattr(formats, "write_onnx", broken)
    line = _refused(lambda: trainkit.export(tiny_run, formats=["onnx"], out_dir=tmp_path / "out"), ExportError,
                    "export.formats: onnx could not be written (RuntimeError: an op the converter cannot lower)")
    assert line.endswith("export keras and/or saved_model")
    assert not (tmp_path / "out" / "export.json").exists()


def test_exporting_again_into_a_folder_leaves_only_what_its_export_json_lists(tmp_path, tiny_run):
    out = tmp_path / "out"
    trainkit.export(tiny_run, formats=["keras", "onnx"], out_dir=out)
    (out / "notes.txt").write_text("mine\n")
    trainkit.export(tiny_run, formats=["keras"], checkpoint="last", out_dir=out)
    assert sorted(json.loads((out / "export.json").read_text())["formats"]) == ["keras"]
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.keras", "notes.txt"]
