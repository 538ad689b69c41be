"""Tracking in MLflow: a run's recipe, epochs and artifacts mirrored, resumed into the same MLflow run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import cli

pytest.importorskip("mlflow")

SMOKE = ["digits_mlp", "-c", "digits_mlp_smoke"]


def _recipe(*overrides: str):
    import trainkit

    return trainkit.load_recipe("digits_mlp", configs=["digits_mlp_smoke"], overrides=list(overrides))


def _epochs(run_dir) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["split"] == "epoch"]


def _only_run(client, experiment: str):
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]  # never a duplicate
    return runs[0]


def _assert_mirrors(client, run, run_dir) -> None:
    """The MLflow run holds the run directory's epochs, recipe and artifacts."""
    epochs = _epochs(run_dir)
    for key in ("loss", "accuracy", "val_loss", "learning_rate"):
        logged = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(logged) == [(e["step"], e[key]) for e in epochs]
    assert run.data.params["optimizer.learning_rate"] == "0.001"
    assert run.data.params["model.hidden_units"] == "[128, 64]"
    assert run.data.tags["trainkit.run_dir"] == str(run_dir.absolute())
    status = json.loads((run_dir / "run.json").read_text())
    assert run.data.tags["trainkit.recipe_hash"] == status["recipe_hash"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"eval.json", "config.yaml", "model"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "model")] == ["model/model.keras"]


def test_a_run_is_mirrored_in_a_local_store_and_a_resume_continues_its_mlflow_run(tmp_path):
    from mlflow import MlflowClient

    import trainkit

    run_dir = tmp_path / "runs" / "tracked"
    trainkit.train(_recipe("tracking.mlflow.experiment=digits"), run_dir=run_dir)
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlruns' / 'mlflow.db'}")  # what `mlflow ui` opens there
    first = _only_run(client, "digits")
    assert first.info.status == "FINISHED"
    _assert_mirrors(client, first, run_dir)
    assert (tmp_path / "runs" / "mlruns" / "artifacts").is_dir()  # artifacts beside the database

    trainkit.train(_recipe("tracking.mlflow.experiment=digits", "trainer.epochs=3"), run_dir=run_dir)
    resumed = _only_run(client, "digits")
    assert resumed.info.run_id == first.info.run_id and resumed.info.status == "FINISHED"
    assert len(_epochs(run_dir)) == 3
    _assert_mirrors(client, resumed, run_dir)
    assert "trainer.epochs: 2 -> 3" in resumed.data.tags["trainkit.changed_on_resume"]


@pytest.mark.slow
def test_a_sweep_trial_is_a_child_of_the_sweeps_parent_run(tmp_path):
    from mlflow import MlflowClient

    import trainkit
    from trainkit.tracking import end_parent, start_parent

    recipe = _recipe("trainer.epochs=1")
    parent = start_parent(recipe, tmp_path / "runs" / "sweep", name="sweep")
    trainkit.train(recipe, run_dir=tmp_path / "runs" / "sweep" / "trial-0", tracking_parent=parent)
    end_parent(parent)
    client = MlflowClient(parent.uri)
    child = client.search_runs([client.get_run(parent.run_id).info.experiment_id], "tags.mlflow.parentRunId != ''")
    assert [r.data.tags["mlflow.parentRunId"] for r in child] == [parent.run_id]
    assert client.get_run(parent.run_id).info.status == "FINISHED"


def test_an_unreachable_server_warns_once_and_never_raises(tmp_path, capsys):
    from trainkit.launch import free_ports
    from trainkit.tracking import Tracker

    port = free_ports(1)[0]  # nothing listens there
    tracker = Tracker(_recipe(f"tracking.mlflow.uri=http://127.0.0.1:{port}"), tmp_path / "run")
    tracker.start()
    tracker.log_epochs()
    tracker.finish("FINISHED")
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 1 and "cannot be reached" in warnings[0] and "goes on untracked" in warnings[0]


def test_a_file_where_the_local_store_goes_warns_once_and_the_training_goes_on(tmp_path):
    (tmp_path / "mlruns").write_text("not a folder\n")
    trained = cli("train", *SMOKE, "trainer.epochs=null", "trainer.steps=2", "tracking.mlflow.experiment=x",
                  "--run-dir", "run", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    (warning,) = [line for line in trained.stderr.splitlines() if "tracking" in line]
    assert "mlruns/mlflow.db failed ([Errno 17] File exists" in warning and warning.endswith("the run goes on untracked")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("store", ["folder", "not_a_database"])
def test_a_database_that_cannot_be_opened_warns_once_without_mlflows_retries(tmp_path, monkeypatch, capfd, store):
    import mlflow.store.db.utils as db_utils

    from trainkit.tracking import _Client

    db = tmp_path / "mlflow.db"
    db.mkdir() if store == "folder" else db.write_text("not a database\n")
    waits: list[float] = []
    monkeypatch.setattr(db_utils.time, "sleep", waits.append)  # MLflow retries 10 times, ~100 s of waits
    client = _Client(f"sqlite:///{db}")
    assert client.call(lambda c: c.search_experiments()) is None
    assert waits == []
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip() and "cuda" not in line]
    reason = "unable to open database file" if store == "folder" else "file is not a database"
    assert lines == [f"warning: tracking: MLflow at sqlite:///{db} failed ({reason}); the run goes on untracked"]


def test_without_mlflow_installed_tracking_warns_once(monkeypatch, capsys):
    from trainkit.tracking import _Client

    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    client = _Client("sqlite:///nowhere.db")
    assert client.call(lambda c: 1) is None and client.call(lambda c: 2) is None
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "warning: tracking: MLflow at sqlite:///nowhere.db failed (mlflow is not installed: "
        "pip install 'trainkit[tracking]'); the run goes on untracked"
    ]


def test_a_recipe_without_tracking_hashes_as_before():
    from trainkit.tracking import flatten

    recipe = _recipe()
    assert "tracking" not in recipe.to_dict()
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None, "e": {}}) == {"a.b": "1", "a.c": "[1, 2]", "d": "null", "e": "{}"}


@pytest.fixture
def mlflow_server(tmp_path):
    """A real ``mlflow server`` on a free loopback port, SQLite backend in a temporary folder."""
    from trainkit.launch import free_ports

    port = free_ports(1)[0]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "w"), start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2).close()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.5)
    yield uri
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


@pytest.mark.slow
def test_a_real_mlflow_server_gets_the_runs_epochs_and_a_resume_appends_to_its_run(tmp_path, mlflow_server):
    from mlflow import MlflowClient

    run_dir = tmp_path / "run"
    track = [f"tracking.mlflow.uri={mlflow_server}", "tracking.mlflow.experiment=served"]
    result = cli("train", *SMOKE, *track, "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    client = MlflowClient(mlflow_server)
    first = _only_run(client, "served")
    _assert_mirrors(client, first, run_dir)
    result = cli("train", *SMOKE, *track, "trainer.epochs=3", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    resumed = _only_run(client, "served")
    assert resumed.info.run_id == first.info.run_id
    assert len(client.get_metric_history(resumed.info.run_id, "loss")) == 3
    _assert_mirrors(client, resumed, run_dir)
    assert "warning" not in result.stderr
