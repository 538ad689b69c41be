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
    return step.get("vocabulary_size") or len(step["vocabulary"])


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

    if step["type"] == "vectorize":
        whole = vectorize_layer({**step, "output_mode": "int", "sequence_length": None, "idf_weights": None}, 1, "statistics")
        unknown_id = 1  # [UNK]
    elif step["type"] == "preset":  # (its tokenizer alone: the packer's special tokens are not words)
        from trainkit.data.preset_text import tokenizer_layer

        whole, unknown_id = tokenizer_layer(step)
    else:
        whole = (wordpiece_layer if step["type"] == "wordpiece" else sentencepiece_layer)({**step, "sequence_length": None}, 1, "statistics")
        unknown_id = step["vocabulary"].index("[UNK]") if step["type"] == "wordpiece" else _unknown_piece_id(whole)
    ids = whole(tf.constant(np.asarray(texts, dtype=object))) if len(texts) else np.zeros((0, 0), np.int64)
    if isinstance(ids, list):  # (KerasHub gives ragged ids eagerly as lists)
        ids = tf.ragged.constant(ids, dtype=tf.int64) if ids else np.zeros((0, 0), np.int64)
    ids = ids.to_tensor().numpy() if isinstance(ids, tf.RaggedTensor) else np.asarray(ids)
    lengths = [int(n) for n in np.count_nonzero(ids, axis=-1)]  # (0 is padding)
    tokens, unknown = sum(lengths), int(np.sum(ids == unknown_id))
    length = step["sequence_length"] - (2 if step["type"] == "preset" else 0)  # (a preset packs [start] ... [end])
    return {
        "vocabulary_size": vocabulary_size(step),
        "out_of_vocabulary_rate": unknown / tokens if tokens else 0.0,
        "cut_by_sequence_length": (sum(n > length for n in lengths) / len(lengths)) if length and lengths else 0.0,
        "examples": len(lengths),
    }


# ---------------------------------------------------- wordpiece and sentencepiece
#
# Tokenizers made from a file, not fitted: the file's content becomes the step (the
# wordpiece vocabulary, the sentencepiece proto in base64), so the tf.data pipeline and
# the exported model use one KerasHub layer, and a copy in the run directory
# (:data:`TOKENIZER_FILES`) is what a resumed run reads, whatever became of the file.

#: The copy of a tokenizer's file in the run directory, by ``data.text.type``.
TOKENIZER_FILES = {"wordpiece": VOCABULARY_FILE, "sentencepiece": "sentencepiece.model"}
WORDPIECE_SPECIAL = ("[PAD]", "[UNK]")
_TOKENIZER_FILE_LIMIT = 64 << 20  # (BERT's vocabulary is ~230 KiB, big sentencepiece models a few MiB)


def _tokenizer_file(spec: Any, run_dir: Path | None) -> tuple[bytes, str]:
    """The bytes of the tokenizer's file (the run directory's copy where a run has one)
    and where they came from, for error messages."""
    from trainkit.files import read_regular

    kept = Path(run_dir) / TOKENIZER_FILES[spec.type] if run_dir is not None else None
    if kept is not None and kept.is_file():
        path, where = kept, str(kept)
    else:
        name = "vocabulary" if spec.type == "wordpiece" else "proto"
        path, where = Path(spec.vocabulary if spec.type == "wordpiece" else spec.proto), f"{FIELD}.{name}: {spec.vocabulary if spec.type == 'wordpiece' else spec.proto}"
    try:
        return read_regular(path, _TOKENIZER_FILE_LIMIT), where
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"{where}: cannot be read ({err})") from None


