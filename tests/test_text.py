"""Text end to end: the text sources (``text_folder``, a CSV or JSON-lines text
column, TFDS text), ``data.text: vectorize`` fitted on the training split only and
reused when a run continues, exports that take raw strings (agreeing with the
trained model in a fresh process without trainkit), ``trainkit predict`` on text,
and the bad inputs, each one line and exit 2 with nothing written."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import cli

import trainkit
from trainkit.data.pipeline import prepare
from trainkit.errors import ConfigError
from trainkit.recipe import DataSection

POSITIVE = "good great fine lovely superb happy".split()
NEGATIVE = "bad awful poor sad terrible boring".split()
FILLER = "the a movie plot film was and it is".split()


def sentence(rng: random.Random, label: int, extra: tuple[str, ...] = ()) -> str:
    words = [rng.choice(POSITIVE if label else NEGATIVE) for _ in range(3)] + [rng.choice(FILLER) for _ in range(5)]
    rng.shuffle(words)
    return " ".join([*words, *extra]).capitalize() + "!"


def write_reviews(path: Path, n: int = 96, *, seed: int = 0, extra: tuple[str, ...] = ()) -> Path:
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "sentiment"])
        for i in range(n):
            writer.writerow([sentence(rng, i % 2, extra), "positive" if i % 2 else "negative"])
    return path


def write_text_folder(root: Path, per_class: int = 8) -> Path:
    rng = random.Random(1)
    for label, name in enumerate(["neg", "pos"]):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i}.txt").write_text(sentence(rng, label), encoding="utf-8")
    return root


def text_data(source: dict, **section) -> DataSection:
    return DataSection.model_validate({"source": source, "text": {"type": "vectorize", "max_tokens": 40, "sequence_length": 12}, **section})


# ------------------------------------------------------------------------ sources


def test_a_text_folder_gives_one_string_per_file_and_a_class_per_folder(tmp_path):
    root = write_text_folder(tmp_path / "reviews")
    section = DataSection.model_validate({"source": {"type": "text_folder", "path": str(root)}, "text": "vectorize"})
    data = prepare(section, seed=0)
    assert data.info.class_names == ["neg", "pos"] and data.info.num_classes == 2
    assert sum(data.info.sizes.values()) == 16
    raw, _ = next(iter(data.raw_dataset("train", batch_size=64)))
    assert raw.dtype.name == "string" and raw.shape.rank == 1  # one text per example, as written
    x, _ = data.examples("train", 1)[0]
    assert x.dtype == np.int64 and x.shape == (200,)  # token ids, padded to sequence_length


def test_a_file_that_is_not_text_is_named_or_skipped_and_counted(tmp_path):
    root = write_text_folder(tmp_path / "reviews")
    (root / "pos" / "bad.txt").write_bytes(b"caf\xe9 \xff\xfe")
    section = {"type": "text_folder", "path": str(root)}
    with pytest.raises(ConfigError, match=r"pos/bad.txt is not valid utf-8 text .*skip_bad_files"):
        prepare(text_data(section), seed=0)
    data = prepare(text_data({**section, "skip_bad_files": True}), seed=0)
    assert data.info.skipped == (str(root / "pos" / "bad.txt"),) and sum(data.info.sizes.values()) == 16
    latin = prepare(text_data({**section, "encoding": "latin-1"}), seed=0)  # every byte is latin-1
    assert sum(latin.info.sizes.values()) == 17


def test_jsonl_and_csv_text_columns_are_string_features(tmp_path):
    rng = random.Random(2)
    lines = [json.dumps({"id": i, "text": sentence(rng, i % 2), "label": i % 2}) for i in range(20)]
    (tmp_path / "reviews.jsonl").write_text("\n".join(lines) + "\n")
    data = prepare(text_data({"type": "jsonl", "path": str(tmp_path / "reviews.jsonl"), "label": "label", "features": ["text"]}), seed=0)
    assert data.info.num_classes == 2 and data.info.feature_shape == (12,)
    csv_data = prepare(text_data({"type": "csv", "path": str(write_reviews(tmp_path / "r.csv")), "label": "sentiment"}), seed=0)
    assert csv_data.info.class_names == ["negative", "positive"] and csv_data.info.feature_names == ["review"]


def test_tfds_text_datasets_give_strings_as_tfds_does(tmp_path):
    import tensorflow_datasets as tfds

    section = text_data({"type": "tfds", "name": "imdb_reviews", "splits": {"train": "train", "test": "test"}})
    with tfds.testing.mock_data(num_examples=12):
        data = prepare(section, seed=0)
        raw, _ = next(iter(data.raw_dataset("train", batch_size=4)))
        assert raw.dtype.name == "string"
        assert data.info.num_classes == 2 and data.info.feature_shape == (12,)
        assert 2 < data.info.vocab_size <= 40


# --------------------------------------------------------------------- vectorize


def test_the_vocabulary_is_fitted_on_the_training_split_only(tmp_path):
    train = write_reviews(tmp_path / "train.csv", seed=0)
    test = write_reviews(tmp_path / "test.csv", n=20, seed=1, extra=("zebra",))
    data = prepare(text_data({"type": "csv", "path": {"train": str(train), "test": str(test)}, "label": "sentiment"}), seed=0)
    vocabulary = data.text_step["vocabulary"]
    assert vocabulary[:2] == ["", "[UNK]"] and "good" in vocabulary
    assert "zebra" not in vocabulary  # a word of the test split only
    x, _ = data.examples("test", 1)[0]
    assert 1 in x  # zebra is out of the vocabulary there


def test_multi_hot_and_tf_idf_give_one_value_per_vocabulary_entry(tmp_path):
    source = {"type": "csv", "path": str(write_reviews(tmp_path / "r.csv")), "label": "sentiment"}
    for mode in ("multi_hot", "tf_idf"):
        section = DataSection.model_validate({"source": source, "text": {"type": "vectorize", "output_mode": mode, "max_tokens": 30}})
        data = prepare(section, seed=0)
        assert data.info.feature_shape == (data.info.vocab_size,)
        x, _ = data.examples("train", 1)[0]
        assert x.max() > 0 and (mode == "multi_hot" or x.dtype == np.float32)


# ------------------------------------------------- the cache of a tokenized stream

READS: dict[str, int] = {"n": 0}


@trainkit.register_dataset("test_text_counted_reviews", overwrite=True)
def counted_reviews(split: str):
    """48 reviews, streamed (a generator source); counts how often it is read."""
    READS["n"] += 1
    rng = random.Random(0)
    for i in range(48):
        yield sentence(rng, i % 2), i % 2


def streamed_reviews(**section):
    return prepare(text_data({"type": "generator", "name": "test_text_counted_reviews", "splits": ["train"]}, batch_size=8, shuffle_buffer=16, **section), seed=0)


def three_epochs(data) -> tuple[list, int]:
    """The training stream's batches over three epochs, and how often the source was read for them."""
    before = READS["n"]
    batches = list(data.training_stream().take(3 * data.steps_per_epoch()).as_numpy_iterator())
    return batches, READS["n"] - before


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_a_tokenized_stream_that_fits_is_cached_in_memory_and_gives_the_same_batches():
    from trainkit.data.pipeline import choose_cache

    cached = streamed_reviews()
    assert cached.cache_note.startswith("data cache: the tokenized split train (~")
    assert "is kept in memory after the first pass, within 25% of the" in cached.cache_note
    batches, reads = three_epochs(cached)
    assert reads == 1  # tokenized once, then read from memory

    off = streamed_reviews(cache="none")
    assert off.cache_note == "data cache: off (data.cache: none): the text is tokenized again every epoch"
    uncached, reads = three_epochs(off)
    assert reads >= 3
    assert_same_batches(batches, uncached)  # the cache changes nothing but speed

    too_big = streamed_reviews()
    choose_cache(too_big, available=4096)
    assert too_big.cache_note.startswith("data cache: the tokenized split train (~")
    assert "is not cached: it would pass 25% of the 4.0 KiB of memory available" in too_big.cache_note
    again, reads = three_epochs(too_big)
    assert reads >= 3
    assert_same_batches(batches, again)

    # Exact resume: the stream from epoch 1, batch 2 on is the uninterrupted one's tail.
    steps = cached.steps_per_epoch()
    resumed = list(streamed_reviews().training_stream(start_epoch=1, skip_batches=2).take(2 * steps - 2).as_numpy_iterator())
    assert_same_batches(batches[steps + 2 :], resumed)


