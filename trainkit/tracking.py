"""Experiment tracking: a run mirrored in MLflow (the recipe's ``tracking.mlflow``).

What a tracked run logs to its MLflow run:

- parameters: the resolved recipe, one per leaf under its dotted key
  (``optimizer.learning_rate``); tags: the recipe's hash (``trainkit.recipe_hash``),
  name, and the run directory (``trainkit.run_dir``);
- metrics: every epoch of ``metrics.jsonl`` with its global step, as training goes;
- artifacts, when training completes: ``eval.json``, ``config.yaml`` and the
  exported model (``model/model.keras``).

The MLflow run's id is kept in the run directory (``mlflow.json``): a resumed
run continues the same MLflow run, with the epochs it had not logged yet.
Parameters cannot change in MLflow; ones a resume changed are listed in the
tag ``trainkit.changed_on_resume``.

Where: ``tracking.mlflow.uri``; else ``MLFLOW_TRACKING_URI``; else a SQLite store
``mlruns/mlflow.db`` beside the run directory (``runs/mlruns`` for ``runs/NAME``),
with artifacts in ``mlruns/artifacts``: ``cd runs/mlruns && mlflow ui`` opens it
(MLflow 3's default store is ``sqlite:///mlflow.db``; its file store is the
legacy one).

Tracking never fails a training: MLflow missing, a server that does not answer
or any MLflow error prints one warning line, and the run goes on untracked.
Requests to a server are bounded (:data:`HTTP_LIMITS`), so an unreachable one
costs seconds, not minutes; a database store (SQLite, PostgreSQL, MySQL) is
opened once before MLflow opens it, because MLflow retries one that fails ten
times, waiting about 100 s in all.

Sweeps: :func:`start_parent` opens a parent run; a trial trained with
``trainkit.train(..., tracking_parent=parent)`` -- or in a process whose
environment holds ``parent.env()`` -- is logged as its child.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainkit.console import warn
from trainkit.errors import RunDirError, first_line
from trainkit.files import read_regular, write_json_atomic
from trainkit.recipe import Recipe
from trainkit.rundir import RunDir
from trainkit.runs import read_events

#: The run directory's record of its MLflow run.
STATE_FILE = "mlflow.json"
#: The local store's folder, beside the run directory.
LOCAL_STORE = "mlruns"
#: Environment of a sweep's trial process: its parent run and the store that holds it.
PARENT_RUN_ENV = "TRAINKIT_MLFLOW_PARENT_RUN_ID"
PARENT_URI_ENV = "TRAINKIT_MLFLOW_PARENT_URI"
#: MLflow's HTTP settings while trainkit talks to a server (unless already set):
#: one retry and a 10 s timeout, instead of MLflow's 7 retries with backoff and 120 s.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
               "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
#: MLflow's own limit on a parameter's value.
MAX_PARAM_LENGTH = 6000
_BATCH = 1000  # metrics per log_batch call (MLflow's limit)
_NOT_METRICS = {"time", "step", "epoch", "split"}


@dataclass(frozen=True)
class ParentRun:
    """A sweep's MLflow run, under which each trial is logged as a child run."""

    uri: str
    run_id: str

    def env(self) -> dict[str, str]:
        """The environment that makes a trial process's run a child of this one."""
        return {PARENT_RUN_ENV: self.run_id, PARENT_URI_ENV: self.uri}


def local_store_uri(run_dir: str | os.PathLike) -> str:
    """``sqlite:///.../mlruns/mlflow.db`` beside ``run_dir`` (its folder is made on connecting,
    where a failure turns tracking off instead of failing the training)."""
    store = Path(run_dir).absolute().parent / LOCAL_STORE
    return f"sqlite:///{store / 'mlflow.db'}"


def resolve_uri(recipe: Recipe, run_dir: str | os.PathLike) -> str:
    """Where the run is tracked: ``tracking.mlflow.uri``, ``MLFLOW_TRACKING_URI``, or the local store."""
    section = recipe.tracking.mlflow if recipe.tracking else None
    return (section and section.uri) or os.environ.get("MLFLOW_TRACKING_URI") or local_store_uri(run_dir)


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """``{"optimizer.learning_rate": "0.001", ...}``: the leaves of ``data`` under dotted keys."""
    if isinstance(data, dict) and data:
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    text = data if isinstance(data, str) else json.dumps(data)
    return {prefix: text[:MAX_PARAM_LENGTH]}


class _Client:
    """An MLflow client for one URI; any failure warns once and turns tracking off."""

    def __init__(self, uri: str, *, say: Callable[[str], None] = warn):
        self.uri = uri
        self.say = say
        self.client = None
        self.failed = False

    def call(self, what: Callable[[Any], Any]) -> Any:
        """``what(client)``, or None once anything failed."""
        if self.failed:
            return None
        try:
            if self.client is None:
                self.client = _connect(self.uri)
            return what(self.client)
        except Exception as err:  # tracking never fails a training
            self.failed = True
            reason = first_line(err, limit=200)
            self.say(f"warning: tracking: MLflow at {_shown(self.uri)} failed ({reason}); the run goes on untracked")
            return None