def wordpiece_vocabulary(data: bytes, where: str) -> list[str]:
    """The tokens of a wordpiece vocabulary file; refused unless it is UTF-8 text, one
    token per line, ``[PAD]`` first (id 0 is padding) and ``[UNK]`` in it, with words besides."""
    if b"\0" in data:
        raise ConfigError(f"{where}: holds NUL bytes; expected a wordpiece vocabulary, one token per line (is it a binary file?)")
    try:
        vocabulary = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ConfigError(f"{where}: not UTF-8 text (byte {data[err.start]:#04x}); expected one token per line") from None
    if len(vocabulary) <= len(WORDPIECE_SPECIAL) or vocabulary[0] != "[PAD]" or "[UNK]" not in vocabulary:
        raise ConfigError(
            f"{where}: the vocabulary has {len(vocabulary)} token(s); it must start with [PAD] (id 0, padding), "
            "hold [UNK] and at least one word besides"
        )
    return vocabulary


def _sentencepiece_size(proto: bytes, where: str) -> int:
    """The vocabulary size of a sentencepiece model; a file that is not one is refused."""
    try:
        layer = sentencepiece_layer({"proto": proto, "sequence_length": None}, 1, "check")
        size = int(layer.vocabulary_size())
    except Exception:  # (TensorFlow's InternalError, or the proto library's own)
        raise ConfigError(f"{where}: not a SentencePiece model (a serialized model proto, the .model file its trainer writes)") from None
    if size < 2:
        raise ConfigError(f"{where}: the model has {size} piece(s); it needs padding (id 0) and at least one piece besides")
    if _unknown_piece_id(layer) == 0:  # (the trainer's default: unknown pieces would be padding, masked out)
        raise ConfigError(
            f"{where}: id 0 is the unknown piece, and trainkit pads with id 0 and masks it; train the model with "
            "pad_id=0 and another unk_id (e.g. --pad_id=0 --unk_id=1 --bos_id=-1 --eos_id=-1)"
        )
    return size


def tokenizer_step(spec: Any, run_dir: Path | None) -> dict[str, Any]:
    """The preprocessing step of ``wordpiece`` or ``sentencepiece``: the file's content and settings."""
    import base64

    data, where = _tokenizer_file(spec, run_dir)
    step: dict[str, Any] = {"type": spec.type, "field": FIELD, "sequence_length": spec.sequence_length}
    if spec.type == "wordpiece":
        vocabulary = wordpiece_vocabulary(data, where)
        return {**step, "lowercase": spec.lowercase, "vocabulary": vocabulary, "vocabulary_size": len(vocabulary)}
    return {**step, "proto": base64.b64encode(data).decode("ascii"), "vocabulary_size": _sentencepiece_size(data, where)}


def wordpiece_layer(step: dict[str, Any], rank: int, name: str):
    """KerasHub's ``WordPieceTokenizer``: int32 ids, padded with 0 (``[PAD]``) to ``sequence_length``."""
    import keras_hub

    return keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=list(step["vocabulary"]), sequence_length=step["sequence_length"], lowercase=step["lowercase"],
        oov_token="[UNK]", dtype="int32", name=name,
    )


def sentencepiece_layer(step: dict[str, Any], rank: int, name: str):
    """KerasHub's ``SentencePieceTokenizer``: int32 ids, padded with 0 to ``sequence_length``."""
    import base64

    import keras_hub

    proto = step["proto"] if isinstance(step["proto"], bytes) else base64.b64decode(step["proto"])
    return keras_hub.tokenizers.SentencePieceTokenizer(proto=proto, sequence_length=step["sequence_length"], dtype="int32", name=name)


def write_tokenizer_file(directory: Path, step: dict[str, Any]) -> None:
    """The run directory's copy of a tokenizer's file (what a resumed run reads)."""
    import base64

    from trainkit.files import write_bytes_atomic, write_text_atomic

    if step["type"] == "wordpiece":
        write_text_atomic(Path(directory) / VOCABULARY_FILE, "".join(f"{token}\n" for token in step["vocabulary"]))
    else:
        write_bytes_atomic(Path(directory) / TOKENIZER_FILES["sentencepiece"], base64.b64decode(step["proto"]))


def _unknown_piece_id(layer: Any) -> int:
    """A sentencepiece model's out-of-vocabulary id (-1 where it names none)."""
    try:
        return int(layer.token_to_id("<unk>"))
    except Exception:  # (a model whose unknown piece is named otherwise)
        return -1
