"""Hyperparameter sweeps: the sweep file checked before any trial, trials as runs, pruning,
failures, kill and resume, show and the best config, GPU assignment of local workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _checkpoint_helpers import messages, weights
from conftest import ROOT, checkout_env, cli, run_cli

from trainkit.errors import ConfigError
from trainkit.sweeps import load_sweep
from trainkit.sweeps.runner import gpu_assignment, visible_gpus

#: Every trial small: a tiny MLP, 2 epochs, no export beyond model.keras.
SMALL = ["model.hidden_units=[16]", "trainer.epochs=2", "trainer.evaluate=[validation]"]


def write_sweep(path: Path, space: dict, **fields) -> Path:
    import yaml

    data = {"base": "digits_mlp", "metric": "val_accuracy", "trials": 3, "seed": 3, **fields, "space": space}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


LR = {"optimizer.learning_rate": {"loguniform": [1.0e-3, 1.0e-2]}}


# ------------------------------------------------------------------ the sweep file


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ({"trainer.epoch": {"int": [1, 3]}}, "space.trainer.epoch: int value 1: unknown key 'epoch' in trainer"),
        ({"model.hiden_units": {"choice": [[16]]}}, "builder 'mlp' has no argument 'hiden_units'; did you mean 'hidden_units'?"),
        ({"optimizer.learning_rat": {"uniform": [0.1, 0.2]}}, "has no argument 'learning_rat'; did you mean 'learning_rate'?"),
        ({"data.batch_size": {"uniform": [16, 128]}}, "space.data.batch_size: uniform value"),
        ({"model.hidden_units": {"loguniform": [1, 100]}}, "space.model.hidden_units: loguniform value 1.0"),
        ({"optimizer.learning_rate": {"choice": [0.01, -1]}}, "space.optimizer.learning_rate: choice value -1"),
        ({"runtime.precision": {"choice": ["float32", "float8"]}}, "choice value 'float8'"),
        ({"optimizer.learning_rate": {"loguniform": [0.0, 0.1]}}, "loguniform needs low > 0"),
        ({"optimizer.learning_rate": {"logunifrom": [0.01, 0.1]}}, "did you mean 'loguniform'?"),
        ({"model.dropout": {"uniform": [0.5, 0.1]}}, "uniform needs low < high"),
        ({"model.dropout": {"uniform": [float("nan"), 0.5]}}, "uniform takes two finite numbers [low, high]"),
        ({"data.batch_size": {"choice": [32, 64, 32]}}, "space.data.batch_size: choice lists 32 more than once"),
        ({"model.hidden_units": {"choice": [[8], [16], [8]]}}, "space.model.hidden_units: choice lists [8] more than once"),
        ({}, "space: is empty; name at least one recipe key to search"),
        ((LR, "grid"), "space.optimizer.learning_rate: sampler grid needs choice or int"),
    ],
)
def test_a_bad_space_key_is_one_line_naming_the_file_and_key(tmp_path, space, expected):
    space, sampler = space if isinstance(space, tuple) else (space, "tpe")
    path = write_sweep(tmp_path / "bad.yaml", space, sampler=sampler)
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    text = str(err.value)
    assert text.startswith(f"{path}: "), text
    assert expected in text
    assert "\n" not in text


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"sampler": "bayes"}, "sampler: Input should be 'tpe', 'random', 'grid' or 'cmaes'"),
        ({"pruner": "asha"}, "pruner: Input should be 'median', 'hyperband' or 'none'"),
        ({"trails": 3}, "unknown key 'trails'; did you mean 'trials'?"),
        ({"sampler": "grid", "space": {"model.dropout": {"uniform": [0.0, 0.5]}}}, "sampler grid needs choice or int"),
        ({"name": "../../elsewhere"}, "name: Value error, a sweep name is a name, not a path"),
        ({"trials": 100_000_000}, "trials: Input should be less than or equal to 100000"),
    ],
)
def test_a_bad_sweep_setting_is_one_line(tmp_path, fields, expected):
    space = fields.pop("space", LR)
    path = write_sweep(tmp_path / "bad.yaml", space, **fields)
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace("?", r"\?")):
        load_sweep(path)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["sweep", "show", "sd", "--best-config", "missing/best.yaml"], "--best-config missing/best.yaml: the folder missing does not exist"),
        (["sweep", "digits_mlp_sweep", "--trials", "100000000"], "--trials: give 1 to 100,000, got 100,000,000"),
        (["eval", "run", "--watch", "--every-seconds", "nan"], "--every-seconds: must be a number above 0 and at most 86,400"),
        (["eval", "run", "--watch", "--every-seconds", "inf"], "--every-seconds: must be a number above 0 and at most 86,400"),
    ],
    ids=["best-config-folder", "trials", "every-nan", "every-inf"],
)
def test_bad_options_of_sweep_show_and_watch_are_one_line(tmp_path, args, expected):
    result = cli(*args, cwd=tmp_path)
    (line,) = messages(result.stderr)
    assert result.returncode == 2 and expected in line, result.stderr
    assert not list(tmp_path.iterdir())


def test_a_sweep_continues_in_the_storage_its_directory_names_and_a_bad_one_writes_nothing(tmp_path):
    path = write_sweep(tmp_path / "s.yaml", LR)
    refused = cli("sweep", str(path), "--storage", "foo://bar", "--sweep-dir", "bad", cwd=tmp_path)
    assert refused.returncode == 2 and "--storage foo://bar: cannot open it" in refused.stderr and not (tmp_path / "bad").exists()
    small = [*SMALL, "trainer.epochs=1", "--sweep-dir", "sd"]
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert cli("sweep", str(path), *small, "--trials", "1", "--storage", url, cwd=tmp_path).returncode == 0
    assert cli("sweep", str(path), *small, "--trials", "2", cwd=tmp_path).returncode == 0  # (no --storage: the recorded one)
    assert not (tmp_path / "sd" / "study.journal").exists()
    shown = cli("sweep", "show", "sd", cwd=tmp_path)
    assert [line.split()[:2] for line in shown.stdout.splitlines()[1:3]] == [["0", "COMPLETE"], ["1", "COMPLETE"]], shown.stdout
    other = cli("sweep", str(path), *small, "--trials", "3", "--storage", f"sqlite:///{tmp_path / 'other.db'}", cwd=tmp_path)
    assert other.returncode == 2 and "holds another sweep (different storage)" in other.stderr


def test_a_sweep_whose_trials_all_failed_exits_1_and_writes_no_best_config(tmp_path):
    path = write_sweep(tmp_path / "s.yaml", {"model.activation": {"choice": ["reluu"]}})  # (a value the builder refuses)
    failed = cli("sweep", str(path), *SMALL, "--trials", "1", "--sweep-dir", "sd", cwd=tmp_path)
    assert failed.returncode == 1 and "error: no trial completed; 1 failed (why: trainkit sweep show sd)" in failed.stderr
    shown = cli("sweep", "show", "sd", "--best-config", "best.yaml", cwd=tmp_path)
    assert shown.returncode == 2 and "--best-config best.yaml: not written, as no trial has completed" in shown.stderr
    assert not (tmp_path / "best.yaml").exists()


@pytest.mark.parametrize("given_as", ["argument", "--space"])
def test_the_command_refuses_a_bad_space_with_exit_2_and_writes_nothing(tmp_path, given_as):
    path = write_sweep(tmp_path / "bad.yaml", {"model.hiden_units": {"choice": [[16], [32]]}})
    named = [str(path)] if given_as == "argument" else ["--space", str(path)]
    result = cli("sweep", *named, *SMALL, cwd=tmp_path)
    assert result.returncode == 2
    lines = messages(result.stderr)
    assert len(lines) == 1 and "did you mean 'hidden_units'?" in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_a_metric_the_runs_do_not_report_is_refused_before_anything_is_written(tmp_path):
    path = write_sweep(tmp_path / "bad.yaml", LR, metric="val_acc")
    result = cli("sweep", str(path), *SMALL, cwd=tmp_path)
    assert result.returncode == 2
    assert "metric: 'val_acc' is not a metric of this run; did you mean 'val_accuracy'?" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_the_direction_is_inferred_from_the_metric(tmp_path):
    assert load_sweep(write_sweep(tmp_path / "a.yaml", LR)).direction == "max"
    assert load_sweep(write_sweep(tmp_path / "b.yaml", LR, metric="val_loss")).direction == "min"
    assert load_sweep(write_sweep(tmp_path / "c.yaml", LR, metric="val_loss", direction="max")).direction == "max"


def test_the_reference_sweep_is_found_by_name_and_valid():
    sweep = load_sweep("digits_mlp_sweep")
    assert sweep.spec.seed is not None and sweep.spec.pruner == "median"
    assert [d.key for d in sweep.dimensions] == [
        "optimizer.learning_rate", "model.hidden_units", "model.dropout", "data.batch_size"
    ]


def test_a_searched_key_set_on_the_command_line_is_fixed_and_leaves_the_search(tmp_path):
    sweep = load_sweep("digits_mlp_sweep", ["model.hidden_units=[16]"])
    assert "model.hidden_units" not in [d.key for d in sweep.dimensions] and sweep.fixed["model.hidden_units"] == [16]
    assert sweep.recipe({"model.dropout": 0.1}).model.model_extra["hidden_units"] == [16]
    path = write_sweep(tmp_path / "both.yaml", LR, overrides={"optimizer.learning_rate": 0.01})
    with pytest.raises(ConfigError, match="optimizer.learning_rate is both fixed .overrides:. and searched .space:.; keep one of them"):
        load_sweep(path)
    with pytest.raises(ConfigError, match=r"the command line fixes every searched key \(optimizer.learning_rate\); nothing is left"):
        load_sweep(write_sweep(tmp_path / "one.yaml", LR), ["optimizer.learning_rate=0.01"])


def test_a_queue_its_creator_left_unfinished_is_finished_at_once_by_the_next_process(tmp_path, monkeypatch):
    import socket

    import optuna
    from optuna.trial import TrialState, create_trial

    from trainkit.sweeps import study as studies

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", LR, trials=5))
    storage = studies.open_storage(None, tmp_path)
    made = optuna.create_study(storage=storage, study_name=sweep.name, direction="maximize")
    creator = subprocess.Popen(["true"])
    creator.wait()  # (stopped while queueing: two of five trials queued, no total recorded)
    made.set_user_attr(studies.QUEUER, f"{socket.gethostname()}:{creator.pid}")
    for _ in range(2):
        made.add_trial(create_trial(state=TrialState.WAITING))
    monkeypatch.setattr(studies, "QUEUE_WAIT_SECONDS", 0.0)  # (a live creator's queue is waited for; this one is not)
    again = studies.open_study(sweep, studies.open_storage(None, tmp_path))
    assert again.user_attrs[studies.QUEUED] == 5 and len(again.get_trials(deepcopy=False)) == 5
    live = optuna.create_study(storage=storage, study_name="live", direction="maximize")
    live.set_user_attr(studies.QUEUER, f"{socket.gethostname()}:1")  # (alive: init) -- its queue is never taken over
    with pytest.raises(ConfigError, match="its trials were never queued"):
        studies.open_study(load_sweep(write_sweep(tmp_path / "t.yaml", LR, name="live")), storage)


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "grid"])
def test_each_sampler_and_pruner_is_optunas_seeded(tmp_path, sampler):
    import optuna

    from trainkit.sweeps.study import make_pruner, make_sampler

    space = {"model.hidden_units": {"choice": [[16], [32]]}, "trainer.epochs": {"int": [1, 2]}}
    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", space, sampler=sampler, pruner="hyperband"))
    made = make_sampler(sweep, 3)
    assert type(made).__name__ == {"tpe": "TPESampler", "random": "RandomSampler", "cmaes": "CmaEsSampler", "grid": "GridSampler"}[sampler]
    assert isinstance(make_pruner(sweep), optuna.pruners.HyperbandPruner)


def test_a_postgresql_url_uses_psycopg_when_psycopg2_is_absent():
    import importlib.util

    from trainkit.sweeps.study import rdb_url

    url = rdb_url("postgresql://u@h:5432/db")
    expected = "postgresql://u@h:5432/db" if importlib.util.find_spec("psycopg2") else "postgresql+psycopg://u@h:5432/db"
    assert url == expected
    assert rdb_url("sqlite:///x.db") == "sqlite:///x.db"


def test_a_process_that_lost_the_race_to_create_the_tables_opens_the_storage_again(tmp_path):
    # PostgreSQL's words when two processes create Optuna's tables at once (seen in CI).
    from trainkit.sweeps import study

    race = "duplicate key value violates unique constraint \"pg_type_typname_nsp_index\""
    tries = []

    class Storages:
        @staticmethod
        def RDBStorage(url):  # noqa: N802 - Optuna's name
            tries.append(url)
            if len(tries) < 3:
                raise RuntimeError(race)
            return "opened"

    class Optuna:
        storages = Storages

    assert study._rdb_storage(Optuna, "postgresql://x") == "opened" and len(tries) == 3
    tries.clear()
    refused = type("Refused", (), {"storages": type("S", (), {"RDBStorage": staticmethod(lambda url: 1 / 0)})})
    with pytest.raises(ZeroDivisionError):  # anything else is not retried
        study._rdb_storage(refused, "postgresql://x")


# ------------------------------------------------------------------ local workers and GPUs


def test_workers_get_gpus_round_robin_and_none_without_gpus():
    assert gpu_assignment(3, []) == [None, None, None]
    assert gpu_assignment(4, ["0", "1"]) == ["0", "1", "0", "1"]
    assert gpu_assignment(2, ["3", "5", "7"]) == ["3", "5"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []


# ------------------------------------------------------------------ end to end


def _sweep_env() -> dict[str, str]:
    return checkout_env()


def _trials(sweep_dir: Path):
    from trainkit.sweeps.report import open_sweep

    return open_sweep(sweep_dir)


@pytest.mark.slow
def test_a_sweep_trains_trials_as_runs_prunes_records_failures_and_writes_a_best_config(tmp_path):
    import trainkit

    # A grid, so the order is fixed by the seed (5: 0.03, 0.01, 1e-6, 1e9): the hopeless rate
    # comes after two good ones and is pruned at a validation; SGD at 1e9 diverges and fails.
    space = {"optimizer.learning_rate": {"choice": [0.03, 0.01, 1.0e-6, 1.0e9]}}
    path = write_sweep(tmp_path / "grid.yaml", space, sampler="grid", trials=4, seed=5, overrides={"optimizer.type": "sgd"})
    result = trainkit.sweep(path, SMALL + ["trainer.validation.every_steps=20"], sweep_dir=tmp_path / "sw")
    rows = {row["optimizer.learning_rate"]: row for row in result.rows()}
    assert [rows[lr]["number"] for lr in (0.03, 0.01, 1.0e-6, 1.0e9)] == [0, 1, 2, 3]
    assert rows[0.03]["state"] == "COMPLETE" and rows[0.01]["state"] == "COMPLETE"
    assert rows[1.0e9]["state"] == "FAIL" and "Diverged" in rows[1.0e9]["note"]
    hopeless = rows[1.0e-6]
    assert hopeless["state"] == "PRUNED"
    assert hopeless["steps"] < 2 * 45  # stopped before its budget (2 epochs of 45 steps)
    run = trainkit.load_run(hopeless["run_dir"])
    assert run.status == "completed" and run.info["stopped_early"]
    assert list((Path(hopeless["run_dir"]) / "checkpoints").glob("ckpt-*.index"))
    # Every trial is an ordinary run directory.
    best = result.best
    assert best.run_dir.name.startswith("trial-") and best.history["val_accuracy"]
    frame = result.trials
    assert list(frame.index) == [0, 1, 2, 3] and {"state", "val_accuracy", "steps", "seconds"} <= set(frame.columns)
    figure = result.plot()
    assert len(figure.axes) >= 3
    # HParams for TensorBoard, per completed trial.
    assert list((best.run_dir / "tensorboard" / "hparams").glob("events.out.tfevents.*"))
    # The best config trains, in another process, to the same result.
    shown = cli("sweep", "show", str(tmp_path / "sw"), "--best-config", "best.yaml", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "PRUNED" in shown.stdout or "COMPLETE" in shown.stdout
    assert f"best: trial {result.best_trial().number}" in shown.stdout
    assert "base: digits_mlp" in (tmp_path / "best.yaml").read_text()
    again = run_cli("train", "best.yaml", "--run-dir", "again", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    retrained = json.loads((tmp_path / "again" / "eval.json").read_text())["validation"]["accuracy"]
    assert retrained == pytest.approx(result.best_trial().value, abs=1e-6)


def _start_sweep(sweep: Path, sweep_dir: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "trainkit.cli", "sweep", str(sweep), *extra, "--sweep-dir", str(sweep_dir)]
    return subprocess.Popen(command, cwd=sweep_dir.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_sweep_env())


#: The sweep that is stopped and continued, and its arguments.
STOPPED = {"space": LR, "trials": 2, "pruner": "none", "seed": 11}
STOPPED_ARGS = ("model.hidden_units=[16]", "trainer.epochs=30", "trainer.evaluate=[validation]")


@pytest.fixture(scope="module")
def uninterrupted_sweep(tmp_path_factory) -> Path:
    """The sweep of the stop-and-continue tests, run once without a stop (in this process)."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    path = write_sweep(folder / "lr.yaml", **STOPPED)
    whole = cli("sweep", str(path), *STOPPED_ARGS, "--sweep-dir", str(folder / "reference"), cwd=folder)
    assert whole.returncode == 0, whole.stderr
    return folder / "reference"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_sweep_continues_with_the_interrupted_trial_bit_exact(tmp_path, signum, uninterrupted_sweep):
    """SIGTERM: the trial is stopped in order. SIGKILL: the process dies without a word, and
    the orphaned trial is still taken up (its claim lock died with the process)."""
    path = write_sweep(tmp_path / "lr.yaml", **STOPPED)
    args = STOPPED_ARGS
    stopped = tmp_path / "stopped"
    process = _start_sweep(path, stopped, *args)
    first = stopped / "trial-0000" / "metrics.jsonl"
    deadline = time.monotonic() + 240
    # A kill must come after a checkpoint (SIGTERM saves one on its way out).
    def far_enough() -> bool:
        trained = first.is_file() and first.read_text().count('"split": "epoch"') >= 3
        saved = signum != signal.SIGKILL or any((first.parent / "checkpoints").glob("ckpt-*.index"))
        return trained and saved

    while not far_enough():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the first trial never trained"
        time.sleep(0.05)
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    if signum == signal.SIGKILL:
        assert process.returncode == -signum
    else:
        assert process.returncode == 128 + signum, err
        assert "checkpoint saved" in err
    assert not (stopped / "trial-0001").exists()
    assert _trials(stopped).rows()[0]["state"] == "RUNNING"
    # The same command again (here, in this process): the interrupted trial resumes, then the second one runs.
    resumed = cli("sweep", str(path), *args, "--sweep-dir", str(stopped), cwd=stopped.parent)
    assert resumed.returncode == 0, resumed.stderr
    rows = _trials(stopped).rows()
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE"]
    assert "trial 0 of 2: resuming its run from its checkpoint" in resumed.stdout
    assert json.loads((stopped / "trial-0000" / "run.json").read_text())["resumed_at"]
    # An uninterrupted sweep of the same file proposes the same parameters and ends bit-identical.
    reference = uninterrupted_sweep
    expected = _trials(reference).rows()
    assert [r["optimizer.learning_rate"] for r in rows] == [r["optimizer.learning_rate"] for r in expected]
    for name in ("trial-0000", "trial-0001"):
        a, b = weights(stopped / name), weights(reference / name)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), name
    assert [r["val_accuracy"] for r in rows] == [r["val_accuracy"] for r in expected]


