"""The checkpoints of a run directory as data: which there are, which one a
name picks, and a model's weights read from one.

Layout of ``RUN_DIR/checkpoints/`` (written by :mod:`trainkit.training.checkpoint`)::

    ckpt-N.index, ckpt-N.data-*   the last ``keep`` checkpoints (N = global step)
    checkpoint                    TensorFlow's list of them (written atomically)
    best/ckpt-N.*                 the best by ``trainer.checkpoint.monitor``
    final/ckpt-N.*                the state when training ended
    corrupt/                      unreadable checkpoints moved aside on resume

A checkpoint is chosen by name (:func:`load_weights`): ``last`` (the newest one
that reads back), ``best``, ``final``, a step number or a checkpoint path.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from trainkit import console
from trainkit.errors import ConfigError, RunDirError, first_line
from trainkit.files import write_text_atomic

if TYPE_CHECKING:
    import keras

    from trainkit.rundir import RunDir

PREFIX = "ckpt"
_STEP = re.compile(rf"^{PREFIX}-(\d+)$")
#: What a checkpoint name may be, for messages.
CHOICES = "use last, best, final, a step number or a checkpoint path"


def step_of(path: str | os.PathLike) -> int:
    """The global step in a checkpoint prefix's name (``.../ckpt-120`` -> 120), or -1."""
    match = _STEP.match(Path(path).name)
    return int(match.group(1)) if match else -1


def candidates(directory: str | os.PathLike) -> list[str]:
    """Every checkpoint prefix in ``directory``, newest (highest step) first.

    Both the ones TensorFlow's ``checkpoint`` file lists and any ``ckpt-N.index``
    on disk: a kill between writing a checkpoint and listing it leaves a complete
    checkpoint that only the files show, and a damaged list must not hide the rest.
    """
    import tensorflow as tf

    directory = Path(directory)
    if not directory.is_dir():
        return []
    found: set[str] = set()
    try:
        state = tf.train.get_checkpoint_state(str(directory))
    except Exception:  # an unreadable list: the files still tell
        state = None
    if state is not None:
        for path in [*state.all_model_checkpoint_paths, state.model_checkpoint_path]:
            if path:
                found.add(str(directory / Path(path).name))
    for index in directory.glob(f"{PREFIX}-*.index"):
        found.add(str(index)[: -len(".index")])
    return sorted((p for p in found if step_of(p) >= 0), key=step_of, reverse=True)


def latest_readable(directory: str | os.PathLike, restore: Callable[[str], None]) -> tuple[str | None, list[tuple[str, str]]]:
    """The newest checkpoint that ``restore`` accepts, and the ``(path, reason)`` of those it refused."""
    skipped: list[tuple[str, str]] = []
    for path in candidates(directory):
        try:
            restore(path)
        except Exception as err:  # any failure to read back means: not usable
            skipped.append((path, reason(err)))
            continue
        return path, skipped
    return None, skipped


def reason(err: BaseException) -> str:
    """Why a checkpoint did not read back, in one short line."""
    return first_line(err)[:160]


def write_state(directory: Path, latest: str, paths: Sequence[str]) -> None:
    """Rewrite TensorFlow's ``checkpoint`` list (relative paths, atomically).

    Timestamps newer than ``last_preserved_timestamp`` keep the listed
    checkpoints subject to ``CheckpointManager``'s keep-last-K rotation.
    """
    now = time.time()
    lines = [f'model_checkpoint_path: "{Path(latest).name}"']
    lines += [f'all_model_checkpoint_paths: "{Path(p).name}"' for p in paths]
    lines += [f"all_model_checkpoint_timestamps: {now:.6f}" for _ in paths]
    lines.append(f"last_preserved_timestamp: {now - 1:.6f}")
    write_text_atomic(directory / "checkpoint", "\n".join(lines) + "\n")


def repair_state(directory: Path, warn: Callable[[str], None] | None = None) -> bool:
    """Rebuild an unreadable ``checkpoint`` list from the checkpoint files; True if it did.

    TensorFlow's ``CheckpointManager`` reads the list when it is made and fails on a
    damaged one (binary garbage: UnicodeDecodeError), although the files beside it
    say everything the list does.
    """
    import tensorflow as tf

    state_file = Path(directory) / "checkpoint"
    if not state_file.is_file():
        return False
    try:
        tf.train.get_checkpoint_state(str(directory))
        return False
    except Exception as err:  # any failure to parse: the list is damaged
        why = reason(err)
    found = [p for p in candidates(directory) if Path(p + ".index").is_file()]
    if found:
        write_state(Path(directory), found[0], sorted(found, key=step_of))
    else:
        state_file.unlink()
    (warn or console.warn)(
        f"warning: {state_file} could not be read ({why}); rebuilt it from the checkpoint files beside it"
    )
    return True


