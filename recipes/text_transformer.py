"""A small transformer encoder on raw movie reviews (TFDS 'imdb_reviews', positive/negative).

Reference: the Keras example "Text classification with Transformer"
          (keras.io/examples/nlp/text_classification_with_transformer): token and position
          embeddings, one encoder block, mean pooling, on the 20,000 most frequent words
          and the first 200 tokens; it reports about 88% test accuracy. Not measured here:
          imdb_reviews cannot be prepared without network on this machine.
Run:      trainkit train text_transformer    (imdb_reviews must be prepared: see text_lstm)
Smoke:    trainkit train text_transformer -c text_transformer_smoke
Data:     as text_lstm: raw reviews, a vocabulary adapted on the training slice only; the
          exported model takes the review as a string (and loads where keras_hub is imported,
          for its TransformerEncoder and TokenAndPositionEmbedding layers).
"""


def recipe() -> dict:
    return {
        "name": "text_transformer",
        "seed": 0,
        "data": {
            "source": {
                "type": "tfds",
                "name": "imdb_reviews",
                "splits": {"train": "train[:90%]", "validation": "train[90%:]", "test": "test"},
            },
            "text": {"type": "vectorize", "max_tokens": 20000, "sequence_length": 200},
            "cache": "memory",
            "batch_size": 32,
        },
        "model": {
            "type": "transformer",
            "num_layers": 1,
            "num_heads": 2,
            "hidden_dim": 32,
            "intermediate_dim": 32,
            "dropout": 0.1,
            "pooling": "mean",
        },
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "optimizer": {"type": "adam", "learning_rate": 1e-3},
        "trainer": {"epochs": 2, "log_every_steps": 100},
        "export": {"formats": ["keras", "saved_model"]},
    }