# ------------------------------------------------------------------ many processes, one study

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    """A real PostgreSQL 15 server on a loopback port, run as an unprivileged user
    (it refuses root) in a temporary directory; stopped and removed after the test."""
    import pwd
    import shutil
    import tempfile

    if not (PG_BIN / "initdb").is_file() or not (PG_BIN / "postgres").is_file():
        pytest.skip(f"PostgreSQL 15's server binaries are not installed ({PG_BIN}: apt-get install postgresql-15)")
    user = pwd.getpwnam("nobody") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
    as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if os.geteuid() == 0 else {}
    home = Path(tempfile.mkdtemp(prefix="trainkit-pg-"))  # (not under pytest's root-only tmp)
    os.chown(home, user.pw_uid, user.pw_gid)
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "HOME": str(home)}
    init = subprocess.run(
        [str(PG_BIN / "initdb"), "-D", str(home / "data"), "-U", "trainkit", "--auth=trust", "--no-locale", "-E", "UTF8"],
        cwd=home, env=env, capture_output=True, text=True, timeout=120, **as_user,
    )
    assert init.returncode == 0, init.stderr
    port = _free_port()
    server = subprocess.Popen(
        [str(PG_BIN / "postgres"), "-D", str(home / "data"), "-p", str(port), "-k", str(home),
         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
        cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **as_user,
    )
    url = f"postgresql://trainkit@127.0.0.1:{port}/postgres"
    try:
        import psycopg

        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(f"host=127.0.0.1 port={port} user=trainkit dbname=postgres", connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                assert server.poll() is None, server.communicate()[1]
                assert time.monotonic() < deadline, "PostgreSQL did not start"
                time.sleep(0.2)
        yield url
    finally:
        server.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(home, ignore_errors=True)


def _trial_lines(out: str) -> list[int]:
    import re

    return [int(n) for n in re.findall(r"^trial (\d+) of \d+: (?:COMPLETE|PRUNED|FAIL)", out, re.MULTILINE)]


@pytest.mark.slow
def test_two_processes_on_one_postgresql_study_share_the_trials_without_duplicates(tmp_path, postgres):
    path = write_sweep(tmp_path / "lr.yaml", LR, trials=4, pruner="none")
    shared = tmp_path / "shared"
    processes = [_start_sweep(path, shared, *SMALL, "--storage", postgres) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
    done = [_trial_lines(out) for out, _ in outputs]
    numbers = sorted(done[0] + done[1])
    assert numbers == [0, 1, 2, 3], done  # each trial trained once, by one of the two
    assert sorted(p.name for p in shared.glob("trial-*")) == [f"trial-{n:04d}" for n in range(4)]
    rows = _trials(shared).rows()
    assert [r["number"] for r in rows] == [0, 1, 2, 3] and {r["state"] for r in rows} == {"COMPLETE"}
    assert json.loads((shared / "sweep.json").read_text())["storage"] == postgres


@pytest.mark.slow
def test_local_workers_share_the_default_storage(tmp_path):
    path = write_sweep(tmp_path / "lr.yaml", LR, trials=3, pruner="none")
    result = run_cli("sweep", str(path), *SMALL, "--workers", "2", "--sweep-dir", "sw", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    assert sorted(_trial_lines(result.stdout)) == [0, 1, 2]
    rows = _trials(tmp_path / "sw").rows()
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3


# ------------------------------------------------------------------ notebooks


@pytest.mark.slow
def test_a_sweep_in_a_notebook_has_one_live_display_and_no_retracing_warnings(tmp_path, monkeypatch):
    import nbclient
    import nbformat

    path = write_sweep(tmp_path / "lr.yaml", LR, trials=6, pruner="median")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    cells = [
        "import trainkit",
        f"result = trainkit.sweep({str(path)!r}, {SMALL!r}, sweep_dir='sw')",
        "result.trials",
        "result.plot()",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = notebook.cells

    def text(cell) -> str:
        parts = []
        for out in cell.outputs:
            parts.append(out.get("text", ""))
            parts.extend(str(v) for v in out.get("data", {}).values())
        return "\n".join(parts)

    sweep_cell = code[1]
    displays = [o for o in sweep_cell.outputs if o["output_type"] == "display_data"]
    assert len(displays) == 1, sweep_cell.outputs  # one live table, updated in place: not one per trial
    assert "6 of 6 trials" in text(sweep_cell)
    assert len(sweep_cell.outputs) <= 2, [o["output_type"] for o in sweep_cell.outputs]
    assert "retracing" not in "\n".join(text(c) for c in code)
    assert "val_accuracy" in code[2].outputs[0]["data"]["text/html"]
    assert "image/png" in code[3].outputs[0]["data"]