def test_the_input_wait_hint_asks_for_a_cache_only_where_the_stream_has_none():
    from trainkit.training.input_wait import InputWait

    waiting = InputWait(fraction=0.8, step_seconds=0.010, compute_seconds=0.002, steps=100)  # 8 ms a step waiting
    cached = waiting.hint(streamed_reviews())  # the tokenized split kept in memory by default
    assert cached is not None and "data.cache" not in cached and "TFRecord" not in cached
    off = waiting.hint(streamed_reviews(cache="none"))
    assert "cache decoded examples (data.cache: memory, or a path for files; the recipe's data.cache: none turns it off)" in off
    assert "store preprocessed examples as TFRecord" in off  # a generator source: its examples are made every epoch


def test_tfds_text_is_tokenized_a_batch_at_a_time_before_its_cache_as_one_at_a_time_would():
    import tensorflow_datasets as tfds

    section = text_data({"type": "tfds", "name": "imdb_reviews", "splits": {"train": "train", "test": "test"}}, batch_size=4, shuffle_buffer=8)
    with tfds.testing.mock_data(num_examples=20):
        cached = prepare(section, seed=0)
        assert "splits train, test (~" in cached.cache_note and "are kept in memory" in cached.cache_note
        assert cached._on_batches_of("train", None, training=True) is not None
        uncached = prepare(section.model_copy(update={"cache": "none"}), seed=0)
        for epoch in (0, 1):
            assert_same_batches(
                list(cached.dataset("train", training=True, epoch=epoch).as_numpy_iterator()),
                list(uncached.dataset("train", training=True, epoch=epoch).as_numpy_iterator()),
            )
        assert_same_batches(list(cached.dataset("test").as_numpy_iterator()), list(uncached.dataset("test").as_numpy_iterator()))