def _shown(uri: str) -> str:
    return uri.split("@")[-1] if "://" in uri and "@" in uri else uri  # never print credentials


def _connect(uri: str):
    """An ``MlflowClient`` for ``uri``, after a quick check that a server answers."""
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise RuntimeError("mlflow is not installed: pip install 'trainkit[tracking]'") from None
    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)  # its table-creation chatter
    if uri.startswith("sqlite:///"):  # a local store: its folder first (a file in its place fails here, in one line)
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if uri.startswith(("http://", "https://")):
        for key, value in HTTP_LIMITS.items():
            os.environ.setdefault(key, value)
        _check_server(uri)
    _check_database(uri)
    return MlflowClient(tracking_uri=uri)


#: Database stores whose driver takes a ``connect_timeout`` (seconds).
_TIMED_DRIVERS = ("postgresql", "mysql")


def _check_database(uri: str, timeout: int = 5) -> None:
    """Fail at once where MLflow would retry a database that cannot be opened ten
    times, with doubling waits: about 100 s of warnings before the training starts."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme == "sqlite":
        path = uri.removeprefix("sqlite:///").split("?", 1)[0] if uri.startswith("sqlite:///") else ""
        if path and path != ":memory:":
            import contextlib
            import sqlite3

            with contextlib.closing(sqlite3.connect(path, timeout=timeout)) as db:
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a file that is not a database fails here
    elif scheme in (*_TIMED_DRIVERS, "mssql"):
        import sqlalchemy

        engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": timeout} if scheme in _TIMED_DRIVERS else {})
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()


def _check_server(uri: str, timeout: float = 3.0) -> None:
    """Fail at once (not after MLflow's retries) when nothing answers at ``uri``."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):  # noqa: S310 (an http(s) URI)
            pass
    except urllib.error.HTTPError:
        pass  # something answers (a proxy's own page, an auth wall): let MLflow say what
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise RuntimeError(f"it cannot be reached: {reason}") from None


class Tracker:
    """Mirrors one run directory into one MLflow run."""

    def __init__(
        self, recipe: Recipe, run_dir: str | os.PathLike, *, parent: ParentRun | None = None,
        say: Callable[[str], None] = warn,
    ):
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.parent = parent
        self.mlflow = _Client(parent.uri if parent else resolve_uri(recipe, run_dir), say=say)
        self.run_id: str | None = None
        self.logged_step = -1

    @property
    def state_file(self) -> Path:
        return self.run_dir / STATE_FILE

    def callback(self):
        """A Keras callback: the run starts with training, each epoch is logged at its end."""
        return _callback(self)

    def start(self) -> None:
        """Open the MLflow run (the one this run directory already has, if any) and log the recipe."""
        self.mlflow.call(self._start)

    def _start(self, client) -> None:
        from mlflow.entities import RunStatus

        state = self._read_state()
        run = None
        if state.get("uri") == _shown(self.mlflow.uri) and state.get("run_id"):
            run = _existing_run(client, state["run_id"])
        if run is None:
            run = client.create_run(self._experiment_id(client), run_name=self.run_dir.name, tags=self._tags())
            state = {}
        else:
            client.update_run(run.info.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        self.run_id = run.info.run_id
        self.logged_step = int(state.get("logged_step", -1))
        self._log_params(client, run.data.params)
        self._write_state()

    def _experiment_id(self, client) -> str:
        if self.parent is not None:
            return client.get_run(self.parent.run_id).info.experiment_id
        section = self.recipe.tracking.mlflow if self.recipe.tracking else None
        name = (section and section.experiment) or self.recipe.name
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if self.mlflow.uri.startswith("sqlite:///") and self.mlflow.uri.endswith(f"/{LOCAL_STORE}/mlflow.db"):
            store = Path(self.mlflow.uri.removeprefix("sqlite:///")).parent
            location = (store / "artifacts").as_uri()  # beside the database, not in the working directory
        return client.create_experiment(name, artifact_location=location)

    def _tags(self) -> dict[str, str]:
        tags = {
            "trainkit.run_dir": str(self.run_dir.absolute()),
            "trainkit.recipe": self.recipe.name,
            "trainkit.recipe_hash": self._run_hash(),
        }
        if self.parent is not None:
            tags["mlflow.parentRunId"] = self.parent.run_id
        return tags

    def _run_hash(self) -> str:
        """The run's identity as run.json records it (the recipe's hash with its sources' digests)."""
        try:
            return str(RunDir(self.run_dir).read_status().get("recipe_hash") or self.recipe.hash)
        except RunDirError:
            return self.recipe.hash

    def _log_params(self, client, logged: dict[str, str]) -> None:
        from mlflow.entities import Param, RunTag

        params = flatten(self.recipe.to_dict())
        new = [Param(k, v) for k, v in params.items() if k not in logged]
        changed = [f"{k}: {logged[k]} -> {v}" for k, v in params.items() if k in logged and logged[k] != v]
        tags = [RunTag("trainkit.recipe_hash", self._run_hash())]
        if changed:
            tags.append(RunTag("trainkit.changed_on_resume", "; ".join(changed)[:MAX_PARAM_LENGTH]))
        for i in range(0, max(len(new), 1), 100):  # MLflow takes at most 100 parameters a call
            client.log_batch(self.run_id, params=new[i : i + 100], tags=tags if i == 0 else [])

    def log_epochs(self) -> None:
        """Log the epochs of ``metrics.jsonl`` not logged yet, each at its global step."""
        if self.run_id is not None:
            self.mlflow.call(self._log_epochs)

    def _log_epochs(self, client) -> None:
        from mlflow.entities import Metric

        metrics, last = [], self.logged_step
        for event in read_events(self.run_dir, "epoch"):
            step = int(event["step"])
            if step <= self.logged_step:
                continue  # logged before (or an epoch replayed after a resume)
            stamp = int(float(event.get("time", time.time())) * 1000)
            for key, value in event.items():
                if key not in _NOT_METRICS and isinstance(value, int | float) and not isinstance(value, bool):
                    metrics.append(Metric(key, float(value), stamp, step))
            last = max(last, step)
        for i in range(0, len(metrics), _BATCH):
            client.log_batch(self.run_id, metrics=metrics[i : i + _BATCH])
        if last != self.logged_step:
            self.logged_step = last
            self._write_state()

    def finish(self, status: str = "FINISHED") -> None:
        """End the MLflow run (``FINISHED``, ``FAILED`` or ``KILLED``); a finished one gets its artifacts."""
        if self.run_id is None:
            return
        self.log_epochs()
        self.mlflow.call(lambda client: self._finish(client, status))

    def _finish(self, client, status: str) -> None:
        if status == "FINISHED":
            for name, where in (("eval.json", None), ("config.yaml", None), ("model.keras", "model")):
                path = self.run_dir / name
                if path.is_file() and not path.is_symlink():
                    client.log_artifact(self.run_id, str(path), artifact_path=where)
        client.set_terminated(self.run_id, status=status)

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(read_regular(self.state_file, limit=1 << 16))
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _write_state(self) -> None:
        state = {"uri": _shown(self.mlflow.uri), "run_id": self.run_id, "logged_step": self.logged_step}
        write_json_atomic(self.state_file, state, within=self.run_dir)


def _existing_run(client, run_id: str):
    """The MLflow run ``run_id``, or None when the store no longer has it (deleted)."""
    try:
        run = client.get_run(run_id)
    except Exception:  # not found in this store
        return None
    return None if run.info.lifecycle_stage == "deleted" else run


def _callback(tracker: Tracker):
    import keras

    class MlflowTracking(keras.callbacks.Callback):
        """Logs the run to MLflow as it trains (see :mod:`trainkit.tracking`)."""

        def on_train_begin(self, logs=None):
            tracker.start()

        def on_epoch_end(self, epoch, logs=None):
            tracker.log_epochs()

        def on_train_end(self, logs=None):
            tracker.log_epochs()

    return MlflowTracking()


def parent_from_env() -> ParentRun | None:
    """The sweep's parent run named by this process's environment (:meth:`ParentRun.env`)."""
    run_id, uri = os.environ.get(PARENT_RUN_ENV), os.environ.get(PARENT_URI_ENV)
    return ParentRun(uri, run_id) if run_id and uri else None


def tracker_for(recipe: Recipe, run_dir: str | os.PathLike, *, parent: ParentRun | None = None) -> Tracker | None:
    """The run's tracker when its recipe asks for tracking (or a sweep's parent run is given)."""
    parent = parent or parent_from_env()
    if parent is None and not (recipe.tracking and recipe.tracking.mlflow):
        return None
    return Tracker(recipe, run_dir, parent=parent)


def start_parent(recipe: Recipe, sweep_dir: str | os.PathLike, *, name: str) -> ParentRun | None:
    """Open a sweep's parent MLflow run, where ``recipe`` would log a run in ``sweep_dir``.

    Returns None (after one warning) when it cannot be tracked. End it with :func:`end_parent`.
    """
    tracker = Tracker(recipe, Path(sweep_dir))
    uri = tracker.mlflow.uri

    def create(client) -> ParentRun:
        tags = {"trainkit.sweep_dir": str(Path(sweep_dir).absolute()), "trainkit.recipe": recipe.name}
        run = client.create_run(tracker._experiment_id(client), run_name=name, tags=tags)
        return ParentRun(uri, run.info.run_id)

    return tracker.mlflow.call(create)


def end_parent(parent: ParentRun, status: str = "FINISHED") -> None:
    """End a sweep's parent run (``FINISHED``, ``FAILED`` or ``KILLED``)."""
    _Client(parent.uri).call(lambda client: client.set_terminated(parent.run_id, status=status))
