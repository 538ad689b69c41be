"""sunspots_lstm next to persistence and a classical AR model, on the same test windows.

    python benchmarks/sunspots.py [--seeds 0 1 2] [KEY=VALUE ...]

Trains recipes/sunspots_lstm.py once per seed (into a temporary directory) and
feeds its exported ``model.keras`` the raw test windows (years 1947-2008 of the
series, 12 years each, the target the year after). On exactly those windows:

- persistence: next year's number is this year's (the window's last value);
- AR(p): ``statsmodels.tsa.ar_model.AutoReg`` fitted on the training years only,
  its order p chosen by AIC (``ar_select_order``, at most 12 lags: what a window
  holds), predicting each window's next year from the window's last p values.

Prints a table of test RMSE and MAE and writes ``benchmarks/sunspots.json``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import options

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TRAINKIT_HOME", str(ROOT))
sys.path.insert(0, str(ROOT))


def errors(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    residual = np.asarray(predicted, np.float64).reshape(-1) - np.asarray(actual, np.float64).reshape(-1)
    return {"rmse": float(np.sqrt(np.mean(residual**2))), "mae": float(np.mean(np.abs(residual)))}


def autoregression(recipe, windows: np.ndarray) -> tuple[np.ndarray, int]:
    """AR(p) fitted on the training years, one step ahead from each window."""
    from statsmodels.tsa.ar_model import AutoReg, ar_select_order

    import trainkit
    from trainkit.data.series import time_ranges

    source = recipe.data.source
    series = np.asarray(trainkit.registry.datasets.get(source.name)()["sunspots"], np.float64)
    start, stop = time_ranges(len(series), recipe.data.splits, source)["train"]
    train = series[start:stop]
    lags = ar_select_order(train, maxlag=source.sequence_length, ic="aic").ar_lags or [1]
    fitted = AutoReg(train, lags=lags).fit()
    const, coefficients = fitted.params[0], fitted.params[1:]
    last = windows[:, ::-1, 0]  # last[:, k - 1] = the value k years before the target
    predicted = const + sum(c * last[:, lag - 1] for c, lag in zip(coefficients, lags, strict=True))
    return predicted, max(lags)


def main() -> None:
    parser = options.parser(__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("overrides", nargs="*", help="recipe overrides KEY=VALUE")
    args = parser.parse_args()

    import keras

    import trainkit

    results: dict[str, list[dict[str, float]]] = {"sunspots_lstm": []}
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seeds:
            recipe = trainkit.load_recipe(
                "sunspots_lstm", overrides=[*args.overrides, f"seed={seed}", "trainer.progress=false"]
            )
            trainkit.train(recipe, run_dir=Path(scratch) / f"seed{seed}")
            pairs = [(x.numpy(), y.numpy()) for x, y in trainkit.dataset(recipe, "test", raw=True)]
            windows, targets = np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])
            exported = keras.models.load_model(Path(scratch) / f"seed{seed}" / "model.keras")
            results["sunspots_lstm"].append(errors(exported.predict(windows, verbose=0), targets))
    persistence = errors(windows[:, -1, 0], targets)
    ar_predicted, order = autoregression(recipe, windows)
    table = {
        "test_windows": int(len(targets)),
        "seeds": args.seeds,
        "sunspots_lstm": {k: statistics.mean(r[k] for r in results["sunspots_lstm"]) for k in ("rmse", "mae")},
        "sunspots_lstm_per_seed": results["sunspots_lstm"],
        "persistence": persistence,
        f"autoreg_{order}": errors(ar_predicted, targets),
    }
    changed = f", overrides {' '.join(args.overrides)} (sunspots.json not written)" if args.overrides else ""
    if not args.overrides:  # the kept figures are the recipe's own
        (ROOT / "benchmarks" / "sunspots.json").write_text(json.dumps(table, indent=2) + "\n")
    print(f"sunspots_lstm: test windows: {len(targets)} (years {1700 + 309 - len(targets)}-2008), seeds {args.seeds}{changed}")
    print("| model | test RMSE | test MAE |\n| --- | --- | --- |")
    for name in ("sunspots_lstm", "persistence", f"autoreg_{order}"):
        print(f"| {name} | {table[name]['rmse']:.2f} | {table[name]['mae']:.2f} |")


if __name__ == "__main__":
    options.run(main)
