"""Fine-tuning a KerasHub backbone from a local preset the test makes (never the network)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, checkout_env, cli

import trainkit

pytest.importorskip("keras_hub")

RECIPE = '''
"""A text classifier on a tiny random BERT preset, with LoRA."""
import numpy as np

import trainkit


@trainkit.register_dataset("tiny_tokens", overwrite=True)
def tiny_tokens():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 60, (96, 8)).astype("int32")
    features = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)}
    return features, (ids[:, 0] % 2).astype("int32")


def recipe():
    return {
        "name": "text_lora",
        "data": {"source": {"type": "arrays", "name": "tiny_tokens"}, "batch_size": 16},
        "model": {"type": "pretrained", "source": PRESET, "head": "replace", "lora_rank": 2},
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "trainer": {"steps": 3, "progress": False},
    }
'''


@pytest.mark.slow
def test_lora_on_a_local_preset_trains_few_parameters_and_the_run_outlives_the_preset(tmp_path):
    import keras_hub

    preset = tmp_path / "preset"
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=8
    )
    backbone.save_to_preset(str(preset))
    recipe = tmp_path / "text_lora.py"
    recipe.write_text(textwrap.dedent(RECIPE).replace("PRESET", repr(str(preset))))

    validated = cli("validate", str(recipe), cwd=tmp_path)
    assert validated.returncode == 0, validated.stderr
    counts = dict(
        line.strip().split(": ", 1) for line in validated.stdout.splitlines() if "_parameters:" in line
    )
    # LoRA leaves the backbone's kernels frozen: the rank-2 factors, biases and the head train.
    assert int(counts["trainable_parameters"]) < int(counts["total_parameters"]) / 5
    assert "lora_kernel_a: x1" in validated.stdout

    run = tmp_path / "run"
    trained = cli("train", str(recipe), "--run-dir", str(run), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    shutil.rmtree(preset)
    # (--recipe: the recipe registers its dataset; a run directory never imports it by itself)
    evaluated = cli("eval", str(run), "--split", "test", "--recipe", str(recipe), cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    expected = json.loads((run / "eval.json").read_text())["test"]
    assert json.loads(evaluated.stdout)["test"] == pytest.approx(expected)


def make_tiny_preset(directory: Path) -> Path:
    made = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "hub_text_classifier.py"), "--make-tiny-preset", str(directory)],
        capture_output=True, text=True, timeout=300,
        env=checkout_env(),
    )
    assert made.returncode == 0, made.stderr
    return directory


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory) -> Path:
    return make_tiny_preset(tmp_path_factory.mktemp("presets") / "hub_text_tiny")


@pytest.mark.slow
def test_the_tiny_preset_has_a_real_wordpiece_vocabulary_and_its_preprocessor_is_the_default(tiny_preset, tmp_path):
    from pydoc_data.topics import topics

    from trainkit.data.pipeline import prepare
    from trainkit.errors import ConfigError
    from trainkit.models.pretrained import data_section

    assert (tiny_preset / "config.json").is_file() and (tiny_preset / "tokenizer.json").is_file()
    vocabulary = (tiny_preset / "assets" / "tokenizer" / "vocabulary.txt").read_text().split("\n")
    assert vocabulary[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and len(vocabulary) > 500
    # Words and word pieces of the text it was computed from (Python's help topics).
    assert {"the", "statement", "function", "##s"} <= set(vocabulary)
    assert "statement" in topics["for"]

    recipe = trainkit.load_recipe("hub_text_classifier", configs=["hub_text_classifier_smoke"])
    recipe = trainkit.load_recipe(recipe, overrides={"model.source": str(tiny_preset), "data.text": None})  # (unset: the default)
    data = prepare(data_section(recipe), seed=0)
    assert data.text_step["type"] == "preset" and data.text_step["preprocessor"] == "BertTextClassifierPreprocessor"
    x, _ = data.sample_batch(2)
    assert sorted(x) == ["padding_mask", "segment_ids", "token_ids"] and x["token_ids"].shape == (2, 128)
    # The preset's own preprocessor gives the same ids and mask.
    import keras_hub

    texts, _ = next(iter(data.raw_dataset("train", batch_size=2)))
    own = keras_hub.models.TextClassifierPreprocessor.from_preset(str(tiny_preset), sequence_length=128)(texts)
    for key in ("token_ids", "padding_mask", "segment_ids"):
        np.testing.assert_array_equal(np.asarray(own[key]), np.asarray(x[key]), err_msg=key)

    # data.text: none turns it off: raw strings are then refused, in one line.
    with pytest.raises(ConfigError, match="data.text: the features are text"):
        prepare(data_section(trainkit.load_recipe(recipe, overrides={"data.text": "none"})), seed=0)
    too_long = trainkit.load_recipe(recipe, overrides={"data.text": {"type": "preset", "sequence_length": 512}})
    with pytest.raises(ConfigError, match="longer than the preset's backbone takes"):
        prepare(data_section(too_long), seed=0)

    # A preset whose tokenizer is missing, or whose vocabulary is damaged: one line.
    broken = tmp_path / "broken"
    shutil.copytree(tiny_preset, broken)
    (broken / "tokenizer.json").unlink()
    elsewhere = trainkit.load_recipe(recipe, overrides={"model.source": str(broken)})
    with pytest.raises(ConfigError, match=r"data.text: the KerasHub preset .*broken gives no text classifier preprocessor") as err:
        prepare(data_section(elsewhere), seed=0)
    assert "\n" not in str(err.value)
    shutil.copy(tiny_preset / "tokenizer.json", broken / "tokenizer.json")
    (broken / "assets" / "tokenizer" / "vocabulary.txt").write_text("[PAD]\n")
    with pytest.raises(ConfigError, match=r"gives no text classifier preprocessor") as err:
        prepare(data_section(elsewhere), seed=0)
    assert "\n" not in str(err.value)


_SERVE = """
import json, sys, numpy as np, keras, tensorflow as tf
import keras_hub  # (the tokenizer in the exported model is KerasHub's)
export, sentences, result = sys.argv[1:]
x = np.array(json.load(open(sentences)), dtype=object)
model = keras.models.load_model(export + "/model.keras", safe_mode=True)
served = tf.saved_model.load(export + "/saved_model").signatures["serving_default"]
outputs = served(features=tf.constant(x))
assert not [m for m in sys.modules if m.split(".")[0] == "trainkit"], "trainkit was imported"
np.savez(result, keras=model.predict(x, verbose=0), eager=np.asarray(model(tf.constant(x))), saved_model=outputs["probabilities"].numpy())
"""


@pytest.mark.slow
def test_the_hub_text_classifier_recipe_trains_on_raw_strings_and_serves_them(tiny_preset, tmp_path):
    import time

    smoke = ("hub_text_classifier", "-c", "hub_text_classifier_smoke", f"model.source={tiny_preset}")
    validated = cli("validate", *smoke, cwd=tmp_path)
    assert validated.returncode == 0, validated.stderr
    counts = dict(line.strip().split(": ", 1) for line in validated.stdout.splitlines() if "_parameters:" in line)
    assert 0 < int(counts["trainable_parameters"]) < int(counts["total_parameters"]) / 5  # LoRA: a few factors train

    run = tmp_path / "run"
    recipe = trainkit.load_recipe("hub_text_classifier", configs=["hub_text_classifier_smoke"])
    recipe = trainkit.load_recipe(recipe, overrides={"model.source": str(tiny_preset)})
    trained = trainkit.train(recipe, run_dir=run)
    assert 0.0 <= trained.metrics["test"]["accuracy"] <= 1.0
    step = json.loads((run / "inference.json").read_text())["preprocessing"][0]
    assert step["type"] == "preset" and json.loads((run / "text_preprocessor.json").read_text()) == step

    # The exports take the raw test paragraphs and agree with the trained model on
    # trainkit's pipeline, in a process without trainkit.
    raw = np.concatenate([x.numpy() for x, _ in trainkit.dataset(recipe, "test", raw=True)])
    piped = list(trainkit.dataset(recipe, "test"))
    logits = np.concatenate([trained.model.predict(x, verbose=0) for x, _ in piped])
    (tmp_path / "texts.json").write_text(json.dumps([t.decode() for t in raw]))
    done = subprocess.run(
        [sys.executable, "-c", _SERVE, str(run), str(tmp_path / "texts.json"), str(tmp_path / "out.npz")],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = np.load(tmp_path / "out.npz")
    for name in ("keras", "eager", "saved_model"):
        np.testing.assert_allclose(outputs[name], logits, atol=1e-5, rtol=1e-6, err_msg=name)  # (softmax head: probabilities)

    # The preset gone, the run continues from its own copies (source model and preprocessor).
    moved = tiny_preset.with_name("moved")
    tiny_preset.rename(moved)
    try:
        again = cli("train", *smoke, "trainer.epochs=3", "--run-dir", str(run), cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        (tmp_path / "texts").mkdir()
        for i, text in enumerate(raw[:3]):
            (tmp_path / "texts" / f"{i}.txt").write_bytes(text)
        predicted = cli("predict", str(run), str(tmp_path / "texts"), "--output", str(tmp_path / "p.csv"), cwd=tmp_path)
        assert predicted.returncode == 0, predicted.stderr
    finally:
        moved.rename(tiny_preset)
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("input,class") and "probability_string-methods" in rows[0]

    # The recipe's own source is an online handle: offline it fails at once, in one line.
    started = time.monotonic()
    offline = cli("train", "hub_text_classifier", "--run-dir", "online", cwd=tmp_path, env={"TRAINKIT_OFFLINE": "1"})
    assert offline.returncode == 2, offline.stderr
    assert time.monotonic() - started < 60  # (the interpreter's start included; the check itself is immediate)
    message = offline.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert "kaggle://keras/bert/keras/bert_tiny_en_uncased" in message and "save_to_preset" in message
    assert not (tmp_path / "online").exists()