# ----------------------------------------------------------- runs, exports, predict


def recipe_file(tmp_path: Path, **data) -> Path:
    write_reviews(tmp_path / "reviews.csv")
    recipe = {
        "name": "reviews",
        "data": {
            "source": {"type": "csv", "path": "reviews.csv", "label": "sentiment"},
            "text": {"type": "vectorize", "max_tokens": 40, "sequence_length": 12},
            "batch_size": 16,
            **data,
        },
        "model": {
            "type": "sequential",
            "layers": [
                {"type": "Embedding", "input_dim": 40, "output_dim": 8},
                "GlobalAveragePooling1D",
                {"type": "Dense", "units": 8, "activation": "relu"},
                {"type": "Dropout", "rate": 0.1},
                {"type": "Dense", "units": 8, "activation": "relu"},
                {"type": "Dense", "units": 2},
            ],
        },
        "loss": {"type": "SparseCategoricalCrossentropy", "from_logits": True},
        "metrics": ["accuracy"],
        "trainer": {"epochs": 3, "progress": False, "checkpoint": {"every_steps": 5}},
        "runtime": {"deterministic": True},
        "export": {"formats": ["keras", "saved_model"]},
    }
    path = tmp_path / "reviews.yaml"
    path.write_text(json.dumps(recipe))
    return path


# A fresh process without trainkit: both exports fed the raw sentences.
_SERVE = """
import json, sys, numpy as np, keras, tensorflow as tf
export, sentences, result = sys.argv[1:]
x = np.array(json.load(open(sentences)), dtype=object)
model = keras.models.load_model(export + "/model.keras", safe_mode=True)
served = tf.saved_model.load(export + "/saved_model").signatures["serving_default"]
outputs = served(features=tf.constant(x))
assert not [m for m in sys.modules if m.split(".")[0] == "trainkit"], "trainkit was imported"
np.savez(result, keras=model.predict(x, verbose=0), saved_model=outputs["probabilities"].numpy())
"""


