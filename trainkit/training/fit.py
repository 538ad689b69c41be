"""The training procedure: budget, validation, checkpoints, callbacks, signals.

:func:`fit` runs a built recipe to the end of its budget, in chunks of steps.
Each chunk is one call of :meth:`Trainer.train`; a chunk ends exactly where the
next event is due (a log line, a validation, a checkpoint, an epoch end, the end
of the budget), so running many steps per call never moves an event. With
``trainer.steps_per_execution: auto`` the chunk grows until a call takes about
``TARGET_CALL_SECONDS``: small models stop paying Python overhead per step,
large ones still report often.

SIGINT (Ctrl-C) and SIGTERM (preemption) are handled at the next chunk
boundary: a checkpoint is saved and :class:`Interrupted` is raised; training
into the same run directory continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from typing import Any

import keras

from trainkit.distribute import Consensus
from trainkit.errors import TrainkitError
from trainkit.training import report
from trainkit.training.checkpoint import Checkpointer
from trainkit.training.report import Reporter, format_metrics

TARGET_CALL_SECONDS = 0.2
MAX_STEPS_PER_CALL = 1000


class Interrupted(TrainkitError):
    """Training stopped by a signal after saving a checkpoint."""

    def __init__(self, signum: int, checkpoint: str | None):
        self.signum = signum
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name}; checkpoint saved at {checkpoint}; train again to resume")


class Diverged(TrainkitError):
    """The training loss became NaN or infinite."""

    exit_code = 3


class _SignalFlag:
    """Records SIGINT/SIGTERM instead of dying mid-step (main thread only)."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._record)
        return self

    def _record(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signum = signum

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class _Schedule:
    """When the next event is due, counted in global steps."""

    def __init__(self, every: int | None):
        self.every = every

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def steps_to_next(self, step: int) -> int:
        return self.every - step % self.every if self.every else math.inf


def fit(built, run_dir, *, callbacks: list, resume_from: str | None = None) -> dict[str, list]:
    """Train ``built`` (from :func:`trainkit.build.build`) into ``run_dir``.

    Returns the history: for each metric (``loss``, ``val_loss``, ...) its value
    at each epoch end, as Keras's ``History.history``.
    """
    recipe, trainer, data, strategy = built.recipe, built.trainer, built.data, built.strategy
    policy = recipe.trainer
    model = built.model
    epochs = policy.epochs or math.ceil(built.total_steps / built.steps_per_epoch)
    steps_per_epoch, total = built.steps_per_epoch, built.total_steps

    with strategy.scope():
        checkpointer = Checkpointer(
            run_dir.checkpoints,
            model=model,
            optimizer=trainer.optimizer,
            metrics=trainer.train_metrics,
            keep=policy.checkpoint.keep,
        )
    reporter = Reporter(run_dir, progress=policy.progress, total_steps=total, epochs=policy.epochs)
    history: dict[str, list] = {}
    callback_list = keras.callbacks.CallbackList(
        callbacks, model=model, epochs=epochs, steps=steps_per_epoch, verbose=0
    )
    log_every = _Schedule(policy.log_every_steps)
    validate_steps = _Schedule(policy.validation.every_steps)
    checkpoint_steps = _Schedule(policy.checkpoint.every_steps)
    has_validation = "validation" in data.arrays

    step, epoch, step_in_epoch = 0, 0, 0
    if resume_from:
        step, epoch, step_in_epoch = Checkpointer.counters(resume_from)
    iterator = iter(data.distributed_training(strategy, start_epoch=epoch, skip_batches=step_in_epoch))
    if resume_from:
        checkpointer.restore(resume_from)
    if resume_from and step < total:
        # Said even with progress off: a resumed run must never look like a fresh one.
        print(f"resumed from {resume_from} at step {step} (epoch {epoch + 1}, step {step_in_epoch} of it)", flush=True)

    spe = policy.steps_per_execution
    chunk = spe if isinstance(spe, int) else 1
    # Multi-worker: steps per call, timed saves and signals are agreed on by all workers.
    consensus = Consensus(strategy)
    last_saved = step if resume_from else None
    model.stop_training = False
    last_save_time = time.monotonic()
    started = time.perf_counter()
    start_step = step
    first_step_seconds = None

    def validate() -> dict[str, float]:
        results = trainer.evaluate(data.distributed(strategy, "validation", take=policy.validation.steps))
        reporter.log(split="validation", step=step, epoch=epoch, values=results)
        return {f"val_{k}": v for k, v in results.items()}

    def save() -> str:
        nonlocal last_save_time, last_saved
        last_save_time, last_saved = time.monotonic(), step
        return checkpointer.save(step=step, epoch=epoch, step_in_epoch=step_in_epoch)

    callback_list.on_train_begin()
    with _SignalFlag() as flag, contextlib.closing(reporter):
        while step < total and not model.stop_training:
            if step_in_epoch == 0:  # (a resumed epoch keeps its restored metrics)
                trainer.reset_train_metrics()
            callback_list.on_epoch_begin(epoch)
            while step_in_epoch < steps_per_epoch and step < total:
                n = min(
                    chunk,
                    steps_per_epoch - step_in_epoch,
                    total - step,
                    log_every.steps_to_next(step),
                    validate_steps.steps_to_next(step),
                    checkpoint_steps.steps_to_next(step),
                )
                call_start = time.perf_counter()
                trainer.train(iterator, n)
                if step == start_step and report.PROCESS_STARTED:
                    first_step_seconds = round(time.time() - report.PROCESS_STARTED, 2)
                step, step_in_epoch = step + n, step_in_epoch + n
                results = trainer.result()
                if spe == "auto":
                    chunk = _next_chunk(chunk, n, time.perf_counter() - call_start)
                if not math.isfinite(results["loss"]):
                    _diverged(run_dir, reporter, step, checkpointer.latest)
                callback_list.on_train_batch_end(step_in_epoch - 1, results)
                if log_every.due(step):
                    rate = reporter.steps_per_second(step)
                    reporter.log(split="train", step=step, epoch=epoch, values=results, steps_per_second=rate)
                    reporter.train_progress(step=step, epoch=epoch, values=results, rate=rate)
                if validate_steps.due(step) and has_validation:
                    reporter.say(f"  validation at step {step}: {format_metrics(validate(), '')}")
                seconds = policy.checkpoint.every_seconds
                time_due = bool(seconds and time.monotonic() - last_save_time >= seconds)
                chunk, (time_due, signaled) = consensus.agree(
                    chief_value=chunk, flags=(time_due, flag.signum is not None)
                )
                if checkpoint_steps.due(step) or time_due:
                    save()
                if signaled:
                    path = save()
                    run_dir.update_status(status="interrupted", step=step)
                    raise Interrupted(flag.signum or signal.SIGTERM, path)
                if model.stop_training:
                    break
            if step_in_epoch < steps_per_epoch and not model.stop_training:
                break  # the step budget ended inside this epoch
            logs = trainer.result()
            every = policy.validation.every_epochs
            last = step >= total
            if has_validation and ((every and (epoch + 1) % every == 0) or last):
                logs.update(validate())
            reporter.log(split="epoch", step=step, epoch=epoch, values=logs)
            reporter.say(f"epoch {epoch + 1}/{epochs}  {format_metrics(logs)}")
            for key, value in logs.items():
                history.setdefault(key, []).append(value)
            callback_list.on_epoch_end(epoch, logs)
            reporter.flush()
            epoch, step_in_epoch = epoch + 1, 0
            if policy.checkpoint.every_epoch or model.stop_training or step >= total:
                save()
    if last_saved != step:  # (not checkpointer.latest: a worker's scratch directory starts empty)
        save()
    callback_list.on_train_end(history and {k: v[-1] for k, v in history.items()})
    elapsed = time.perf_counter() - started
    run_dir.update_status(
        step=step,
        epoch=epoch,
        steps_per_second=round((step - start_step) / elapsed, 2) if elapsed > 0 else None,
        train_seconds=round(elapsed, 2),
        stopped_early=bool(model.stop_training),
        seconds_to_first_step=first_step_seconds,
    )
    return history


def _next_chunk(chunk: int, ran: int, seconds: float) -> int:
    """Grow (or shrink) steps per call toward TARGET_CALL_SECONDS per call."""
    if ran < chunk:  # cut short by an event: no information about the chunk size
        return chunk
    per_step = seconds / max(ran, 1)
    wanted = int(TARGET_CALL_SECONDS / max(per_step, 1e-6))
    return max(1, min(MAX_STEPS_PER_CALL, wanted, chunk * 4))


def _diverged(run_dir, reporter, step: int, checkpoint: str | None) -> None:
    run_dir.update_status(status="diverged", step=step)
    kept = f"; the last good checkpoint is {checkpoint}" if checkpoint else ""
    raise Diverged(f"the training loss became NaN or infinite by step {step}{kept}")
