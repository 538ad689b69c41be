"""Runs as objects: an existing run directory read back, its curves, several runs compared.

>>> run = trainkit.load_run("runs/digits_mlp")          # doctest: +SKIP
>>> run.status, run.history["val_loss"][-1]             # doctest: +SKIP
('completed', 0.071)
>>> run.plot()                                          # doctest: +SKIP
<Figure ...>
>>> trainkit.compare(["runs/a", "runs/b"])              # doctest: +SKIP

Everything is read from the run directory's files (``run.json``,
``metrics.jsonl``, ``eval.json``, ``config.yaml``), so a run trained in another
process, interrupted, or resumed several times reads back whole. The model is
loaded only when asked for.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainkit.errors import MissingExtra, RunDirError
from trainkit.files import read_regular
from trainkit.recipe import Recipe
from trainkit.rundir import RunDir

if TYPE_CHECKING:
    from trainkit.plan import Built
    from trainkit.serving.predict import Predictions

#: Fields of a ``metrics.jsonl`` event that are not metrics.
_BOOKKEEPING = {"time", "step", "epoch", "split", "input_wait_fraction", "steps_per_second"}


def read_history(run_dir: str | os.PathLike) -> dict[str, list]:
    """Per-epoch metrics of a run, as Keras's ``History.history``, across every resume.

    An epoch logged twice (its end replayed after resuming from a checkpoint
    older than it) counts once, with its latest values.
    """
    epochs: dict[int, dict[str, Any]] = {}
    for event in read_events(run_dir, "epoch"):
        if isinstance(event.get("epoch"), int) and not isinstance(event["epoch"], bool):
            epochs[event["epoch"]] = event
    history: dict[str, list] = {}
    for _, event in sorted(epochs.items()):
        for key, value in event.items():
            if key not in _BOOKKEEPING and _is_number(value):
                history.setdefault(key, []).append(value)
    return history


def read_events(run_dir: str | os.PathLike, split: str) -> list[dict[str, Any]]:
    """Every ``metrics.jsonl`` event of one split (``train``, ``validation``, ``epoch``).

    A line that is not a JSON object (cut short by a kill, or not trainkit's) is skipped."""
    path = RunDir(run_dir).metrics_log
    out = []
    if path.is_file():
        with open(path, "rb") as f:
            for raw in f:
                try:
                    event = json.loads(raw)
                except (ValueError, RecursionError):
                    continue
                if isinstance(event, dict) and event.get("split") == split:
                    out.append(event)
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_eval(path: Path) -> dict[str, dict[str, float]]:
    """``eval.json``: ``{split: {metric: number}}``; anything else is one line naming the file."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(read_regular(path))
    except (ValueError, RecursionError, OSError) as err:
        data = err
    well_formed = isinstance(data, dict) and all(
        isinstance(values, dict) and all(_is_number(v) for v in values.values()) for values in data.values()
    )
    if not well_formed:
        raise RunDirError(
            f"{path} is not trainkit's evaluation ({{split: {{metric: number}}}}); delete it and evaluate the run "
            "again (trainkit eval RUN_DIR)"
        )
    return data


class Run:
    """A training run: its recipe, status, history, final metrics and (lazily) its model."""

    def __init__(
        self,
        recipe: Recipe | None,
        run_dir: str | os.PathLike,
        model: Any = None,
        history: dict[str, list] | None = None,
        metrics: dict[str, dict[str, float]] | None = None,
        built: Built | None = None,
        *,
        served_only: bool = False,
    ):
        self.run_dir = Path(run_dir)
        #: True for a parameter-server cluster's worker or ps task: it served the chief, which trained.
        self.served_only = served_only
        self._recipe = recipe
        self._model = model
        self._history = history
        self._metrics = metrics
        self._built = built

    @property
    def recipe(self) -> Recipe:
        if self._recipe is None:
            from trainkit.rundir import load_run_recipe

            self._recipe = load_run_recipe(self.run_dir)
        return self._recipe

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def hash(self) -> str | None:
        """The run's identity (its recipe and pretrained sources), as the training
        header, ``run.json`` and ``export.json`` show it."""
        return self.info.get("recipe_hash")

    @property
    def info(self) -> dict[str, Any]:
        """``run.json``: status, versions, times, steps per second, ..."""
        return RunDir(self.run_dir).read_status()

    @property
    def status(self) -> str | None:
        """``completed``, ``interrupted``, ``failed``, ``diverged``, ``running``, or
        ``killed``: run.json says running, but no process holds the run's lock (one
        killed, or whose machine went down, writes no status of its own; ``trainkit
        train`` resumes it)."""
        status = self.info.get("status")
        if status == "running" and RunDir(self.run_dir).in_use() is False:
            return "killed"
        return status

    @property
    def history(self) -> dict[str, list]:
        """Per-epoch metrics (``loss``, ``val_loss``, ``learning_rate``, ...) of every epoch trained."""
        if self._history is None:
            self._history = read_history(self.run_dir)
        return self._history

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        """Final metrics per evaluated split, as in ``eval.json`` (empty before the run finished)."""
        if self._metrics is None:
            self._metrics = read_eval(RunDir(self.run_dir).eval_json)
        return self._metrics

    @property
    def model(self):
        """The trained ``keras.Model`` (its final checkpoint, or the last one of an
        unfinished run). It takes preprocessed features, as in training;
        ``model.keras`` is the inference model that takes raw ones (:meth:`predict`)."""
        if self._model is None:
            from trainkit.plan import restore

            # A run directory never imports code: a Python recipe's components must be
            # registered already (the notebook that trained it), else the error says how.
            self._model = restore(self.run_dir, "final" if self.status == "completed" else "last")
        return self._model

    def evaluate(self, split: str = "test") -> dict[str, float]:
        """Metrics of the trained model on ``split`` (``train``, ``validation``, ``test``)."""
        built = self._built
        if built is not None:
            return built.trainer.evaluate_split(built.data, split)
        from trainkit.evaluation import evaluate

        finished = (RunDir(self.run_dir).checkpoints / "final").is_dir() or RunDir(self.run_dir).model_file.is_file()
        return evaluate(self.run_dir, split=split, checkpoint="final" if finished else "last")

    def predict(self, inputs: Any, *, checkpoint: str | None = None) -> Predictions:
        """Predictions on raw inputs (a NumPy array or a file): :func:`trainkit.predict`."""
        from trainkit.serving.predict import predict

        return predict(self.run_dir, inputs, checkpoint=checkpoint)

    def plot(self, metrics: list[str] | None = None):
        """A matplotlib Figure of the learning curves: training against validation, and the learning rate."""
        return plot_runs([self], metrics=metrics)

    def __repr__(self) -> str:
        name = self._recipe.name if self._recipe is not None else self.run_dir.name
        return f"Run({name!r}, run_dir={str(self.run_dir)!r}, status={self.status!r}, metrics={self.metrics})"


def load_run(run_dir: str | os.PathLike) -> Run:
    """An existing run directory as a :class:`Run` (nothing is built until ``run.model``)."""
    directory = RunDir(run_dir)
    directory.check_existing()
    return Run(None, directory.path)


def _as_run(run: Run | str | os.PathLike) -> Run:
    return run if isinstance(run, Run) else load_run(run)


def _pyplot_free_figure(**kwargs):
    """A matplotlib Figure outside pyplot (no global figure list, no backend), shown inline by Jupyter."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtra(
            "plotting needs matplotlib, which is not installed; install the extra: pip install trainkit[plot]"
        ) from None

    class CurvesFigure(Figure):
        def _repr_png_(self) -> bytes:
            import io

            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=90)
            return buffer.getvalue()

    return CurvesFigure(**kwargs)


