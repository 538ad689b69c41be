"""Forecasting next year's sunspot number with an LSTM over the last 12 years.

Run:      trainkit train sunspots_lstm
Smoke:    trainkit train sunspots_lstm -c sunspots_lstm_smoke
Reaches:  a lower test RMSE than persistence (next year = this year), measured next to a
          statsmodels AutoReg model on the same test windows by benchmarks/sunspots.py
          (numbers: see the README's recipe table).
Data:     statsmodels' bundled yearly sunspot numbers (``statsmodels.datasets.sunspots``,
          1700-2008, 309 years; install ``trainkit[examples]``). The years are cut in time
          order: the first 70% train, the next 10% validate, the last 20% (1947-2008) test.
"""

import trainkit
from trainkit.errors import ConfigError


@trainkit.register_dataset("sunspots", overwrite=True)
def sunspots() -> dict:
    """The yearly sunspot numbers as one column, ``sunspots``, in time order."""
    try:
        from statsmodels.datasets import sunspots as bundled
    except ImportError:
        raise ConfigError("data.source.name: the sunspots series ships with statsmodels: pip install 'trainkit[examples]'") from None
    table = bundled.load_pandas().data
    return {"sunspots": table["SUNACTIVITY"].to_numpy()}


def recipe() -> dict:
    return {
        "name": "sunspots_lstm",
        "data": {
            "source": {"type": "timeseries", "name": "sunspots", "targets": ["sunspots"], "sequence_length": 12},
            "splits": {"train": 0.7, "validation": 0.1, "test": 0.2},
            "scale": "standard",
            "batch_size": 16,
        },
        "model": {"type": "rnn", "cell": "lstm", "units": [16]},
        "loss": "mse",
        "metrics": [{"type": "RootMeanSquaredError", "name": "rmse"}, {"type": "MeanAbsoluteError", "name": "mae"}],
        "optimizer": {"type": "adam", "learning_rate": 3e-3, "schedule": {"type": "cosine", "alpha": 0.01}},
        "trainer": {"epochs": 80, "log_every_steps": 500},
        "seed": 0,
    }
