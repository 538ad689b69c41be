"""Checkpoints that make a resumed run the same run, and that never break it.

A checkpoint holds the model, the optimizer (built first: DESIGN.md; its
``iterations`` is the learning-rate schedule's position), the step and epoch
counters with the position inside the epoch, the running training metrics, the
state of every Keras ``SeedGenerator`` in the model (Dropout, random
augmentation) -- which neither ``.weights.h5`` nor ``tf.train.Checkpoint`` track
by themselves -- and trainkit's own bookkeeping: the best monitored value so
far, the scalar state of stateful Keras callbacks (EarlyStopping,
ReduceLROnPlateau), the NaN rollbacks used and whether the run stopped early.

The data position needs no saved iterator: the training stream is a pure
function of (seed, epoch), so it is rebuilt at the saved epoch and the batches
already seen are skipped (TensorFlow 2.21 cannot checkpoint the iterators of
distributed datasets).

Layout of ``RUN_DIR/checkpoints/``::

    ckpt-N.index, ckpt-N.data-*   the last ``keep`` checkpoints (N = global step)
    checkpoint                    TensorFlow's list of them (written atomically)
    best/ckpt-N.*                 the best by ``trainer.checkpoint.monitor``
    final/ckpt-N.*                the state when training ended
    corrupt/                      unreadable checkpoints moved aside on resume

Why a kill never leaves a checkpoint that is picked and fails: TensorFlow
writes a checkpoint's files first and updates the ``checkpoint`` list after,
with a rename; and resuming does not trust the list anyway. It tries every
checkpoint found (listed or not), newest first, and restores the first one that
reads back completely -- each tensor carries a CRC32C, so truncated, damaged or
half-deleted files fail the restore instead of loading garbage. Skipped ones are
moved to ``corrupt/`` with a warning naming them.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import tensorflow as tf

from trainkit import console
from trainkit.errors import RunDirError
from trainkit.rundir.checkpoints import PREFIX, latest_readable, repair_state, step_of, write_state

#: Scalar attributes of Keras callbacks saved in checkpoints, per callback class.
#: ``EarlyStopping.best_weights`` (``restore_best_weights``) is not: it is a whole
#: copy of the model; use ``trainer.checkpoint.monitor`` for the best weights.
CALLBACK_STATE = {
    keras.callbacks.EarlyStopping: ("wait", "best", "best_epoch", "stopped_epoch"),
    keras.callbacks.ReduceLROnPlateau: ("wait", "best", "cooldown_counter"),
}


def seed_generator_states(model) -> list:
    """The state variables of every Keras SeedGenerator inside ``model``.

    ``model.variables`` holds them (nested layers' too), each named
    ``seed_generator_state`` by Keras's ``SeedGenerator``.
    """
    return [variable for variable in model.variables if variable.name == "seed_generator_state"]


def _files_of(prefix: str) -> list[Path]:
    path = Path(prefix)
    return sorted(path.parent.glob(path.name + ".*")) + (
        [path.parent / (path.name + "_temp")] if (path.parent / (path.name + "_temp")).exists() else []
    )


def _same_files(a: str, b: str) -> bool:
    """Whether two checkpoint prefixes are hard links to the same files."""
    try:
        return os.stat(a + ".index").st_ino == os.stat(b + ".index").st_ino
    except OSError:
        return False


class _CallbackState:
    """The scalar state of stateful Keras callbacks, mirrored in variables."""

    def __init__(self, callbacks: Sequence):
        self.entries: list[tuple[object, str, tf.Variable]] = []
        self.variables: dict[str, dict[str, tf.Variable]] = {}
        for i, callback in enumerate(callbacks):
            for cls, attributes in CALLBACK_STATE.items():
                if isinstance(callback, cls):
                    group = self.variables.setdefault(f"{i}_{type(callback).__name__}", {})
                    for attribute in attributes:
                        variable = tf.Variable(math.nan, dtype=tf.float64, trainable=False)
                        group[attribute] = variable
                        self.entries.append((callback, attribute, variable))
                    break

    def capture(self) -> None:
        for callback, attribute, variable in self.entries:
            value = getattr(callback, attribute, None)
            variable.assign(math.nan if value is None else float(value))

    def apply(self) -> None:
        """Put the restored values back (after ``on_train_begin``, which resets them)."""
        for callback, attribute, variable in self.entries:
            value = float(variable.numpy())
            if math.isnan(value):
                continue  # not in the checkpoint (or None when saved)
            old = getattr(callback, attribute, None)
            setattr(callback, attribute, int(value) if isinstance(old, int) and value.is_integer() else value)


def better_mode(monitor: str, mode: str) -> str:
    """``min`` or ``max`` for a monitored metric; ``auto`` guesses from its name."""
    if mode != "auto":
        return mode
    name = monitor.removeprefix("val_").lower()
    maximised = ("acc", "auc", "precision", "recall", "f1", "iou", "fmeasure")
    return "max" if any(word in name for word in maximised) else "min"


class Checkpointer:
    """Saves and restores a run's full training state in ``directory``."""

    def __init__(
        self,
        directory: str | Path,
        *,
        model,
        optimizer,
        metrics: Sequence = (),
        keep: int,
        callbacks: Sequence = (),
        monitor: str | None = None,
        mode: str = "auto",
    ):
        self.directory = Path(directory)
        self.keep = keep
        self.monitor = monitor
        self.mode = better_mode(monitor, mode) if monitor else None
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
        core = dict(
            model=model,
            optimizer=optimizer,
            step=self.step,
            epoch=self.epoch,
            step_in_epoch=self.step_in_epoch,
            rng={str(i): v for i, v in enumerate(seed_generator_states(model))},
            # Running epoch metrics, so an epoch resumed midway reports the whole epoch.
            metrics={f"{i}_{j}": v for i, m in enumerate(metrics) for j, v in enumerate(m.variables)},
        )
        # What the run's identity fixes is restored strictly; the bookkeeping
        # below may legitimately be absent (a callback added on resume, a
        # checkpoint of an older trainkit) and is restored leniently.
        self._best_value = tf.Variable(math.nan, dtype=tf.float64, trainable=False)
        self._best_step = tf.Variable(-1, dtype=tf.int64, trainable=False)
        self._best_monitor = tf.Variable("", dtype=tf.string, trainable=False)
        self._nan_rollbacks = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._stopped_early = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._callbacks = _CallbackState(callbacks)
        extras = dict(
            best={"value": self._best_value, "step": self._best_step, "monitor": self._best_monitor},
            nan_rollbacks=self._nan_rollbacks,
            stopped_early=self._stopped_early,
            callbacks=self._callbacks.variables,
        )
        self._core = tf.train.Checkpoint(**core)
        self._extras = tf.train.Checkpoint(state=extras)
        self._checkpoint = tf.train.Checkpoint(**core, state=extras)
        self._managers: dict[str, tf.train.CheckpointManager] = {}
        self.best: float | None = None
        self.nan_rollbacks = 0
        self.stopped_early = False
        self.save_seconds = 0.0
        self.saves = 0
        #: ``(step, epoch, step_in_epoch)`` of the newest checkpoint of each kind, as saved or restored.
        self.saved_at: dict[str, tuple[int, int, int]] = {}

    # -- where ----------------------------------------------------------------

    def _manager(self, kind: str = "last") -> tf.train.CheckpointManager:
        if kind not in self._managers:
            directory = self.directory if kind == "last" else self.directory / kind
            repair_state(directory)
            self._managers[kind] = tf.train.CheckpointManager(
                self._checkpoint, str(directory), max_to_keep=self.keep if kind == "last" else 1
            )
        return self._managers[kind]

    @property
    def latest(self) -> str | None:
        return self._manager().latest_checkpoint

    def counters(self) -> tuple[int, int, int]:
        """``(step, epoch, step_in_epoch)`` of the state last saved or restored."""
        return int(self.step.numpy()), int(self.epoch.numpy()), int(self.step_in_epoch.numpy())

    # -- saving ---------------------------------------------------------------

    def _write(self, kind: str, *, step: int, epoch: int, step_in_epoch: int) -> str:
        started = time.perf_counter()
        self.step.assign(step)
        self.epoch.assign(epoch)
        self.step_in_epoch.assign(step_in_epoch)
        self._nan_rollbacks.assign(self.nan_rollbacks)
        self._stopped_early.assign(int(self.stopped_early))
        self._callbacks.capture()
        path = self._manager(kind).save(checkpoint_number=step)
        self.saved_at[kind] = (step, epoch, step_in_epoch)
        self.save_seconds += time.perf_counter() - started
        self.saves += 1
        return path

    def save(self, *, step: int, epoch: int, step_in_epoch: int) -> str:
        """A checkpoint to resume from, among the last ``keep``."""
        return self._write("last", step=step, epoch=epoch, step_in_epoch=step_in_epoch)

    def save_final(self, *, step: int, epoch: int, step_in_epoch: int, same_as_last: bool = True) -> str:
        """The state at the end of training, kept apart from the rotation.

        When that very state was just saved to the rotation (as it is at the end
        of every budget), ``final/`` gets hard links to its files: the same bytes,
        no second write, and they outlive the rotation's deleting the original.
        ``same_as_last=False`` says the weights changed since (``use_ema``'s
        averages swapped in): then ``final/`` is written anew.
        """
        final = self._manager("final").latest_checkpoint
        just_saved = same_as_last and self.saved_at.get("last") == (step, epoch, step_in_epoch) and self.latest
        if same_as_last and final and step_of(final) == step and tf.io.gfile.exists(final + ".index"):
            if not (just_saved and step_of(self.latest) == step and not _same_files(final, self.latest)):
                return final
            # final/ links the files of an earlier save of this step, which the
            # rotation has since rewritten (a damaged checkpoint set aside and the
            # step trained again): link the new files instead.
        if just_saved:
            linked = self._link("final", self.latest)
            if linked:
                return linked
        return self._write("final", step=step, epoch=epoch, step_in_epoch=step_in_epoch)

    def _link(self, kind: str, source: str) -> str | None:
        """Hard links in ``kind/`` to the files of checkpoint ``source``; None where
        the file system has no hard links (then the caller writes a copy)."""
        folder = self.directory / kind
        name = Path(source).name
        files = sorted(Path(source).parent.glob(f"{name}.*"))
        if not files:
            return None
        folder.mkdir(parents=True, exist_ok=True)
        try:
            for file in files:
                target = folder / file.name
                target.unlink(missing_ok=True)
                os.link(file, target)
        except OSError:
            return None
        write_state(folder, name, [name])  # the list last, as TensorFlow does
        for old in folder.glob(f"{PREFIX}-*"):  # one checkpoint per kind, as its manager keeps
            if old.is_file() and not old.name.startswith(f"{name}."):
                old.unlink(missing_ok=True)
        self._managers.pop(kind, None)  # re-read the list on the next use
        return str(folder / name)

    def is_better(self, value: float) -> bool:
        if not self.monitor or not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def save_best(self, value: float, *, step: int, epoch: int, step_in_epoch: int) -> str:
        """Record ``value`` as the best so far and keep this state in ``best/``."""
        self.best = value
        self._best_value.assign(value)
        self._best_step.assign(step)
        self._best_monitor.assign(self.monitor or "")
        return self._write("best", step=step, epoch=epoch, step_in_epoch=step_in_epoch)

    # -- restoring ------------------------------------------------------------

    def restore(self, path: str) -> None:
        """Restore everything from ``path``; raises if it cannot be read back whole."""
        # expect_partial(): the other root's part of the file is not unrestored state.
        self._core.restore(path).assert_existing_objects_matched().expect_partial()
        self._extras.restore(path).expect_partial()

    def rollback(self, path: str) -> None:
        """Return the model, optimizer, random and metric state to ``path`` (NaN recovery).

        The bookkeeping (counters, best value, rollbacks used) moves on.
        """
        self._core.restore(path).assert_existing_objects_matched().expect_partial()

    def restore_latest(self, *, warn: Callable[[str], None] | None = None) -> str | None:
        """Resume from the newest checkpoint that reads back; ``None`` if there is none.

        Unreadable newer ones are moved to ``checkpoints/corrupt/`` with a
        warning each. If checkpoints exist but none reads back, raises rather
        than start over on top of them.
        """
        warn = warn or console.warn
        self._managers.pop("last", None)
        repair_state(self.directory, warn)
        path, skipped = latest_readable(self.directory, self.restore)
        if path is None:
            if skipped:  # left as they are, for a person to look at
                shown = ", ".join(f"{Path(p).name} ({reason})" for p, reason in skipped[:3])
                raise RunDirError(
                    f"{self.directory}: none of its checkpoints can be read back: {shown}; "
                    "train with --restart to start over (the old run is kept aside)"
                )
            return None
        for bad, reason in skipped:
            where = self._move_aside(bad)
            warn(
                f"warning: checkpoint {Path(bad).name} in {self.directory} cannot be read back ({reason}); "
                f"skipped it{' and moved it to ' + str(where) if where else ''}"
            )
        self._load_bookkeeping()
        self.saved_at["last"] = self.counters()
        state = tf.train.get_checkpoint_state(str(self.directory))
        listed = [str(self.directory / Path(p).name) for p in (state.all_model_checkpoint_paths if state else [])]
        if skipped or not state or Path(state.model_checkpoint_path).name != Path(path).name:
            older = sorted((p for p in listed if step_of(p) < step_of(path)), key=step_of)
            write_state(self.directory, path, [*older[-(self.keep - 1) :], path] if self.keep > 1 else [path])
        for temp in self.directory.glob(f"{PREFIX}-*_temp"):
            shutil.rmtree(temp, ignore_errors=True)  # the parts of a save that was killed
        return path

    def _load_bookkeeping(self) -> None:
        self.nan_rollbacks = int(self._nan_rollbacks.numpy())
        self.stopped_early = bool(self._stopped_early.numpy())
        self.best = None
        if self.monitor:
            # The best/ checkpoint may be newer than the one resumed from.
            stored = [(self._best_monitor.numpy().decode(), float(self._best_value.numpy()))]
            best_path = self._manager("best").latest_checkpoint
            if best_path:
                stored.append(_read_best(best_path))
            values = [v for m, v in stored if m == self.monitor and v is not None and math.isfinite(v)]
            if values:
                self.best = min(values) if self.mode == "min" else max(values)
                self._best_value.assign(self.best)
                self._best_monitor.assign(self.monitor)

    def apply_callback_state(self) -> None:
        """Give the Keras callbacks their restored state (call after ``on_train_begin``)."""
        self._callbacks.apply()

    def _move_aside(self, prefix: str) -> Path | None:
        files = _files_of(prefix)
        if not files:
            return None
        target = self.directory / "corrupt"
        target.mkdir(exist_ok=True)
        for file in files:
            os.replace(file, target / file.name)
        return target


def _read_best(path: str) -> tuple[str, float | None]:
    """``(monitor, best value)`` stored in a checkpoint, read without restoring it."""
    try:
        reader = tf.train.load_checkpoint(path)
        monitor = reader.get_tensor("state/best/monitor/.ATTRIBUTES/VARIABLE_VALUE")
        value = reader.get_tensor("state/best/value/.ATTRIBUTES/VARIABLE_VALUE")
    except Exception:  # unreadable or without a best: nothing to compare with
        return "", None
    return (monitor.decode() if isinstance(monitor, bytes) else str(monitor)), float(value)


def read_counters(path: str) -> tuple[int, int, int]:
    """``(step, epoch, step_in_epoch)`` stored in a checkpoint, read without restoring it."""
    reader = tf.train.load_checkpoint(path)
    read = lambda name: int(reader.get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE"))  # noqa: E731
    return read("step"), read("epoch"), read("step_in_epoch")
