"""The Optuna study behind a sweep: storage, sampler, pruner, and the queue of trials.

Trial numbers and run directories must never collide, even with many
processes on many machines sharing one storage, and ``trials`` is the total
across all of them. So the process that creates the study queues every trial
at once (``trials`` waiting trials, numbered 0..N-1 by that one process), and
every process, this one included, takes waiting trials off the queue with the
storage's own compare-and-set (waiting -> running succeeds for one process
only). No process ever creates a trial of its own.

A trial stopped by SIGINT/SIGTERM stays ``RUNNING`` with the user attribute
``interrupted``; the next ``trainkit sweep`` of the same study takes it up first
and trains it on from its checkpoint with the same parameters.

A process that dies without a word (SIGKILL, the out-of-memory killer, a power
cut) leaves its trial ``RUNNING`` too. To tell such an orphan from a trial a live
process trains, the claiming process holds a kernel lock on
``SWEEP_DIR/.claims/trial-NNNN.lock`` from before its claim until the trial is
told: the kernel drops it when the process dies, however it dies. A ``RUNNING``
trial claimed on this host whose lock is free (and which is still ``RUNNING``
once the lock is taken) is an orphan, taken up like an interrupted one. Trials
of other hosts are left alone: their locks may live in another sweep directory.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from trainkit.errors import ConfigError, first_line
from trainkit.sweeps.space import MAX_TRIALS, Sweep

#: The sweep directory's record of what it sweeps (read by ``sweep show`` and ``--best-config``).
SWEEP_JSON = "sweep.json"
#: The default storage, inside the sweep directory: Optuna's journal file (nothing to start).
JOURNAL = "study.journal"
#: The study attribute holding the queued total; set once the queue is complete.
QUEUED = "trainkit_trials"
#: The study attribute naming the process that queues its trials (``host:pid``), set first.
QUEUER = "trainkit_queuer"
QUEUE_WAIT_SECONDS = 120.0
#: The trial attribute naming the host whose process claimed it last.
OWNER = "owner_host"


def _optuna():
    try:
        import optuna
    except ImportError:  # pragma: no cover - the sweep extra installs it
        raise ConfigError("sweeps need Optuna: pip install 'trainkit[sweep]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def open_storage(url: str | None, sweep_dir: Path):
    """An Optuna storage: ``url`` (any RDB URL), or a journal file in ``sweep_dir``."""
    optuna = _optuna()
    if url is None:
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = str(sweep_dir / JOURNAL)
        # (The open-file lock: the default symlink lock would put links beside the journal.)
        return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    try:
        return _rdb_storage(optuna, rdb_url(url))
    except Exception as err:  # a bad URL, a server that does not answer, a missing driver
        raise ConfigError(f"--storage {url}: cannot open it: {first_line(err, limit=200)}") from None


#: How often a process that lost the race to create a new database's tables opens it again.
SCHEMA_RACE_TRIES = 5


def _rdb_storage(optuna, url: str):
    """Optuna's RDB storage, opened again when another process created its tables meanwhile.

    Processes started together on a new database each create Optuna's tables;
    on PostgreSQL the losers' ``CREATE TABLE`` fails in the catalog (a duplicate
    key in ``pg_type``, or "already exists"). The tables are there by then, so
    opening again succeeds. Any other error is raised at once.
    """
    for attempt in range(SCHEMA_RACE_TRIES - 1):
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as err:
            if not _lost_schema_race(err):
                raise
            time.sleep(0.2 * (attempt + 1))
    return optuna.storages.RDBStorage(url)  # the last try: whatever it raises, raised


def _lost_schema_race(err: Exception) -> bool:
    text = str(err).lower()
    return "already exists" in text or ("duplicate key" in text and "pg_" in text)


def rdb_url(url: str) -> str:
    """``postgresql://`` through psycopg (3) when psycopg2, SQLAlchemy's default driver, is absent."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        import importlib.util

        if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
            return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_sampler(sweep: Sweep, number: int | None = None):
    """The sweep's sampler; with ``number``, seeded for that trial alone.

    A sampler's random state lives in its process: seeded once, a sweep stopped
    and continued (or shared by several processes) would draw the same numbers
    again. Seeded by (seed, trial number), each trial's proposal depends only on
    the study's stored trials, wherever and whenever it is drawn. (The grid
    keeps one seed: its order is one permutation, indexed by trial number.)
    """
    optuna = _optuna()
    seed, kind = sweep.spec.seed, sweep.spec.sampler
    if number is not None and kind != "grid":
        seed = (seed * 1_000_003 + number) % 2**32
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise ConfigError(f"{sweep.source}: sampler cmaes needs the cmaes package: pip install 'trainkit[sweep]'") from None
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return _grid_sampler(optuna)({d.key: d.grid() for d in sweep.dimensions}, seed=seed)


def _grid_sampler(optuna):
    class GridSampler(optuna.samplers.GridSampler):
        """Optuna's grid, minus its ``study.stop()`` when the grid is covered: the queue
        already holds exactly the trials asked for, and ``stop`` only works inside ``optimize``."""

        def after_trial(self, study, trial, state, values) -> None:
            pass

    return GridSampler


