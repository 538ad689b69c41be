"""A multi-layer perceptron on scikit-learn's 8x8 handwritten digits (10 classes).

Run:      trainkit train digits_mlp
Smoke:    trainkit train digits_mlp -c digits_mlp_smoke
Reaches:  test accuracy 0.96+ (measured numbers: see the README's recipe table).
Data:     1797 examples of 64 pixel features, standardised on the training split.
"""


def recipe() -> dict:
    return {
        "name": "digits_mlp",
        "data": {
            "source": {"type": "sklearn", "name": "digits"},
            "scale": "standard",
            "batch_size": 32,
        },
        "model": {"type": "mlp", "hidden_units": [128, 64], "dropout": 0.2},
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "optimizer": {"type": "adam", "learning_rate": 1e-3},
        "trainer": {"epochs": 40, "log_every_steps": 200},
    }
