"""Fine-tuning a KerasHub backbone from a local preset the test makes (never the network)."""

from __future__ import annotations

import json
import os
import shutil
import textwrap

import pytest
from conftest import cli

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


@pytest.mark.slow
def test_the_hub_text_classifier_recipe_trains_offline_on_a_tiny_preset_and_its_handle_fails_fast(tmp_path):
    import subprocess
    import sys
    import time

    from conftest import ROOT

    preset = tmp_path / "presets" / "hub_text_tiny"
    made = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "hub_text_classifier.py"), "--make-tiny-preset", str(preset)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert made.returncode == 0, made.stderr
    assert (preset / "config.json").is_file() and (preset / "metadata.json").is_file()

    smoke = ("hub_text_classifier", "-c", "hub_text_classifier_smoke", f"model.source={preset}")
    validated = cli("validate", *smoke, cwd=tmp_path)
    assert validated.returncode == 0, validated.stderr
    counts = dict(line.strip().split(": ", 1) for line in validated.stdout.splitlines() if "_parameters:" in line)
    assert 0 < int(counts["trainable_parameters"]) < int(counts["total_parameters"]) / 5  # LoRA: a few factors train

    trained = cli("train", *smoke, "--run-dir", "run", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    metrics = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0

    # The recipe's own source is an online handle: offline it fails at once, in one line.
    started = time.monotonic()
    offline = cli("train", "hub_text_classifier", "--run-dir", "online", cwd=tmp_path, env={"TRAINKIT_OFFLINE": "1"})
    assert offline.returncode == 2, offline.stderr
    assert time.monotonic() - started < 60  # (the interpreter's start included; the check itself is immediate)
    message = offline.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert "kaggle://keras/bert/keras/bert_tiny_en_uncased" in message and "save_to_preset" in message
    assert not (tmp_path / "online").exists()