@pytest.mark.slow
def test_exports_take_raw_strings_and_agree_with_the_trained_model(tmp_path):
    recipe = trainkit.load_recipe(str(recipe_file(tmp_path)))
    run = trainkit.train(recipe, run_dir=tmp_path / "run")
    raw = np.concatenate([x.numpy() for x, _ in trainkit.dataset(recipe, "test", raw=True)])
    ids = np.concatenate([x.numpy() for x, _ in trainkit.dataset(recipe, "test")])
    logits = run.model.predict(ids, verbose=0)
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    (tmp_path / "sentences.json").write_text(json.dumps([t.decode() for t in raw]))
    done = subprocess.run(
        [sys.executable, "-c", _SERVE, str(tmp_path / "run"), str(tmp_path / "sentences.json"), str(tmp_path / "out.npz")],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = np.load(tmp_path / "out.npz")
    for name in ("keras", "saved_model"):
        np.testing.assert_allclose(outputs[name], expected, atol=1e-5, rtol=1e-6, err_msg=name)
    vocabulary = (tmp_path / "run" / "vocabulary.txt").read_text().split("\n")[:-1]
    assert vocabulary == json.loads((tmp_path / "run" / "inference.json").read_text())["preprocessing"][0]["vocabulary"]

    # trainkit predict on a CSV with the text column (other columns around it).
    (tmp_path / "new.csv").write_text("id,review\n1,Great superb good film\n2,Awful boring bad plot\n")
    result = cli("predict", str(tmp_path / "run"), str(tmp_path / "new.csv"), "--output", str(tmp_path / "p.csv"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [r["input"] for r in rows] == ["2", "3"] and {r["class"] for r in rows} <= {"negative", "positive"}
    direct = trainkit.predict(tmp_path / "run", ["Great superb good film", "Awful boring bad plot"])
    np.testing.assert_allclose(direct.probabilities, [[float(rows[i][f"probability_{c}"]) for c in ("negative", "positive")] for i in range(2)], atol=1e-6)

    # A folder of .txt files, and a CSV without the text column (one line, nothing written).
    folder = write_text_folder(tmp_path / "texts", per_class=1)
    assert trainkit.predict(tmp_path / "run", folder).inputs == ["neg/0.txt", "pos/0.txt"]
    (tmp_path / "bad.csv").write_text("text\nhello\n")
    bad = cli("predict", str(tmp_path / "run"), str(tmp_path / "bad.csv"), "--output", str(tmp_path / "q.csv"), cwd=tmp_path)
    assert bad.returncode == 2 and "no column 'review'" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "q.csv").exists()
    # Text inputs are read as bounded UTF-8 lines from regular files, as numeric ones are.
    (tmp_path / "latin1.csv").write_bytes("review\ncaf\xe9 cr\xe8me\n".encode("latin-1"))
    (tmp_path / "nested.jsonl").write_text("[" * 100_000 + "]" * 100_000 + "\n")
    os.mkfifo(tmp_path / "fifo.csv")
    for bad_input, message in (("latin1.csv", "not UTF-8 text"), ("nested.jsonl", "nested too deeply"), ("fifo.csv", "not a regular file")):
        bad = cli("predict", str(tmp_path / "run"), str(tmp_path / bad_input), "--output", str(tmp_path / "q.csv"), cwd=tmp_path)
        assert bad.returncode == 2 and message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert not (tmp_path / "q.csv").exists()

    # LiteRT and ONNX refuse string inputs in one line.
    refused = cli("export", str(tmp_path / "run"), "--format", "onnx", cwd=tmp_path)
    assert refused.returncode == 2 and "ONNX has no string ops" in refused.stderr


def write_tfrecord_reviews(csv_path: Path, path: Path) -> None:
    """The reviews of a CSV written by :func:`write_reviews` as a TFRecord file of raw strings."""
    import tensorflow as tf

    with open(csv_path, newline="") as f, tf.io.TFRecordWriter(str(path)) as writer:
        for row in csv.DictReader(f):
            feature = {
                "review": tf.train.Feature(bytes_list=tf.train.BytesList(value=[row["review"].encode()])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(row["sentiment"] == "positive")])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


@pytest.mark.slow
@pytest.mark.parametrize("source", ["csv", "tfrecord"])
def test_a_killed_text_run_resumes_bit_identical_with_its_vocabulary(tmp_path, source):
    from _checkpoint_helpers import assert_same_weights, train, train_here

    recipe_file(tmp_path)
    base = ["reviews.yaml", "trainer.progress=true"]  # 3 epochs of 5 steps, a checkpoint every 5
    if source == "tfrecord":  # streamed: tokenized inside tf.data, then cached in memory
        write_tfrecord_reviews(tmp_path / "reviews.csv", tmp_path / "reviews.tfrecord")
        features = {"review": {"dtype": "string"}, "label": {"dtype": "int64"}}
        spec = {"type": "tfrecord", "files": "reviews.tfrecord", "inputs": "review", "label": "label", "features": features}
        base.append(f"data.source={json.dumps(spec)}")
    reference, run = tmp_path / "reference", tmp_path / "run"
    first = train_here(reference, base=base)
    assert first.returncode == 0, first.stderr
    cached = "data cache: the tokenized splits train, validation, test (~"
    assert (cached in first.stdout) == (source == "tfrecord")
    killed = train(run, base=base, faults=("kill-after-train:8",))
    assert killed.returncode == -9
    assert (run / "vocabulary.txt").read_text() == (reference / "vocabulary.txt").read_text()
    resumed = train_here(run, base=base)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "at step 5 " in resumed.stdout
    assert (cached in resumed.stdout) == (source == "tfrecord")
    assert_same_weights(run, reference)
    # predict takes the text under the name it had in the data: the CSV column, or the TFRecord key
    (tmp_path / "new.jsonl").write_text('{"review": "a superb, lovely film"}\n')
    predicted = cli("predict", str(run), "new.jsonl", cwd=tmp_path)
    assert predicted.returncode == 0 and len(predicted.stdout.splitlines()) == 2, predicted.stderr

    # The kept vocabulary is what a continued run reads: one cut to nothing is refused in one line.
    (run / "vocabulary.txt").write_text("\n[UNK]\n")
    again = train_here(run, *["trainer.epochs=4"], base=base)
    assert again.returncode == 2 and "vocabulary.txt: the vocabulary has 2 token(s)" in again.stderr


# ------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.source.features=[reveiw]", "data.source.features.0: no column 'reveiw'; did you mean 'review'?"),
        ("data.text=none", "data.text: the features are text (strings), which a model cannot take"),
        ("export.formats=[tflite]", "export.formats: tflite cannot take the raw text"),
        ("data.text.output_mode=bag", "data.text"),
    ],
)
def test_bad_text_input_is_one_line_exit_2_and_writes_nothing(tmp_path, override, message):
    recipe_file(tmp_path)
    result = cli("train", "reviews.yaml", override, "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_wrong_key_or_text_beside_numbers_is_one_line(tmp_path):
    (tmp_path / "r.jsonl").write_text(json.dumps({"text": "good film", "stars": 1.5, "label": 1}) + "\n")
    source = {"type": "jsonl", "path": str(tmp_path / "r.jsonl"), "label": "lable"}
    with pytest.raises(ConfigError, match=r"data.source.label: no key 'lable' .*did you mean 'label'"):
        prepare(text_data(source), seed=0)
    with pytest.raises(ConfigError, match=r"column 'text' holds text; a text column must be the only feature"):
        prepare(text_data({**source, "label": "label"}), seed=0)


def test_an_empty_text_folder_is_one_line_exit_2(tmp_path):
    (tmp_path / "reviews" / "pos").mkdir(parents=True)
    recipe_file(tmp_path, source={"type": "text_folder", "path": "reviews"})
    result = cli("train", "reviews.yaml", "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 2 and "no text files (.txt) in the class folders" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_trainkit_data_shows_tokens_next_to_the_raw_text(tmp_path):
    recipe_file(tmp_path)
    result = cli("data", "reviews.yaml", "-n", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "out of vocabulary 0.0% of words; cut by sequence_length 0.0% of examples" in result.stdout
    assert result.stdout.count("tokens [") == 2 and "text '" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", ["text_lstm", "text_transformer"])
def test_text_recipes_train_on_tfds_imdb_reviews_and_serve_raw_reviews(tmp_path, name):
    import keras
    import tensorflow_datasets as tfds

    recipe = trainkit.load_recipe(name, configs=[f"{name}_smoke"])
    with tfds.testing.mock_data(num_examples=24):
        run = trainkit.train(recipe, run_dir=tmp_path / "run")
    assert np.isfinite(run.metrics["test"]["loss"])
    if name == "text_transformer":
        import keras_hub  # noqa: F401  (its layers are in the model)
    model = keras.models.load_model(tmp_path / "run" / "model.keras")
    probabilities = model.predict(np.array(["A lovely film.", "Dull."], dtype=object), verbose=0)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
