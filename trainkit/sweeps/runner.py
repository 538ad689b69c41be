"""Trials as ordinary runs: each one is :func:`trainkit.train` into ``SWEEP_DIR/trial-NNNN``.

A trial's recipe is the sweep's base with its fixed settings and the trial's
parameters. Its checkpoints keep the best by the sweep's metric
(``trainer.checkpoint.monitor``), and a Keras callback reports the metric to
the pruner at every validation of the training controller: a pruned trial
stops there through ``model.stop_training`` (as Keras's ``EarlyStopping``),
its checkpoint saved, and is told ``PRUNED``. A trial that fails (NaN, a
parameter combination the recipe refuses) is told ``FAIL`` with its reason and
the sweep goes on. SIGINT/SIGTERM stop the trial in training after its
checkpoint is saved and leave it ``RUNNING`` and ``interrupted``: the same
command later trains it on from there, bit-exact, with the same parameters. A
trial whose process was killed outright is taken up the same way, from its last
checkpoint (see :mod:`trainkit.sweeps.study`).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trainkit.sweeps.study as studies
from trainkit.errors import ConfigError, first_line
from trainkit.files import read_regular, write_json_atomic
from trainkit.signals import SignalRecorder
from trainkit.sweeps.space import Sweep

SWEEP_JSON = studies.SWEEP_JSON
DEFAULT_SWEEPS = Path("runs") / "sweeps"


def trial_dir(sweep_dir: Path, number: int) -> Path:
    return sweep_dir / f"trial-{number:04d}"


def describe(sweep: Sweep, storage_url: str | None) -> dict[str, Any]:
    """What ``sweep.json`` records: enough to read the study back and rebuild any trial's recipe."""
    spec = sweep.spec
    return {
        "name": sweep.name,
        "source": sweep.source,
        "base": spec.base,
        "configs": list(spec.configs),
        "fixed": sweep.fixed,
        "metric": spec.metric,
        "direction": sweep.direction,
        "sampler": spec.sampler,
        "pruner": spec.pruner,
        "seed": spec.seed,
        "space": {d.key: spec.space[d.key] for d in sweep.dimensions},  # (a key fixed on the command line is not searched)
        "storage": storage_url,
    }


def recorded_storage(sweep_dir: Path) -> str | None:
    """The storage URL a sweep directory's ``sweep.json`` names (None: its own journal, or no sweep yet)."""
    path = sweep_dir / SWEEP_JSON
    if not path.is_file():
        return None
    try:
        return json.loads(read_regular(path)).get("storage")
    except (OSError, ValueError, AttributeError):  # (a damaged record is prepare_dir's to refuse)
        return None


def prepare_dir(sweep: Sweep, sweep_dir: Path, storage_url: str | None) -> None:
    """Create the sweep directory, or check that it holds this very sweep."""
    record = describe(sweep, storage_url)
    path = sweep_dir / SWEEP_JSON
    if path.is_file():
        before = json.loads(read_regular(path))
        changed = sorted(k for k in record if k != "source" and before.get(k) != record[k])
        if changed:
            raise ConfigError(
                f"{sweep_dir} holds another sweep (different {', '.join(changed)}); "
                "use another --sweep-dir, or the same sweep file and settings to continue it"
            )
        return
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)


def check_metric(sweep: Sweep) -> None:
    """The sweep's metric must be one the runs report: checked by building the base once."""
    from trainkit.api import validate

    recipe = sweep.recipe({"trainer.checkpoint.monitor": sweep.spec.metric, "trainer.progress": False})
    try:
        validate(recipe)
    except ConfigError as err:
        text = str(err)
        if text.startswith("trainer.checkpoint.monitor:"):
            raise ConfigError(f"{sweep.source}: metric:{text.split(':', 1)[1]}") from None
        raise ConfigError(f"{sweep.source}: the base recipe: {text}") from None


