"""What people look at: the trials table, the best trial, plots, the best config, the live display.

A sweep directory is read back whole by :func:`open_sweep` (its ``sweep.json``
names the study and the storage), in this process or any other, during the
sweep or after it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import trainkit.sweeps.study as studies
from trainkit.errors import RunDirError
from trainkit.files import read_regular, write_text_atomic
from trainkit.sweeps.space import Sweep


class SweepResult:
    """A sweep's trials, read from its study: ``.trials``, ``.best``, ``.plot()``, ``.best_config(path)``."""

    def __init__(self, sweep_dir: str | os.PathLike, record: dict[str, Any], study):
        self.sweep_dir = Path(sweep_dir)
        self.record = record
        self.study = study

    @property
    def name(self) -> str:
        return self.record["name"]

    @property
    def metric(self) -> str:
        return self.record["metric"]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per trial: number, state, the metric, each parameter, steps, seconds, run directory, reason."""
        rows = []
        for t in sorted(self.study.get_trials(deepcopy=False), key=lambda t: t.number):
            if t.state.name == "WAITING":
                continue
            attrs = t.user_attrs
            state = t.state.name
            rows.append({
                "number": t.number,
                "state": state,
                self.metric: t.value if state == "COMPLETE" else _last(t.intermediate_values),
                **t.params,
                "steps": attrs.get("steps"),
                "seconds": attrs.get("seconds"),
                "run_dir": str(self.sweep_dir / attrs["run_dir"]) if attrs.get("run_dir") else None,
                "note": attrs.get("fail_reason") or ("interrupted" if attrs.get("interrupted") else ""),
            })
        return rows

    @property
    def trials(self):
        """The trials table: a pandas DataFrame when pandas is installed, else a list of dicts."""
        rows = self.rows()
        try:
            import pandas as pd
        except ImportError:
            return rows
        return pd.DataFrame(rows).set_index("number") if rows else pd.DataFrame(rows)

    def best_trial(self):
        complete = [t for t in self.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        if not complete:
            raise RunDirError(f"{self.sweep_dir}: no trial has completed yet")
        pick = max if self.record["direction"] == "max" else min
        return pick(complete, key=lambda t: (t.value, -t.number))

    def recipe_values(self, trial) -> dict[str, Any]:
        """A trial's parameters as the recipe takes them (a choice of ``[128, 64]`` as a list)."""
        from trainkit.sweeps.space import parse_dimension

        space = {key: parse_dimension(key, spec, source="sweep.json") for key, spec in self.record["space"].items()}
        return {key: space[key].value_of(value) if key in space else value for key, value in trial.params.items()}

    @property
    def best(self):
        """The best completed trial as a :class:`trainkit.runs.Run`."""
        from trainkit.runs import load_run

        return load_run(self.sweep_dir / self.best_trial().user_attrs["run_dir"])

    def best_config(self, path: str | os.PathLike) -> Path:
        """Write the best trial as a YAML config naming the sweep's base; ``trainkit train FILE``
        trains it to the same result. Returns the path."""
        import yaml

        trial = self.best_trial()
        recipe = self.best.recipe
        base = _base_recipe(self.record)
        from trainkit.recipe import diff

        changed: dict[str, Any] = {}
        data = recipe.to_dict()
        for dotted in diff(base, recipe):
            if dotted == "trainer.progress":
                continue  # a trial trains quietly; the result does not depend on it
            _set(changed, dotted, _get(data, dotted))
        head = (
            f"# The best trial ({trial.number}) of sweep {self.name}: {self.metric} {trial.value:.6g}.\n"
            f"# Trained from {self.sweep_dir / trial.user_attrs['run_dir']}; `{self.train_command(Path(path).name)}` trains it again.\n"
        )
        body = yaml.safe_dump({"base": self.record["base"], **changed}, sort_keys=False, default_flow_style=None)
        write_text_atomic(path, head + body)
        return Path(path)

    def train_command(self, config: str | os.PathLike) -> str:
        """The command that trains a best config: a base that is a recipe file is named
        on the command line (a config's ``base:`` never names a file)."""
        base = str(self.record["base"])
        return f"trainkit train {base} -c {config}" if base.endswith(".py") else f"trainkit train {config}"

    def plot(self):
        """Optimization history, parallel coordinates and parameter importances, as one matplotlib Figure."""
        from trainkit.sweeps.plots import sweep_figure

        return sweep_figure(self)

    def table(self) -> str:
        """The trials table as text (``trainkit sweep show``)."""
        return format_table(self.rows(), self.metric)

    def _repr_html_(self) -> str:
        return html_table(self.rows(), self.metric)

    def __repr__(self) -> str:
        return f"<SweepResult {self.name}: {len(self.rows())} trials in {self.sweep_dir}>"