def make_pruner(sweep: Sweep):
    optuna = _optuna()
    kind = sweep.spec.pruner
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def open_study(sweep: Sweep, storage, *, trials: int | None = None):
    """The sweep's study in ``storage``: created and queued, or loaded (and topped up to ``trials``)."""
    optuna = _optuna()
    total = trials or sweep.spec.trials
    direction = "maximize" if sweep.direction == "max" else "minimize"
    sampler, pruner = make_sampler(sweep), make_pruner(sweep)
    try:
        study = optuna.create_study(
            storage=storage, study_name=sweep.name, direction=direction, sampler=sampler, pruner=pruner
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=sweep.name, storage=storage, sampler=sampler, pruner=pruner)
        if study.direction.name.lower() != direction:
            raise ConfigError(
                f"{sweep.source}: the study '{sweep.name}' in this storage maximizes/minimizes the other way "
                f"({study.direction.name.lower()}); give the sweep another name or directory"
            ) from None
        queued = _wait_for_queue(study, total)
        if total > queued:  # a longer sweep asked for: queue the rest (from one process at a time)
            _queue(study, total - queued, total)
        return study
    _queue(study, total, total)
    return study


def _queue(study, count: int, total: int) -> None:
    from optuna.trial import TrialState, create_trial

    if total > MAX_TRIALS:
        raise ConfigError(f"trials: {total:,} is more than one sweep queues (at most {MAX_TRIALS:,}); split it into several sweeps")
    study.set_user_attr(QUEUER, f"{socket.gethostname()}:{os.getpid()}")
    for _ in range(count):
        study.add_trial(create_trial(state=TrialState.WAITING))
    study.set_user_attr(QUEUED, total)


def _wait_for_queue(study, total: int) -> int:
    """The queued total, once the creating process has queued every trial. A creator
    that died while queueing (Ctrl-C on a long queue) is finished here, at once."""
    deadline = time.monotonic() + QUEUE_WAIT_SECONDS
    while True:
        queued = study.user_attrs.get(QUEUED)
        if queued is not None:
            return int(queued)
        if _queuer_died(study.user_attrs.get(QUEUER)):
            _queue(study, max(0, total - len(study.get_trials(deepcopy=False))), total)
            return total
        if time.monotonic() > deadline:
            raise ConfigError(
                f"the study '{study.study_name}' exists but its trials were never queued "
                "(the process that created it died at once?); use another sweep name or directory"
            )
        time.sleep(0.5)


def _queuer_died(queuer: str | None) -> bool:
    """Whether the process named ``host:pid`` is known to have ended: on this host only."""
    host, _, pid = (queuer or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():  # this process, interrupted while queueing (a notebook's KeyboardInterrupt)
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False


def queued_total(study) -> int:
    return int(study.user_attrs.get(QUEUED) or len(study.get_trials(deepcopy=False)))


def claim_next(sweep: Sweep, study, storage, sweep_dir: Path) -> tuple[Any, Any] | None:
    """The next trial this process trains (an :class:`optuna.trial.Trial`) and the claim
    lock to release once it is told, or None when none is left.

    First a trial an orderly stop left behind or a dead process orphaned (it
    resumes from its checkpoint), then a waiting one, taken with the storage's
    compare-and-set.
    """
    claimed = _claim(study, storage, sweep_dir)
    if claimed is None:
        return None
    trial_id, number, lock = claimed
    study.sampler = make_sampler(sweep, number)
    import optuna

    return optuna.trial.Trial(study, trial_id), lock  # (its sampler's before_trial runs here)


def _claim_lock(sweep_dir: Path, number: int):
    """The claim lock of trial ``number``, taken; None where a live process holds it."""
    from trainkit.errors import RunDirError
    from trainkit.rundir.lock import RunLock

    folder = sweep_dir / ".claims"
    folder.mkdir(exist_ok=True)
    lock = RunLock(folder / f"trial-{number:04d}.lock", owner=sweep_dir / f"trial {number}")
    try:
        lock.acquire()
    except RunDirError:
        return None
    return lock


def _claim(study, storage, sweep_dir: Path) -> tuple[int, int, Any] | None:
    import optuna
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(study.study_name)
    host = socket.gethostname()
    for frozen in sorted(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)), key=lambda t: t.number):
        if not frozen.user_attrs.get("interrupted") and frozen.user_attrs.get(OWNER) != host:
            continue  # trained by a process of another host, or claimed before owners were recorded
        lock = _claim_lock(sweep_dir, frozen.number)
        if lock is None:
            continue  # a live process trains it
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
        if storage.get_trial(trial_id).state != TrialState.RUNNING:
            lock.release()  # told while we looked
            continue
        storage.set_trial_user_attr(trial_id, "interrupted", False)
        storage.set_trial_user_attr(trial_id, "resumed", int(frozen.user_attrs.get("resumed", 0)) + 1)
        storage.set_trial_user_attr(trial_id, OWNER, host)
        return trial_id, frozen.number, lock
    for frozen in sorted(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)), key=lambda t: t.number):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
        lock = _claim_lock(sweep_dir, frozen.number)
        if lock is None:
            continue
        try:
            taken = storage.set_trial_state_values(trial_id, state=TrialState.RUNNING)
        except optuna.exceptions.UpdateFinishedTrialError:
            taken = False
        if not taken:
            lock.release()  # another process took it
            continue
        storage.set_trial_user_attr(trial_id, OWNER, host)
        return trial_id, frozen.number, lock
    return None