def pruning_callback(trial, metric: str, reported: set[int]):
    import keras

    class PruneOnValidation(keras.callbacks.Callback):
        """Reports the sweep's metric to the trial at each validation; stops a pruned trial.

        The step reported is the run's global step (steps per epoch from Keras's
        ``params["steps"]``). Steps reported before (a resumed trial) are not
        reported again, so the pruner decides as it did the first time.
        """

        def __init__(self):
            super().__init__()
            self.epoch, self.step, self.pruned_at = 0, 0, None

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            self.step = self.epoch * int(self.params.get("steps") or 0) + batch + 1

        def on_test_end(self, logs=None):
            if metric.startswith("val_"):
                self._report((logs or {}).get(metric[len("val_"):]))

        def on_epoch_end(self, epoch, logs=None):
            if not metric.startswith("val_"):
                self._report((logs or {}).get(metric))

        def _report(self, value) -> None:
            if value is None or not math.isfinite(value) or self.pruned_at is not None:
                return
            if self.step not in reported:
                trial.report(float(value), self.step)
                reported.add(self.step)
            if trial.should_prune():
                self.pruned_at = self.step
                self.model.stop_training = True

    return PruneOnValidation()


def trial_recipe_values(sweep: Sweep, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's overrides: its parameters, checkpoints kept by the sweep's metric, quiet progress."""
    return {
        **params,
        "trainer.checkpoint.monitor": sweep.spec.metric,
        "trainer.checkpoint.mode": sweep.direction,
        "trainer.progress": False,
    }


def run_trial(sweep: Sweep, study, storage, trial, sweep_dir: Path, report) -> None:
    """Train one trial and tell the study how it ended. Re-raises a stop (SIGINT/SIGTERM)."""
    from optuna.trial import TrialState

    from trainkit.api import train
    from trainkit.training.stops import TrainingStopped

    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), trial.number)
    frozen = storage.get_trial(trial_id)
    params = {d.key: d.suggest(trial) for d in sweep.dimensions}
    target = trial_dir(sweep_dir, trial.number)
    storage.set_trial_user_attr(trial_id, "run_dir", target.name)
    reported = set(frozen.intermediate_values)
    callback = pruning_callback(trial, sweep.spec.metric, reported)
    report.trial_started(trial.number, params, resumed=bool(frozen.user_attrs.get("resumed")))
    started = time.monotonic()
    try:
        recipe = sweep.recipe(trial_recipe_values(sweep, params))
        run = train(recipe, run_dir=target, callbacks=[callback])
    except (TrainingStopped, KeyboardInterrupt):
        storage.set_trial_user_attr(trial_id, "interrupted", True)
        report.trial_ended(trial.number, "RUNNING", None, params, note="interrupted: the same command resumes it")
        raise
    except Exception as err:  # a diverged trial, parameters the recipe refuses, a user component's error
        reason = f"{type(err).__name__}: {first_line(err)}"[:500]
        storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        _record_run(storage, trial_id, target, time.monotonic() - started)
        study.tell(trial, state=TrialState.FAIL)
        report.trial_ended(trial.number, "FAIL", None, params, note=reason)
        return
    _record_run(storage, trial_id, target, time.monotonic() - started)
    if callback.pruned_at is not None:
        study.tell(trial, state=TrialState.PRUNED)
        report.trial_ended(trial.number, "PRUNED", None, params, note=f"pruned at step {callback.pruned_at}")
        return
    values = run.history.get(sweep.spec.metric) or []
    value = values[-1] if values else None
    if value is None or not math.isfinite(value):
        reason = f"the run reported no finite {sweep.spec.metric}"
        storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        study.tell(trial, state=TrialState.FAIL)
        report.trial_ended(trial.number, "FAIL", None, params, note=reason)
        return
    study.tell(trial, float(value))
    report.trial_ended(trial.number, "COMPLETE", float(value), params)
    from trainkit.sweeps.report import write_hparams

    write_hparams(target, sweep, trial.number, params, float(value))


def _record_run(storage, trial_id: int, target: Path, seconds: float) -> None:
    from trainkit.rundir import RunDir

    info = RunDir(target).read_status() if (target / "run.json").is_file() else {}
    storage.set_trial_user_attr(trial_id, "steps", int(info.get("step") or 0))
    before = storage.get_trial(trial_id).user_attrs.get("seconds", 0.0)
    storage.set_trial_user_attr(trial_id, "seconds", round(before + seconds, 2))


def run_sweep(
    sweep: Sweep,
    *,
    sweep_dir: str | os.PathLike | None = None,
    storage_url: str | None = None,
    trials: int | None = None,
    report=None,
):
    """Train the sweep's trials in this process until none is left; returns the study.

    Stops, leaving the trial in training resumable, on SIGINT/SIGTERM (raised
    as :class:`trainkit.Interrupted` / :class:`trainkit.Terminated`).
    """
    from trainkit.sweeps.report import SweepReport

    directory = Path(sweep_dir or DEFAULT_SWEEPS / sweep.name)
    fresh = not (directory / SWEEP_JSON).is_file()
    if fresh:
        check_metric(sweep)  # before anything is written
    storage_url = storage_url or recorded_storage(directory)  # (continued where its study lives)
    storage = studies.open_storage(storage_url, directory) if storage_url else None  # (a URL that fails: nothing written)
    prepare_dir(sweep, directory, storage_url)
    storage = storage or studies.open_storage(None, directory)
    study = studies.open_study(sweep, storage, trials=trials)
    report = report or SweepReport(sweep, total=studies.queued_total(study))
    # A signal between trials (while a recipe builds) is kept, and stops the next
    # training at its start: it never kills the process with a trial half-told.
    with SignalRecorder() as flag:
        while flag.signum is None:
            claimed = studies.claim_next(sweep, study, storage, directory)
            if claimed is None:
                break
            trial, lock = claimed
            try:
                run_trial(sweep, study, storage, trial, directory, report)
            finally:
                lock.release()
    report.finished(study)
    if flag.signum is not None:
        from trainkit.training.stops import stopped_by

        raise stopped_by(flag.signum, str(directory), None)  # (between trials: every trial is told)
    return study


# ------------------------------------------------------------------ local worker processes


def visible_gpus(environ: dict[str, str] | None = None) -> list[str]:
    """The GPUs a worker may be given: ``CUDA_VISIBLE_DEVICES`` if set, else those ``nvidia-smi -L`` lists."""
    environ = os.environ if environ is None else environ
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def gpu_assignment(workers: int, gpus: list[str]) -> list[str | None]:
    """``CUDA_VISIBLE_DEVICES`` of each worker: round robin over ``gpus``; None (unchanged) without GPUs."""
    if not gpus:
        return [None] * workers
    return [gpus[i % len(gpus)] for i in range(workers)]


def run_workers(sweep: Sweep, argv: list[str], *, workers: int, sweep_dir: Path, storage_url: str | None, trials: int | None) -> int:
    """``workers`` local ``trainkit sweep`` processes on one study; returns the exit code.

    The study is created and queued here first, so the workers only take trials.
    SIGINT/SIGTERM are passed on to every worker (each saves its trial's checkpoint).
    """
    if not (sweep_dir / SWEEP_JSON).is_file():
        check_metric(sweep)
    storage_url = storage_url or recorded_storage(sweep_dir)
    storage = studies.open_storage(storage_url, sweep_dir) if storage_url else None
    prepare_dir(sweep, sweep_dir, storage_url)
    studies.open_study(sweep, storage or studies.open_storage(None, sweep_dir), trials=trials)
    processes = []
    for gpu in gpu_assignment(workers, visible_gpus()):
        env = dict(os.environ)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        command = [sys.executable, "-m", "trainkit.cli", "sweep", *argv, "--workers", "1", "--sweep-dir", str(sweep_dir)]
        processes.append(subprocess.Popen(command, env=env))
    with SignalRecorder() as flag:
        while any(p.poll() is None for p in processes):
            if flag.signum is not None:
                for p in processes:
                    if p.poll() is None:
                        p.send_signal(flag.signum)
                flag.signum = None
            time.sleep(0.2)
    codes = [p.returncode for p in processes]
    return next((c for c in codes if c), 0)