def _last(values: dict[int, float]) -> float | None:
    return values[max(values)] if values else None


def _get(data: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data[part] if isinstance(data, dict) else data[int(part)]
    return data


def _set(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        data = data.setdefault(part, {})
    data[parts[-1]] = value


def _base_recipe(record: dict[str, Any]):
    from trainkit.loader import load_recipe

    return load_recipe(record["base"])


def open_sweep(sweep_dir: str | os.PathLike) -> SweepResult:
    """A sweep directory read back (``trainkit sweep show DIR``)."""
    from trainkit.sweeps.study import SWEEP_JSON

    directory = Path(sweep_dir)
    path = directory / SWEEP_JSON
    if not path.is_file():
        raise RunDirError(f"{directory} is not a sweep directory (no {SWEEP_JSON})")
    try:
        record = json.loads(read_regular(path))
    except ValueError as err:
        raise RunDirError(f"{path} cannot be read: {err}") from None
    storage = studies.open_storage(record.get("storage"), directory)
    optuna = studies._optuna()
    try:
        study = optuna.load_study(study_name=record["name"], storage=storage)
    except KeyError:
        raise RunDirError(f"{directory}: its storage holds no study '{record['name']}'") from None
    return SweepResult(directory, record, study)


def format_table(rows: list[dict[str, Any]], metric: str) -> str:
    if not rows:
        return "no trials yet"
    columns = [c for c in rows[0] if c not in ("run_dir",)]
    for row in rows[1:]:
        columns += [c for c in row if c not in columns and c != "run_dir"]
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def html_table(rows: list[dict[str, Any]], metric: str) -> str:
    import html

    if not rows:
        return "<p>no trials yet</p>"
    columns = [c for c in rows[0] if c != "run_dir"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(row.get(c)))}</td>" for c in columns) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


class SweepReport:
    """The sweep's progress: one line per trial in a terminal, one live table in a notebook."""

    def __init__(self, sweep: Sweep, *, total: int):
        from trainkit.training.sinks import in_notebook

        self.sweep, self.total = sweep, total
        self.rows: dict[int, dict[str, Any]] = {}
        self._handle = None
        self._notebook = in_notebook()

    def trial_started(self, number: int, params: dict[str, Any], *, resumed: bool = False) -> None:
        self.rows[number] = {"number": number, "state": "RUNNING", self.sweep.spec.metric: None, **params}
        if resumed and not self._notebook:
            print(f"trial {number} of {self.total}: resuming its run from its checkpoint (interrupted before)", flush=True)
        self._draw()

    def trial_ended(self, number: int, state: str, value: float | None, params: dict[str, Any], note: str = "") -> None:
        self.rows[number] = {"number": number, "state": state, self.sweep.spec.metric: value, **params, "note": note}
        if self._notebook:
            self._draw()
            return
        shown = ", ".join(f"{k}={_cell(v)}" for k, v in params.items())
        result = f"{self.sweep.spec.metric} {_cell(value)}" if value is not None else note
        print(f"trial {number} of {self.total}: {state} {result} ({shown})", flush=True)

    def finished(self, study) -> None:
        if self._notebook:
            self._draw()

    def _draw(self) -> None:
        if not self._notebook:
            return
        from IPython.display import HTML, display

        rows = [self.rows[n] for n in sorted(self.rows)]
        shown = HTML(f"<b>sweep {self.sweep.name}</b>: {len(rows)} of {self.total} trials" + html_table(rows, self.sweep.spec.metric))
        if self._handle is None:
            self._handle = display(shown, display_id=True)
        else:
            self._handle.update(shown)


def write_hparams(run_dir: Path, sweep: Sweep, number: int, params: dict[str, Any], value: float) -> None:
    """TensorBoard's HParams dashboard: the trial's parameters and metric in ``RUN_DIR/tensorboard/hparams``."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    plain = {key: v if isinstance(v, int | float | str | bool) else json.dumps(v) for key, v in params.items()}
    writer = tf.summary.create_file_writer(str(run_dir / "tensorboard" / "hparams"))
    with writer.as_default():
        hp.hparams(plain, trial_id=f"{sweep.name}/trial-{number:04d}")
        tf.summary.scalar(f"sweep/{sweep.spec.metric}", value, step=0)
    writer.close()


