"""Hyperparameter sweeps on Optuna: a recipe plus a search space, every trial an ordinary run.

>>> result = trainkit.sweep("digits_mlp_sweep", ["trainer.epochs=2"], trials=8)   # doctest: +SKIP
>>> result.trials            # a DataFrame: number, state, metric, parameters, steps, seconds
>>> result.best.history      # the best trial, a trainkit Run
>>> result.plot()            # history, parallel coordinates, importances

See docs/sweeps.md: space.py reads and checks the sweep file, study.py holds the
Optuna study and its queue, runner.py trains the trials, report.py reads them back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from trainkit.sweeps.space import Sweep, load_sweep


def sweep(
    sweep: str | os.PathLike | Sweep,
    overrides: dict[str, Any] | list[str] | None = None,
    *,
    trials: int | None = None,
    storage: str | None = None,
    sweep_dir: str | os.PathLike | None = None,
):
    """Run a sweep (a sweep file's name or path) in this process; returns a :class:`SweepResult`.

    ``overrides`` (``{"trainer.epochs": 2}`` or ``["trainer.epochs=2"]``) apply to
    every trial; ``trials`` is the total (default: the file's); ``storage`` an
    Optuna RDB URL shared with other processes (default: a journal file in the
    sweep directory, ``runs/sweeps/NAME``). Running it again continues the sweep.
    """
    from trainkit.runtime import quiet_tensorflow
    from trainkit.sweeps.report import open_sweep
    from trainkit.sweeps.runner import DEFAULT_SWEEPS, run_sweep

    quiet_tensorflow()
    definition = sweep if isinstance(sweep, Sweep) else load_sweep(sweep, overrides)
    directory = Path(sweep_dir or DEFAULT_SWEEPS / definition.name)
    run_sweep(definition, sweep_dir=directory, storage_url=storage, trials=trials)
    return open_sweep(directory)


def load_sweep_results(sweep_dir: str | os.PathLike):
    """A sweep directory read back: its trials, best run, plot and best config."""
    from trainkit.sweeps.report import open_sweep

    return open_sweep(sweep_dir)


__all__ = ["Sweep", "load_sweep", "load_sweep_results", "sweep"]
