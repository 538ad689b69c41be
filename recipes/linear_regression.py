"""The classic first example: a linear model with mean squared error on the diabetes data.

Run:      trainkit train linear_regression
Smoke:    trainkit train linear_regression -c linear_regression_smoke
Reaches:  test MSE within 2% of the closed-form least-squares fit on the same split
          (tests/test_recipes.py checks it against numpy.linalg.lstsq).
Data:     442 patients, 10 standardised features, a disease-progression target.
"""


def recipe() -> dict:
    return {
        "name": "linear_regression",
        "data": {
            "source": {"type": "sklearn", "name": "diabetes"},
            "scale": "standard",
            "batch_size": 32,
        },
        "model": {"type": "sequential", "layers": [{"type": "Dense", "units": 1, "name": "linear"}]},
        "loss": "mse",
        "metrics": [{"type": "MeanAbsoluteError", "name": "mae"}],
        "optimizer": {
            "type": "adam",
            "learning_rate": 2.0,
            "schedule": {"type": "cosine", "alpha": 0.001},
        },
        "trainer": {"epochs": 300, "log_every_steps": 1000, "validation": {"every_epochs": 50}},
    }
