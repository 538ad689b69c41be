"""Dense(4, relu) then Dense(1, sigmoid) with SGD on breast_cancer (malignant or benign).

Run:      trainkit train binary_classifier
Smoke:    trainkit train binary_classifier -c binary_classifier_smoke
Reaches:  test accuracy 0.95+ (measured numbers: see the README's recipe table).
Data:     569 examples of 30 features, standardised on the training split.
"""


def recipe() -> dict:
    return {
        "name": "binary_classifier",
        "data": {
            "source": {"type": "sklearn", "name": "breast_cancer"},
            "scale": "standard",
            "batch_size": 16,
        },
        "model": {
            "type": "sequential",
            "layers": [
                {"type": "Dense", "units": 4, "activation": "relu"},
                {"type": "Dense", "units": 1, "activation": "sigmoid"},
            ],
        },
        "loss": "binary_crossentropy",
        "metrics": ["accuracy", {"type": "AUC", "name": "auc"}],
        "optimizer": {"type": "sgd", "learning_rate": 0.05, "momentum": 0.9},
        "trainer": {"epochs": 40, "log_every_steps": 200},
    }
