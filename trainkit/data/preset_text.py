"""``data.text: preset``: a KerasHub preset's own text preprocessor.

For ``model: {type: pretrained, source: PRESET}`` on string features, the text goes
through the preset's ``TextClassifierPreprocessor`` (``BertTextClassifierPreprocessor``
for a BERT preset): its tokenizer, packing with the preset's special tokens, and the
padding mask, giving the dict of ``token_ids``, ``segment_ids`` and ``padding_mask``
the backbone takes. As every tokenizer it is a preprocessing *step*
(:mod:`trainkit.data.transforms`): a JSON description holding the preprocessor's Keras
config and its tokenizer's asset files (the vocabulary) in base64, whose layer the
``tf.data`` pipeline applies and the inference model puts in front of the trained
model, so the exports take raw strings. The step is kept in the run directory
(:data:`STEP_FILE`), which a continued run reads, whatever became of the preset.
"""

from __future__ import annotations

import base64
import copy
import json
import tempfile
from pathlib import Path
from typing import Any

from trainkit.errors import ConfigError, first_line

FIELD = "data.text"
#: The run directory's copy of the step (what a continued run reads).
STEP_FILE = "text_preprocessor.json"
_STEP_LIMIT = 64 << 20  # (a BERT vocabulary is ~230 KiB, large sentencepiece models a few MiB)
_WAY_OUT = (
    "set data.text to a tokenizer of your own (vectorize, wordpiece, sentencepiece), "
    "or data.text: none for data that is token ids already"
)


def preset_step(spec: Any, run_dir: Path | None) -> dict[str, Any]:
    """The step of ``spec`` (a ``PresetText`` whose ``source`` is set): the run
    directory's copy where the run has one, else the preset's preprocessor."""
    kept = Path(run_dir) / STEP_FILE if run_dir is not None else None
    if kept is not None and kept.is_file():
        return read_step(kept)
    return describe(load_preprocessor(spec.source, spec.sequence_length), spec.source)


def load_preprocessor(source: str, sequence_length: int | None):
    """The preset's ``TextClassifierPreprocessor``, its ``sequence_length`` fitted to the backbone."""
    try:
        import keras_hub
    except ImportError:
        raise ConfigError(f"{FIELD}: {source} is a KerasHub preset; install the hub extra (pip install -e .[hub])") from None
    try:
        preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(source)
    except Exception as err:  # (no tokenizer saved, a backbone without a classifier preprocessor, ...)
        raise ConfigError(
            f"{FIELD}: the KerasHub preset {source} gives no text classifier preprocessor "
            f"({first_line(err)[:160]}); {_WAY_OUT}"
        ) from None
    longest = _max_sequence_length(source)
    if sequence_length is not None and sequence_length < 3:
        raise ConfigError(f"{FIELD}.sequence_length: {sequence_length} leaves no room for a token between the start and end tokens; at least 3")
    if sequence_length is not None:
        if longest is not None and sequence_length > longest:
            raise ConfigError(
                f"{FIELD}.sequence_length: {sequence_length} is longer than the preset's backbone takes "
                f"(max_sequence_length {longest} in {source}/config.json)"
            )
        preprocessor.sequence_length = sequence_length
    elif longest is not None and preprocessor.sequence_length > longest:
        preprocessor.sequence_length = longest
    return preprocessor


def _max_sequence_length(source: str) -> int | None:
    """The backbone's ``max_sequence_length`` of a local preset (None where it names none)."""
    path = Path(source) / "config.json"
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("config", {}).get("max_sequence_length")
    except (OSError, ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int) else None


def describe(preprocessor, source: str) -> dict[str, Any]:
    """The step of a loaded preprocessor: its tokenizer's Keras config and asset files
    (the vocabulary), the ids of its special tokens and the sequence length."""
    import keras
    import keras_hub

    base = keras_hub.models.TextClassifierPreprocessor
    kind = type(preprocessor)
    tokenizer = preprocessor.tokenizer
    ids = [getattr(tokenizer, f"{name}_token_id", None) for name in ("start", "end", "pad")]
    if kind.build is not base.build or kind.call is not base.call or None in ids:
        # (RoBERTa's and others' packing differs: their own layer cannot go into a saved
        # model that loads without trainkit, see preset_layer)
        raise ConfigError(
            f"{FIELD}: the preset {source} preprocesses text with {kind.__name__}, which trainkit cannot export "
            f"(it packs one text as [start] tokens [end] only, as BERT's preprocessor does); {_WAY_OUT}"
        )
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer.save_assets(scratch)
        assets = {p.name: base64.b64encode(p.read_bytes()).decode("ascii") for p in sorted(Path(scratch).iterdir()) if p.is_file()}
    start, end, pad = (int(i) for i in ids)
    return {
        "type": "preset",
        "field": FIELD,
        "source": str(source),
        "preprocessor": kind.__name__,
        "tokenizer": keras.saving.serialize_keras_object(tokenizer),
        "assets": assets,
        "start_id": start,
        "end_id": end,
        "pad_id": pad,
        "sequence_length": int(preprocessor.sequence_length),
        "vocabulary_size": int(tokenizer.vocabulary_size()),
    }