def restore_model_weights(model, path: str) -> None:
    """Only the model's weights from a training checkpoint (for evaluation, and a
    fine-tuning source)."""
    import tensorflow as tf

    from trainkit import compat

    tf.train.Checkpoint(model=model).restore(path).expect_partial()
    # The checkpoint's model also holds the optimizer it was compiled with. Left
    # pending, that state is poured into the next optimizer the model is compiled
    # with, variable by variable in order: a fine-tuning with its own optimizer.
    compat.forget_pending_restore(model, "optimizer")


def load_weights(model: keras.Model, directory: RunDir, which: str | int, *, field: str = "--checkpoint") -> str:
    """Load the weights of the checkpoint ``which`` names into ``model``; returns its path.

    ``which``: ``last`` (the newest checkpoint that reads back), ``best``,
    ``final``, a step number or a checkpoint path. ``field`` is the option or
    recipe field that named it, for error messages.
    """
    which = str(which)
    if which == "final":
        check_final_is_current(directory, field=f"{field} final")
    if which in ("last", "best", "final"):
        return _load_named(model, directory, which, field=field)
    ckpts = directory.checkpoints
    if which.isascii() and which.isdigit():
        kept = [ckpts / "final", ckpts / "best", ckpts]
        for folder in kept:
            path = folder / f"{PREFIX}-{int(which)}"
            if Path(f"{path}.index").is_file():
                return _load_path(model, str(path), field=field)
        steps = sorted({step_of(p) for folder in kept for p in candidates(folder)})
        shown = ", ".join(map(str, steps)) or "none"
        raise ConfigError(f"{field}: no checkpoint of step {which} in {ckpts} (kept steps: {shown}); {CHOICES}")
    path = which[: -len(".index")] if which.endswith(".index") else which
    if not Path(f"{path}.index").is_file():
        raise ConfigError(f"{field}: no checkpoint at {which}; {CHOICES}")
    return _load_path(model, path, field=field)


def check_final_is_current(directory: RunDir, *, field: str) -> None:
    """Refuse the final model of a run trained on past it and not finished again.

    A finished run resumed with a larger budget, then killed (or still training),
    keeps the ``final/`` checkpoint and ``model.keras`` of its earlier end: using
    them without a word would serve a model the run has moved on from, where a
    run killed in its first training is refused. ``--checkpoint STEP`` still reads
    the earlier final one.
    """
    final, newest = candidates(directory.checkpoints / "final"), candidates(directory.checkpoints)
    if final and newest and step_of(newest[0]) > step_of(final[0]):
        ended, now = step_of(final[0]), step_of(newest[0])
        raise RunDirError(
            f"{field}: {directory.path} was trained on past its final model (step {ended}) and has not finished "
            f"again (its newest checkpoint is step {now}); use last, best, or {ended} for the model of its earlier end"
        )


def _load_path(model: keras.Model, path: str, *, field: str) -> str:
    try:
        restore_model_weights(model, path)
    except Exception as err:
        raise RunDirError(f"{field}: {path} cannot be read back: {reason(err)}") from None
    return path


def _weights_of_old_run(model: keras.Model, directory: RunDir, field: str) -> str:
    """The weights of a run from before ``checkpoints/final/``: its ``model.keras``."""
    from trainkit.keras_archive import check_keras_archive

    check_keras_archive(directory.model_file, what=f"{field} final")
    try:
        model.load_weights(directory.model_file)
    except Exception as err:  # a foreign or damaged file: Keras says why in many ways
        raise RunDirError(f"{field} final: {directory.model_file} does not hold this run's weights ({reason(err)})") from None
    return str(directory.model_file)


def _load_named(model: keras.Model, directory: RunDir, which: str, *, field: str) -> str:
    """``last``, ``best`` or ``final``: the newest of that kind that reads back."""
    ckpts = directory.checkpoints
    where = ckpts if which == "last" else ckpts / which
    path, skipped = latest_readable(where, lambda p: restore_model_weights(model, p))
    for bad, why in skipped:
        console.warn(f"warning: checkpoint {bad} cannot be read back ({why}); skipped it")
    if path:
        return path
    if which == "final" and skipped:  # damaged: the newest good checkpoint, as resuming does
        path, _ = latest_readable(ckpts, lambda p: restore_model_weights(model, p))
        if path:
            console.warn(f"warning: {where} cannot be read back; using the newest good checkpoint, {path}")
            return path
        raise RunDirError(f"{field} final: {where} is damaged and no earlier checkpoint reads back; train the run again")
    if which == "final" and directory.model_file.is_file():
        return _weights_of_old_run(model, directory, field)
    if which == "best" and not skipped:
        raise RunDirError(
            f"{field} best: {where} holds no checkpoint (the run monitored no metric: "
            "trainer.checkpoint.monitor was null, or auto without a validation split); "
            "set trainer.checkpoint.monitor (e.g. loss) to keep the best one"
        )
    if which == "final" and not skipped:
        raise RunDirError(f"{field} final: {directory.path} has not finished training; use last, best, a step number or a checkpoint path")
    raise RunDirError(f"{field} {which}: {where} holds no readable checkpoint")
