"""Fine-tune a KerasHub BERT backbone from a preset, with LoRA, as a classifier of raw text.

Run:      trainkit train hub_text_classifier       (needs the network: KerasHub fetches
          kaggle://keras/bert/keras/bert_tiny_en_uncased)
Offline:  on a machine with network run
            python -c "import keras_hub as h; p='kaggle://keras/bert/keras/bert_tiny_en_uncased'; \
              h.models.Backbone.from_preset(p).save_to_preset('presets/bert_tiny_en_uncased'); \
              h.models.Tokenizer.from_preset(p).save_to_preset('presets/bert_tiny_en_uncased')"
          copy presets/bert_tiny_en_uncased here, then
            trainkit train hub_text_classifier model.source=presets/bert_tiny_en_uncased
          Offline, the handle fails at once (exit 2) with one line saying this.
Smoke:    python recipes/hub_text_classifier.py --make-tiny-preset presets/hub_text_tiny
          trainkit train hub_text_classifier -c hub_text_classifier_smoke
          The tiny preset is a BertBackbone (2 layers, width 32) with RANDOM weights and a
          REAL WordPiece vocabulary: keras_hub.tokenizers.compute_word_piece_vocabulary on
          the text of Python's own help topics (the standard library's pydoc_data.topics,
          what help('TOPIC') shows: the Language and Library Reference), every topic except
          the four this recipe classifies, lowercased, with BERT's special tokens [PAD] (id 0),
          [UNK], [CLS], [SEP] and [MASK]. Backbone and BertTokenizer are saved with
          save_to_preset, so the preset is loaded by the real code path, no network. It
          shows the mechanics (raw strings through the preset's own preprocessor), not
          pretraining's benefit: the weights are random.
Reaches:  not measured on bert_tiny_en_uncased here (this machine has no network). On the
          tiny random preset, 10 epochs: test accuracy 0.32 with LoRA (seeds 0, 1, 2: the
          majority class; low-rank updates of random frozen kernels learn nothing here), 0.81
          with model.lora_rank=null (every weight trains; seed 0); ~14 s and ~21 s of training
          on 2 shared CPU cores.
Data:     raw strings, the preset's own preprocessor applied (data.text: preset, the default
          for a KerasHub source): its WordPiece tokenizer, [CLS] ... [SEP] packing and the
          padding mask, 128 token ids per text. The texts: the paragraphs of at least 8 words
          of four of Python's help topics (pydoc_data.topics of the Python that runs it),
          labelled by their topic: 'compound' (compound statements), 'specialnames' (the data
          model's special method names), 'string-methods' and 'debugger' (pdb); about 680
          paragraphs on Python 3.11. Split 80/10/10 by data.split_seed.
Model:    the backbone's pooled_output and a new softmax head (head: replace); lora_rank 4
          (the backbone's enable_lora): the backbone's kernels stay frozen, the low-rank
          factors of its query and value projections train, with the head.
"""

import re

import numpy as np

import trainkit

ONLINE_PRESET = "kaggle://keras/bert/keras/bert_tiny_en_uncased"
TOPICS = ("compound", "specialnames", "string-methods", "debugger")
SEQUENCE_LENGTH = 128
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _paragraphs(text: str) -> list[str]:
    """The paragraphs of a help topic with at least 8 words, whitespace made single spaces."""
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if len(p.split()) >= 8]


@trainkit.register_dataset("python_help_topics", overwrite=True)
def python_help_topics():
    """Paragraphs of Python's help topics (raw strings) and the index of their topic in ``TOPICS``."""
    from pydoc_data.topics import topics

    texts, labels = [], []
    for label, topic in enumerate(TOPICS):
        for paragraph in _paragraphs(topics[topic]):
            texts.append(paragraph)
            labels.append(label)
    return np.array(texts, dtype=object), np.array(labels, dtype="int32")


def recipe() -> dict:
    return {
        "name": "hub_text_classifier",
        "seed": 0,
        "data": {
            "source": {"type": "arrays", "name": "python_help_topics"},
            "class_names": list(TOPICS),
            "text": {"type": "preset", "sequence_length": SEQUENCE_LENGTH},
            "batch_size": 32,
        },
        "model": {"type": "pretrained", "source": ONLINE_PRESET, "head": "replace", "lora_rank": 4},
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "optimizer": {"type": "adam", "learning_rate": 3e-3},
        "trainer": {"epochs": 10},
        "export": {"formats": ["keras", "saved_model"]},
    }


def make_tiny_preset(directory: str) -> None:
    """Save a tiny BertBackbone (random weights) and a BertTokenizer whose WordPiece
    vocabulary is computed from Python's help topics (all but ``TOPICS``) as a KerasHub preset."""
    from pydoc_data.topics import topics

    import keras
    import keras_hub
    import tensorflow as tf

    corpus = [p for name in sorted(topics) if name not in TOPICS for p in _paragraphs(topics[name])]
    vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
        tf.data.Dataset.from_tensor_slices(corpus), vocabulary_size=2000, lowercase=True, reserved_tokens=SPECIAL_TOKENS
    )
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(vocabulary), num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64,
        max_sequence_length=SEQUENCE_LENGTH,
    )
    backbone.save_to_preset(directory)
    keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True).save_to_preset(directory)
    print(
        f"saved a tiny BertBackbone preset (random weights) with a WordPiece vocabulary of {len(vocabulary)} tokens "
        f"from {len(corpus)} paragraphs of Python's help topics to {directory}"
    )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--make-tiny-preset", metavar="DIR", required=True, help="where to save the tiny preset")
    make_tiny_preset(parser.parse_args().make_tiny_preset)