def _tokenizer(step: dict[str, Any], sequence_length: int | None):
    """The step's KerasHub tokenizer, its assets loaded (ids padded to ``sequence_length``)."""
    import keras
    import keras_hub  # noqa: F401  (registers the tokenizer's class)

    config = copy.deepcopy(step["tokenizer"])
    config["config"]["sequence_length"] = sequence_length
    tokenizer = keras.saving.deserialize_keras_object(config)
    with tempfile.TemporaryDirectory() as scratch:
        for file, data in step["assets"].items():
            (Path(scratch) / Path(file).name).write_bytes(base64.b64decode(data))
        tokenizer.load_assets(scratch)
    return tokenizer


def preset_layer(step: dict[str, Any], rank: int, name: str):
    """The preprocessor of a step as a small Keras model: raw strings in, the dict of
    ``token_ids`` (``[start] tokens [end]``, padded), ``segment_ids`` (0) and
    ``padding_mask`` out -- what the preset's ``TextClassifierPreprocessor`` gives for one text.

    Made of the preset's tokenizer and ``keras.ops``, not of the preprocessor layer itself:
    a saved model rebuilds its graph before it loads the tokenizer's vocabulary, and the
    tokenizer alone can be called without one (the preprocessor cannot), so ``model.keras``
    loads with plain Keras and KerasHub.
    """
    import keras
    from keras import ops

    length = int(step["sequence_length"])
    tokenizer = _tokenizer(step, length - 2)  # (room for the start and end tokens)
    texts = keras.Input((), dtype="string", name=f"{name}_text")
    ids = tokenizer(texts)
    count = ops.sum(ops.cast(ops.not_equal(ids, step["pad_id"]), "int32"), axis=1, keepdims=True)
    column = ops.ones_like(ids[:, :1])
    token_ids = ops.concatenate([column * step["start_id"], ids, column * step["pad_id"]], axis=1)
    position = ops.cumsum(ops.ones_like(token_ids), axis=1) - 1
    token_ids = ops.where(ops.equal(position, count + 1), step["end_id"], token_ids)
    outputs = {
        "token_ids": token_ids,
        "segment_ids": ops.zeros_like(token_ids),
        "padding_mask": ops.less_equal(position, count + 1),
    }
    return keras.Model(texts, outputs, name=name)


def tokenizer_layer(step: dict[str, Any]):
    """The step's tokenizer alone (ids without packing or padding), and its unknown-token id."""
    tokenizer = _tokenizer(step, None)
    unknown = -1
    for token in ("[UNK]", "<unk>"):
        try:
            unknown = int(tokenizer.token_to_id(token))
            break
        except Exception:  # (a vocabulary without this name for its unknown token)
            continue
    return tokenizer, unknown


# ---------------------------------------------------------------- run directory


def write_step(directory: Path, step: dict[str, Any]) -> None:
    """The run directory's copy of the step."""
    from trainkit.files import write_json_atomic

    write_json_atomic(Path(directory) / STEP_FILE, step)


def read_step(path: Path) -> dict[str, Any]:
    """A run's kept step, checked: a damaged file is one line."""
    from trainkit.files import read_regular

    try:
        step = json.loads(read_regular(path, _STEP_LIMIT).decode("utf-8"))
        ok = (
            step.get("type") == "preset" and isinstance(step.get("assets"), dict)
            and str(step.get("tokenizer", {}).get("registered_name", "")).startswith("keras_hub>")
        )
    except (OSError, ValueError, AttributeError) as err:
        raise ConfigError(f"{path}: this run's copy of its text preprocessor cannot be read ({first_line(err)[:160]})") from None
    if not ok:
        raise ConfigError(f"{path}: not a KerasHub text preprocessor step (damaged?); put model.source back and remove the file")
    return step
