"""Text to numbers: ``data.text``, one tokenizer for the string features.

``vectorize`` is Keras's ``TextVectorization``. Its vocabulary is adapted on the
training split only (:func:`fit_vocabulary`) and then becomes a preprocessing
*step* like any other deterministic transform (:mod:`trainkit.data.transforms`):
a JSON description holding the vocabulary, whose Keras layer (:func:`vectorize_layer`)
the ``tf.data`` pipeline applies and the inference model puts in front of the
trained model, so an export takes raw strings. The vocabulary is also written to
the run directory (:data:`VOCABULARY_FILE`, one token per line) and a resumed
run reads it back instead of adapting again.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from trainkit.errors import ConfigError

VOCABULARY_FILE = "vocabulary.txt"
FIELD = "data.text"


def _standardize(name: str) -> str | None:
    return None if name == "none" else name


def fit_vocabulary(spec: Any, batches: Iterable[np.ndarray]) -> dict[str, Any]:
    """The vocabulary (and tf-idf weights) ``spec`` learns from the training texts."""
    import keras
    import tensorflow as tf

    layer = keras.layers.TextVectorization(
        max_tokens=spec.max_tokens, standardize=_standardize(spec.standardize), ngrams=spec.ngrams, output_mode=spec.output_mode
    )
    texts = [np.asarray(batch).reshape(-1) for batch in batches]
    if not texts or not sum(len(t) for t in texts):
        raise ConfigError(f"{FIELD}: the training split holds no text to learn a vocabulary from")
    layer.adapt(tf.data.Dataset.from_tensor_slices(np.concatenate(texts)).batch(1024))
    fitted = {"vocabulary": [str(token) for token in layer.get_vocabulary()]}
    if spec.output_mode == "tf_idf":
        weights: dict[str, Any] = {}
        layer.save_own_variables(weights)  # (the idf weights, out-of-vocabulary first)
        fitted["idf_weights"] = [float(w) for w in np.asarray(weights["idf_weights"])]
    return fitted


def check_vocabulary(vocabulary: list[str], spec: Any, where: str) -> None:
    """A vocabulary too small for its special tokens (padding, out-of-vocabulary) is refused."""
    special = ["", "[UNK]"] if spec.output_mode == "int" else ["[UNK]"]
    if len(vocabulary) <= len(special) or vocabulary[: len(special)] != special:
        raise ConfigError(
            f"{where}: the vocabulary has {len(vocabulary)} token(s); it must start with its special tokens "
            f"{special} and hold at least one word after them"
        )


def vectorize_step(spec: Any, fitted: dict[str, Any]) -> dict[str, Any]:
    """The preprocessing step of ``vectorize``: the layer's settings and its vocabulary."""
    check_vocabulary(fitted["vocabulary"], spec, FIELD)
    return {
        "type": "vectorize",
        "field": FIELD,
        "standardize": spec.standardize,
        "ngrams": spec.ngrams,
        "output_mode": spec.output_mode,
        "sequence_length": spec.sequence_length if spec.output_mode == "int" else None,
        "vocabulary": list(fitted["vocabulary"]),
        "idf_weights": fitted.get("idf_weights"),
    }


def vectorize_layer(step: dict[str, Any], rank: int, name: str):
    """The ``TextVectorization`` layer of a step (stock Keras: ``model.keras`` loads without trainkit)."""
    import keras

    return keras.layers.TextVectorization(
        max_tokens=None if step["output_mode"] == "int" else len(step["vocabulary"]),
        standardize=_standardize(step["standardize"]),
        ngrams=step["ngrams"],
        output_mode=step["output_mode"],
        output_sequence_length=step["sequence_length"],
        vocabulary=step["vocabulary"],
        idf_weights=step["idf_weights"],
        name=name,
    )


def vocabulary_size(step: dict[str, Any]) -> int:
    return len(step["vocabulary"])


# ---------------------------------------------------------------- run directory


def write_vocabulary(directory: Path, step: dict[str, Any]) -> None:
    """``vocabulary.txt`` in the run directory: one token per line, padding first."""
    from trainkit.files import write_text_atomic

    write_text_atomic(Path(directory) / VOCABULARY_FILE, "".join(f"{token}\n" for token in step["vocabulary"]))


def read_vocabulary(directory: Path | None, spec: Any) -> dict[str, Any] | None:
    """The vocabulary a run already fitted (None where it has none: a new run)."""
    if directory is None or spec.output_mode == "tf_idf":  # (tf-idf weights are fitted again, as deterministically)
        return None
    path = Path(directory) / VOCABULARY_FILE
    if not path.is_file():
        return None
    vocabulary = path.read_text(encoding="utf-8").split("\n")[:-1]
    check_vocabulary(vocabulary, spec, str(path))
    return {"vocabulary": vocabulary}


# ---------------------------------------------------------------- inspection


def statistics(step: dict[str, Any], texts: np.ndarray) -> dict[str, Any]:
    """What ``trainkit data`` shows of a tokenizer on some raw texts: the vocabulary
    size, the share of words out of the vocabulary, and the share of examples cut by
    ``sequence_length``."""
    import tensorflow as tf

    whole = vectorize_layer({**step, "output_mode": "int", "sequence_length": None, "idf_weights": None}, 1, "statistics")
    ids = whole(tf.constant(np.asarray(texts, dtype=object))).numpy() if len(texts) else np.zeros((0, 0), np.int64)
    lengths = [int(n) for n in np.count_nonzero(ids, axis=-1)]  # (0 is padding)
    tokens, unknown = sum(lengths), int(np.sum(ids == 1))  # (1 is [UNK])
    length = step["sequence_length"]
    return {
        "vocabulary_size": vocabulary_size(step),
        "out_of_vocabulary_rate": unknown / tokens if tokens else 0.0,
        "cut_by_sequence_length": (sum(n > length for n in lengths) / len(lengths)) if length and lengths else 0.0,
        "examples": len(lengths),
    }
