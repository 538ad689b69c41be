"""A bidirectional LSTM on raw movie reviews (TFDS 'imdb_reviews', positive/negative).

Reference: the Keras example "Bidirectional LSTM on IMDB" (keras.io/examples/nlp/bidirectional_lstm_imdb)
          uses this shape of model (embedding, two bidirectional LSTMs of 64) on the
          20,000 most frequent words and reports about 85-88% test accuracy. Not measured
          here: imdb_reviews cannot be prepared without network on this machine.
Run:      trainkit train text_lstm           (imdb_reviews must be prepared: see below)
Smoke:    trainkit train text_lstm -c text_lstm_smoke
Data:     TFDS 'imdb_reviews' (plain_text), never downloaded by trainkit. Prepare it once on a
          machine with network (`tfds build imdb_reviews --data_dir DIR`), copy DIR here and set
          data.source.data_dir=DIR (or $TFDS_DATA_DIR). Train 22.5k / validation 2.5k (TFDS
          slices of 'train') / test 25k reviews, raw strings. data.text adapts a vocabulary of
          20,000 tokens on the training slice only and cuts each review to 200 token ids; the
          exported model takes the review as a string.
"""


def recipe() -> dict:
    return {
        "name": "text_lstm",
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
        "model": {"type": "rnn", "cell": "lstm", "embedding_dim": 128, "units": [64, 64], "bidirectional": True},
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "optimizer": {"type": "adam", "learning_rate": 1e-3},
        "trainer": {"epochs": 2, "log_every_steps": 100},
        "export": {"formats": ["keras", "saved_model"]},
    }
