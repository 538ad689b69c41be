"""One matplotlib Figure of a sweep: optimization history, parallel coordinates, parameter importances."""

from __future__ import annotations

from typing import Any


def sweep_figure(result) -> Any:
    """The figure of :meth:`SweepResult.plot`."""
    from trainkit.runs import _pyplot_free_figure

    figure = _pyplot_free_figure(figsize=(15, 4.2), layout="constrained")
    history, coordinates, importances = figure.subplots(1, 3)
    complete = [t for t in result.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    complete.sort(key=lambda t: t.number)
    _history(history, complete, result)
    _coordinates(coordinates, complete, result)
    _importances(importances, result)
    figure.suptitle(f"sweep {result.name}: {result.metric} ({result.record['direction']})")
    return figure


def _history(ax, complete: list, result) -> None:
    ax.set_title("optimization history")
    ax.set_xlabel("trial")
    ax.set_ylabel(result.metric)
    if not complete:
        ax.text(0.5, 0.5, "no completed trial", ha="center", transform=ax.transAxes)
        return
    numbers = [t.number for t in complete]
    values = [t.value for t in complete]
    pick = max if result.record["direction"] == "max" else min
    best, so_far = [], None
    for value in values:
        so_far = value if so_far is None else pick(so_far, value)
        best.append(so_far)
    ax.scatter(numbers, values, s=18, label="trial")
    ax.step(numbers, best, where="post", color="C3", label="best so far")
    ax.legend(loc="best", fontsize=8)


def _coordinates(ax, complete: list, result) -> None:
    """Each parameter on its own axis, scaled to 0..1 (choices by position); lines coloured by the metric."""
    from matplotlib import colormaps

    ax.set_title("parallel coordinates")
    names = sorted({key for t in complete for key in t.params})
    if not complete or not names:
        ax.text(0.5, 0.5, "no completed trial", ha="center", transform=ax.transAxes)
        return
    columns = {name: _scaled([t.params.get(name) for t in complete], _distribution_of(complete, name)) for name in names}
    values = [t.value for t in complete]
    low, high = min(values), max(values)
    colours = colormaps["viridis"]
    for i, value in enumerate(values):
        shade = (value - low) / (high - low) if high > low else 0.5
        ax.plot(range(len(names)), [columns[n][i] for n in names], color=colours(shade), alpha=0.8, marker="o", markersize=3)
    ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    ax.set_yticks([0, 1], ["low", "high"])


def _distribution_of(complete: list, name: str):
    for t in complete:
        if name in t.distributions:
            return t.distributions[name]
    return None


def _scaled(values: list, distribution) -> list[float]:
    import math

    choices = getattr(distribution, "choices", None)
    if choices is not None:
        span = max(len(choices) - 1, 1)
        return [choices.index(v) / span if v in choices else 0.5 for v in values]
    low, high = distribution.low, distribution.high
    if getattr(distribution, "log", False):
        values, low, high = [math.log(v) for v in values], math.log(low), math.log(high)
    return [(v - low) / (high - low) if high > low else 0.5 for v in values]


def _importances(ax, result) -> None:
    ax.set_title("parameter importances")
    complete = [t for t in result.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(complete) < 2:
        ax.text(0.5, 0.5, "needs 2 completed trials", ha="center", transform=ax.transAxes)
        return
    import optuna

    try:
        importances = optuna.importance.get_param_importances(result.study)
    except (RuntimeError, ValueError) as err:  # e.g. every trial had the same parameters
        ax.text(0.5, 0.5, str(err)[:60], ha="center", transform=ax.transAxes, fontsize=8)
        return
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel("importance (fANOVA)")