def plot_runs(runs: list[Run | str | os.PathLike], metrics: list[str] | None = None):
    """One Figure of several runs' curves: a panel per metric (training solid, validation
    dashed) and one of the learning rate, against the epoch."""
    runs = [_as_run(r) for r in runs]
    histories = [r.history for r in runs]
    if metrics is None:
        metrics = []
        for history in histories:
            for key in history:
                base = key[4:] if key.startswith("val_") else key
                if base != "learning_rate" and base not in metrics:
                    metrics.append(base)
    panels = [*metrics, "learning_rate"] if any("learning_rate" in h for h in histories) else list(metrics)
    figure = _pyplot_free_figure(figsize=(4.2 * max(len(panels), 1), 3.4), layout="constrained")
    axes = figure.subplots(1, max(len(panels), 1), squeeze=False)[0]
    colors = [f"C{i}" for i in range(10)]
    for i, (run, history) in enumerate(zip(runs, histories, strict=True)):
        label = run.run_dir.name if len(runs) > 1 else ""
        color = colors[i % len(colors)]
        for ax, metric in zip(axes, panels, strict=False):
            if metric == "learning_rate":
                series = [(metric, "-", label or "learning rate")]
            else:
                series = [(metric, "-", f"{label} train".strip()), (f"val_{metric}", "--", f"{label} validation".strip())]
            for key, style, shown in series:
                values = history.get(key)
                if values:
                    ax.plot(range(1, len(values) + 1), values, style, color=color, label=shown)
            ax.set_title(metric)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    return figure


class Comparison:
    """Several runs side by side: final metrics and the recipe fields that differ.

    ``rows`` is a list of dicts (one per run); it prints as a text table and
    shows as an HTML table in a notebook.
    """

    def __init__(self, rows: list[dict[str, Any]], columns: list[str]):
        self.rows, self.columns = rows, columns

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]

    def __len__(self) -> int:
        return len(self.rows)

    def _cells(self) -> list[list[str]]:
        return [[_cell(row.get(c)) for c in self.columns] for row in self.rows]

    def __str__(self) -> str:
        cells = self._cells()
        widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(self.columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        import html

        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in self._cells())
        return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree if not isinstance(tree, list) else json.dumps(tree)}


#: Recipe fields that tell nothing about a run's result.
_NOT_DIFFERENCES = ("description", "trainer.progress", "trainer.log_every_steps")


def compare(runs: list[Run | str | os.PathLike]) -> Comparison:
    """A table of runs: name, status, final metrics per split, and the recipe fields that differ."""
    if isinstance(runs, str | os.PathLike | Run):
        raise TypeError(f"compare takes a list of runs or run directories, got one: compare([{str(runs)!r}, ...])")
    runs = [_as_run(r) for r in runs]
    flat = [_flatten(r.recipe.to_dict()) for r in runs]
    keys = sorted({k for f in flat for k in f})
    differing = [
        k for k in keys
        if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat}) > 1
        and not k.startswith(_NOT_DIFFERENCES)
    ]
    rows, metric_columns = [], []
    for run, fields in zip(runs, flat, strict=True):
        row: dict[str, Any] = {"run": str(run.run_dir), "status": run.status}
        for split, values in run.metrics.items():
            for metric, value in values.items():
                column = f"{split} {metric}"
                row[column] = value
                if column not in metric_columns:
                    metric_columns.append(column)
        for key in differing:
            row[key] = fields.get(key)
        rows.append(row)
    return Comparison(rows, ["run", "status", *metric_columns, *differing])
