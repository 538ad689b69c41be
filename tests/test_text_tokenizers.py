"""``data.text: wordpiece`` and ``sentencepiece``: KerasHub tokenizers made from a
vocabulary or model file, int32 ids padded with 0 to ``sequence_length``, the data's
``vocab_size`` from the tokenizer, the file's content kept in the run directory (a run
resumes and exports after the file is gone), exports that take raw strings, and a
missing, corrupt or too small tokenizer file refused in one line, exit 2, nothing written."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import cli
from test_text import _SERVE, recipe_file, sentence, write_reviews

import trainkit
from trainkit.data.pipeline import prepare
from trainkit.errors import ConfigError
from trainkit.recipe import DataSection


def texts(n: int = 64) -> list[str]:
    rng = random.Random(3)
    return [sentence(rng, i % 2) for i in range(n)]


def write_wordpiece_vocabulary(path: Path) -> list[str]:
    import keras_hub
    import tensorflow as tf

    vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
        tf.data.Dataset.from_tensor_slices(texts()), 60, lowercase=True, reserved_tokens=["[PAD]", "[UNK]"]
    )
    path.write_text("".join(f"{token}\n" for token in vocabulary), encoding="utf-8")
    return list(vocabulary)


def write_sentencepiece_model(path: Path, **ids: int) -> None:
    spm = pytest.importorskip("sentencepiece", reason="the sentencepiece package (to train a tiny model) is not installed")
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts()), model_writer=buffer, vocab_size=60,
        **({"pad_id": 0, "unk_id": 1, "bos_id": -1, "eos_id": -1} | ids), hard_vocab_limit=False, minloglevel=2,
    )
    path.write_bytes(buffer.getvalue())


def tokenized(tmp_path: Path, tokenizer: dict) -> DataSection:
    write_reviews(tmp_path / "reviews.csv")
    return DataSection.model_validate(
        {"source": {"type": "csv", "path": str(tmp_path / "reviews.csv"), "label": "sentiment"}, "text": tokenizer}
    )


def test_wordpiece_gives_int32_ids_padded_with_0_and_its_vocabulary_size(tmp_path):
    vocabulary = write_wordpiece_vocabulary(tmp_path / "vocab.txt")
    data = prepare(tokenized(tmp_path, {"type": "wordpiece", "vocabulary": str(tmp_path / "vocab.txt"), "sequence_length": 16}), seed=0)
    x, _ = data.examples("train", 1)[0]
    assert x.dtype == np.int32 and x.shape == (16,)
    assert x[0] > 1 and x[-1] == 0  # (a sentence of 8 words, then [PAD])
    assert data.info.vocab_size == len(vocabulary)
    assert data.text_step["vocabulary"] == vocabulary


def test_sentencepiece_gives_int32_ids_padded_with_0_and_its_vocabulary_size(tmp_path):
    write_sentencepiece_model(tmp_path / "sp.model")
    data = prepare(tokenized(tmp_path, {"type": "sentencepiece", "proto": str(tmp_path / "sp.model"), "sequence_length": 40}), seed=0)
    x, _ = data.examples("train", 1)[0]
    assert x.dtype == np.int32 and x.shape == (40,)
    assert x[0] > 0 and x[-1] == 0
    assert data.info.vocab_size == data.text_step["vocabulary_size"] > 2
    data.write_fitted(tmp_path)
    assert (tmp_path / "sentencepiece.model").read_bytes() == (tmp_path / "sp.model").read_bytes()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "the vocabulary has 0 token(s)"),
        (b"[PAD]\n[UNK]\n", "the vocabulary has 2 token(s)"),
        (b"the\n[PAD]\n[UNK]\n", "it must start with [PAD]"),
        (b"\x89PNG\r\n\x1a\n\0\0\0", "holds NUL bytes"),
        (b"caf\xe9\n", "not UTF-8 text"),
    ],
)
def test_a_missing_or_bad_wordpiece_vocabulary_is_one_line(tmp_path, content, message):
    if content is not None:
        (tmp_path / "vocab.txt").write_bytes(content)
    section = tokenized(tmp_path, {"type": "wordpiece", "vocabulary": str(tmp_path / "vocab.txt")})
    with pytest.raises(ConfigError, match="data.text.vocabulary: ") as err:
        prepare(section, seed=0)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_file_that_is_not_a_sentencepiece_model_is_one_line(tmp_path):
    (tmp_path / "sp.model").write_bytes(b"not a proto at all")
    section = tokenized(tmp_path, {"type": "sentencepiece", "proto": str(tmp_path / "sp.model")})
    with pytest.raises(ConfigError, match=r"data.text.proto: .*sp.model: not a SentencePiece model"):
        prepare(section, seed=0)


def test_a_sentencepiece_model_whose_id_0_is_the_unknown_piece_is_one_line(tmp_path):
    write_sentencepiece_model(tmp_path / "defaults.model", pad_id=-1, unk_id=0, bos_id=1, eos_id=2)  # the trainer's defaults
    with pytest.raises(ConfigError, match="id 0 is the unknown piece, and trainkit pads with id 0 and masks it; train the model with pad_id=0"):
        prepare(tokenized(tmp_path, {"type": "sentencepiece", "proto": str(tmp_path / "defaults.model"), "sequence_length": 8}), seed=0)


def test_a_bad_tokenizer_file_stops_a_run_before_anything_is_written(tmp_path):
    recipe_file(tmp_path)
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    for tokenizer in ("{type: wordpiece, vocabulary: vocab.txt}", "{type: sentencepiece, proto: missing.model}"):
        result = cli("train", "reviews.yaml", f"data.text={tokenizer}", "--run-dir", "run", cwd=tmp_path)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "data.text." in result.stderr and not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wordpiece", "sentencepiece"])
def test_a_tokenizer_run_exports_raw_strings_and_survives_its_file(tmp_path, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)  # (recipe paths are relative to the working directory)
    recipe_path = recipe_file(tmp_path)
    if kind == "wordpiece":
        file, size = "vocab.txt", len(write_wordpiece_vocabulary(tmp_path / "vocab.txt"))
        tokenizer = {"type": "wordpiece", "vocabulary": file, "sequence_length": 12}
    else:
        write_sentencepiece_model(tmp_path / "sp.model")
        file, size = "sp.model", 100  # (the embedding's input size: at least the model's ~60 pieces)
        tokenizer = {"type": "sentencepiece", "proto": file, "sequence_length": 24}
    recipe = json.loads(recipe_path.read_text())
    recipe["data"]["text"] = tokenizer
    recipe["model"]["layers"][0]["input_dim"] = size
    recipe_path.write_text(json.dumps(recipe))
    recipe = trainkit.load_recipe(str(recipe_path))
    run_dir = tmp_path / "run"
    run = trainkit.train(recipe, run_dir=run_dir)
    kept = run_dir / ("vocabulary.txt" if kind == "wordpiece" else "sentencepiece.model")
    assert kept.read_bytes() == (tmp_path / file).read_bytes()
    step = json.loads((run_dir / "inference.json").read_text())["preprocessing"][0]
    assert step["type"] == kind

    # The exports take the raw test sentences and agree with the trained model on trainkit's
    # token ids, in a process without trainkit.
    raw = np.concatenate([x.numpy() for x, _ in trainkit.dataset(recipe, "test", raw=True)])
    ids = np.concatenate([x.numpy() for x, _ in trainkit.dataset(recipe, "test")])
    assert ids.dtype == np.int32
    logits = run.model.predict(ids, verbose=0)
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    (tmp_path / "sentences.json").write_text(json.dumps([t.decode() for t in raw]))
    done = subprocess.run(
        [sys.executable, "-c", _SERVE, str(run_dir), str(tmp_path / "sentences.json"), str(tmp_path / "out.npz")],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = np.load(tmp_path / "out.npz")
    for name in ("keras", "saved_model"):
        np.testing.assert_allclose(outputs[name], expected, atol=1e-5, rtol=1e-6, err_msg=name)

    # The tokenizer's file gone, the run continues from its own copy.
    (tmp_path / file).unlink()
    again = cli("train", "reviews.yaml", "trainer.epochs=4", "--run-dir", "run", cwd=tmp_path)
    assert again.returncode == 0, again.stderr


def test_trainkit_data_statistics_know_the_file_tokenizers(tmp_path):
    from trainkit.data import text

    write_wordpiece_vocabulary(tmp_path / "vocab.txt")
    data = prepare(tokenized(tmp_path, {"type": "wordpiece", "vocabulary": str(tmp_path / "vocab.txt"), "sequence_length": 4}), seed=0)
    shown = text.statistics(data.text_step, np.array(["good", "zzzz " + " ".join(["good film was bad"] * 3)], dtype=object))
    assert shown["vocabulary_size"] == data.info.vocab_size and shown["examples"] == 2
    assert shown["cut_by_sequence_length"] == 0.5 and 0 < shown["out_of_vocabulary_rate"] < 0.5
