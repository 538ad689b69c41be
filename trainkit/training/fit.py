"""The training procedure: budget, validation, checkpoints, callbacks, signals.

:func:`fit` runs a built recipe to the end of its budget, in chunks of steps.
Each chunk is one call of :meth:`Trainer.train`; a chunk ends exactly where the
next event is due (a log line, a validation, a checkpoint, an epoch end, the end
of the budget), so running many steps per call never moves an event. With
``trainer.steps_per_execution: auto`` the chunk grows until a call takes about
``TARGET_CALL_SECONDS``: small models stop paying Python overhead per step,
large ones still report often.

SIGINT (Ctrl-C) and SIGTERM (preemption) are handled at the next chunk
boundary: a checkpoint is saved and :class:`Interrupted` is raised (exit code
128 + the signal number: 130 and 143); training into the same run directory
continues exactly where it stopped.

A NaN or infinite training loss, or a NaN or infinite weight (a loss can stay
finite while the weights diverge), is caught at the end of the chunk it appears
in, before anything is saved, so no checkpoint ever holds a diverged state.
``trainer.nan_policy: stop`` raises :class:`Diverged` (exit code 3);
``rollback`` restores the last good checkpoint's model, optimizer, random and
metric state but keeps the data position, so the batches read since that
checkpoint (the offending ones among them) are skipped, up to
``trainer.nan_max_retries`` times in a run.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time

import keras

from trainkit import distribute, teardown
from trainkit.distribute import Consensus
from trainkit.errors import ConfigError, TrainkitError, did_you_mean
from trainkit.signals import SignalRecorder
from trainkit.training import input_wait, report
from trainkit.training.checkpoint import Checkpointer, read_counters
from trainkit.training.report import Reporter, format_metrics

TARGET_CALL_SECONDS = 0.2
MAX_STEPS_PER_CALL = 1000


class Interrupted(TrainkitError):
    """Training stopped by a signal after saving a checkpoint."""

    label = "interrupted"

    def __init__(self, signum: int, checkpoint: str | None, step: int | None = None):
        self.signum = signum
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        at = f" at step {step}" if step is not None else ""
        super().__init__(f"stopped by {name}{at}; checkpoint saved at {checkpoint}; train again to resume")


class Diverged(TrainkitError):
    """The training loss or the model's weights became NaN or infinite."""

    exit_code = 3


class _Schedule:
    """When the next event is due, counted in global steps."""

    def __init__(self, every: int | None):
        self.every = every

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def steps_to_next(self, step: int) -> int:
        return self.every - step % self.every if self.every else math.inf


def metric_names(built) -> list[str]:
    """The names a run reports (``loss``, ``accuracy``, ``val_loss``, ...), for monitors."""
    names = list(built.trainer.result())
    if "validation" in built.data.arrays:
        names += [f"val_{name}" for name in names]
    return names


def check_policy(built) -> None:
    """Checks of the trainer section that need the built run; raise before anything is written."""
    monitor = built.recipe.trainer.checkpoint.monitor
    if monitor is not None:
        names = metric_names(built)
        if monitor not in names:
            hint = did_you_mean(monitor, names)
            no_val = "" if "validation" in built.data.arrays else " (there is no validation split)"
            raise ConfigError(
                f"trainer.checkpoint.monitor: '{monitor}' is not a metric of this run{no_val}; {hint}"
            )


def fit(built, run_dir, *, callbacks: list) -> dict[str, list]:
    """Train ``built`` (from :func:`trainkit.build.build`) into ``run_dir``.

    Resumes from the newest readable checkpoint in ``run_dir`` if there is one.
    Returns the history: for each metric (``loss``, ``val_loss``, ...) its value
    at each epoch end, as Keras's ``History.history``.
    """
    recipe, trainer, data, strategy = built.recipe, built.trainer, built.data, built.strategy
    policy = recipe.trainer
    model = built.model
    epochs = policy.epochs or math.ceil(built.total_steps / built.steps_per_epoch)
    steps_per_epoch, total = built.steps_per_epoch, built.total_steps

    checkpointer = Checkpointer(
        run_dir.checkpoints,
        model=model,
        optimizer=trainer.optimizer,
        metrics=trainer.train_metrics,
        keep=policy.checkpoint.keep,
        callbacks=callbacks,
        monitor=policy.checkpoint.monitor,
        mode=policy.checkpoint.mode,
    )
    history: dict[str, list] = {}
    callback_list = keras.callbacks.CallbackList(
        callbacks, model=model, epochs=epochs, steps=steps_per_epoch, verbose=0
    )
    log_every = _Schedule(policy.log_every_steps)
    validate_steps = _Schedule(policy.validation.every_steps)
    checkpoint_steps = _Schedule(policy.checkpoint.every_steps)
    profiler = _Profiler(policy.profile_steps, run_dir.tensorboard)
    stages = built.stages or _NoStages()
    has_validation = data.has_split("validation")

    step, epoch, step_in_epoch = 0, 0, 0
    resumed_from = checkpointer.restore_latest()
    if resumed_from:
        step, epoch, step_in_epoch = checkpointer.counters()
        # Said even with progress off: a resumed run must never look like a fresh one.
        print(f"resumed from {resumed_from} at step {step} (epoch {epoch + 1}, step {step_in_epoch} of it)", flush=True)
        if step >= total:
            print(f"already trained to step {step} of {total}; evaluating the final model", flush=True)
    _enter_stage(stages, step, trainer, print if resumed_from else None)
    reporter = Reporter(run_dir, progress=policy.progress, total_steps=total, epochs=policy.epochs)
    iterator = iter(data.distributed_training(strategy, start_epoch=epoch, skip_batches=step_in_epoch))

    spe = policy.steps_per_execution
    chunk = spe if isinstance(spe, int) else 1
    # Multi-worker: steps per call, timed saves and signals are agreed on by all workers.
    consensus = Consensus(strategy)
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
        nonlocal last_save_time
        last_save_time = time.monotonic()
        checkpointer.stopped_early = bool(model.stop_training)
        if checkpointer.saved_at.get("last") == (step, epoch, step_in_epoch):
            return checkpointer.latest  # this very state is saved already
        return checkpointer.save(step=step, epoch=epoch, step_in_epoch=step_in_epoch)

    def consider_best(values: dict[str, float]) -> None:
        monitor = checkpointer.monitor
        if monitor in values and checkpointer.is_better(values[monitor]):
            checkpointer.stopped_early = bool(model.stop_training)
            checkpointer.save_best(values[monitor], step=step, epoch=epoch, step_in_epoch=step_in_epoch)
            reporter.say(f"  best {monitor} so far: {values[monitor]:.4g} at step {step} (checkpoints/best)")

    def roll_back(bad_step: int, what: str) -> None:
        good = checkpointer.latest
        if policy.nan_policy != "rollback" or good is None:
            _diverged(run_dir, what, bad_step, good)
        if checkpointer.nan_rollbacks >= policy.nan_max_retries:
            _diverged(run_dir, what, bad_step, good, f" after {checkpointer.nan_rollbacks} rollback(s) (trainer.nan_max_retries)")
        good_step, good_epoch, _ = read_counters(good)
        try:
            checkpointer.rollback(good)
        except Exception as err:  # the last good checkpoint is unreadable: nothing to roll back to
            _diverged(run_dir, what, bad_step, None, f"; rolling back to {good} failed: {err}")
        checkpointer.nan_rollbacks += 1
        if good_epoch != epoch:
            trainer.reset_train_metrics()  # the restored running metrics belong to another epoch
        skipped = bad_step - good_step
        print(
            f"warning: the {what} became NaN or infinite by step {bad_step}; rolled back to "
            f"{good} (step {good_step}) and skipped the {skipped} batch(es) read since it "
            f"(rollback {checkpointer.nan_rollbacks} of at most {policy.nan_max_retries})",
            file=sys.stderr,
            flush=True,
        )
        reporter.log(split="nan_rollback", step=bad_step, epoch=epoch, values={}, restored_step=good_step, skipped_batches=skipped)

    callback_list.on_train_begin()
    if resumed_from:
        checkpointer.apply_callback_state()
        if checkpointer.stopped_early and step < total:
            print(f"the run stopped early at step {step}; not training further (--restart trains again)", flush=True)
            model.stop_training = True
    if policy.nan_policy == "rollback" and checkpointer.latest is None:
        save()  # something to roll back to
    with SignalRecorder(second_interrupt_stops=True) as flag, contextlib.closing(reporter), profiler:
        while step < total and not model.stop_training:
            if step_in_epoch == 0:  # (a resumed epoch keeps its restored metrics)
                trainer.reset_train_metrics()
            callback_list.on_epoch_begin(epoch)
            epoch_clock = (trainer.input_seconds, trainer.loop_seconds)
            results = None  # this epoch's metrics, as the last training call returned them
            while step_in_epoch < steps_per_epoch and step < total:
                n = min(
                    chunk,
                    steps_per_epoch - step_in_epoch,
                    total - step,
                    log_every.steps_to_next(step),
                    validate_steps.steps_to_next(step),
                    checkpoint_steps.steps_to_next(step),
                    profiler.steps_to_next(step),
                    stages.steps_to_next(step),
                )
                profiler.at(step)
                call_start = time.perf_counter()
                results = trainer.train(iterator, n)
                if step == start_step and report.PROCESS_STARTED:
                    first_step_seconds = round(time.time() - report.PROCESS_STARTED, 2)
                step, step_in_epoch = step + n, step_in_epoch + n
                profiler.at(step)
                if spe == "auto":
                    chunk = _next_chunk(chunk, n, time.perf_counter() - call_start)
                broken = _what_diverged(results, trainer)
                if broken:
                    roll_back(step, broken)  # or raise Diverged: never save this state
                    results = trainer.result()
                _enter_stage(stages, step, trainer, reporter.say)
                callback_list.on_train_batch_end(step_in_epoch - 1, results)
                if log_every.due(step):
                    rate = reporter.steps_per_second(step)
                    reporter.log(split="train", step=step, epoch=epoch, values=results, steps_per_second=rate)
                    reporter.train_progress(step=step, epoch=epoch, values=results, rate=rate)
                if validate_steps.due(step) and has_validation:
                    val = validate()
                    reporter.say(f"  validation at step {step}: {format_metrics(val, '')}")
                    consider_best(val)
                seconds = policy.checkpoint.every_seconds
                time_due = bool(seconds and time.monotonic() - last_save_time >= seconds)
                chunk, (time_due, signaled) = consensus.agree(
                    chief_value=chunk, flags=(time_due, flag.signum is not None)
                )
                if checkpoint_steps.due(step) or time_due:
                    save()
                if signaled:
                    path = save()
                    run_dir.update_status(status="interrupted", step=step, **_costs(checkpointer))
                    raise Interrupted(flag.signum or signal.SIGTERM, path, step)
                if model.stop_training:
                    break
            if step_in_epoch < steps_per_epoch and not model.stop_training:
                break  # the step budget ended inside this epoch
            # (None: resumed from a checkpoint taken at this epoch's last step)
            logs = dict(results) if results is not None else trainer.result()
            every = policy.validation.every_epochs
            last = step >= total
            if has_validation and ((every and (epoch + 1) % every == 0) or last):
                logs.update(validate())
            waited_seconds, loop_seconds = trainer.input_seconds - epoch_clock[0], trainer.loop_seconds - epoch_clock[1]
            # This epoch's own share: a cache fills in the first epoch, so it can differ from the rest.
            wait = {"input_wait_fraction": round(waited_seconds / loop_seconds, 4)} if loop_seconds > 0 else {}
            reporter.log(split="epoch", step=step, epoch=epoch, values=logs, **wait)
            reporter.say(f"epoch {epoch + 1}/{epochs}  {format_metrics(logs)}")
            for key, value in logs.items():
                history.setdefault(key, []).append(value)
            callback_list.on_epoch_end(epoch, logs)
            reporter.flush()
            epoch, step_in_epoch = epoch + 1, 0
            consider_best(logs)
            if policy.checkpoint.every_epoch or model.stop_training or step >= total:
                save()
    # Let go of the training iterator in the background: destroying it waits for
    # tf.data's autotuning thread to wake from its sleep, which grows to a minute
    # (measured: 3.5 s of a 10 s run). But when the budget ended inside the first
    # epoch it may still be writing a file cache (data.cache), and a final
    # evaluation of the training split reads the same cache; tf.data allows one
    # writer at a time, so then wait for it.
    owner = [iterator]
    del iterator  # the list is now its only owner
    released = teardown.release_in_background(owner)
    del owner
    if data.caches_to_files:
        released.join()
    save()
    checkpointer.save_final(step=step, epoch=epoch, step_in_epoch=step_in_epoch)
    callback_list.on_train_end(history and {k: v[-1] for k, v in history.items()})
    elapsed = time.perf_counter() - started
    # (Not under a parameter server: its steps run asynchronously on remote workers.)
    measured = policy.measure_input and not distribute.is_parameter_server(strategy)
    waited = input_wait.from_trainer(trainer) if measured else None
    run_dir.update_status(
        step=step,
        epoch=epoch,
        steps_per_second=round((step - start_step) / elapsed, 2) if elapsed > 0 else None,
        train_seconds=round(elapsed, 2),
        stopped_early=bool(model.stop_training),
        seconds_to_first_step=first_step_seconds,
        **({"input_wait_fraction": round(waited.fraction, 4)} if waited else {}),
        **_costs(checkpointer),
    )
    if measured and not waited and trainer.steps_run:
        reporter.say("input wait: not measured (runtime.deterministic forbids the timing ops)")
    if waited:
        reporter.say(waited.summary())
        hint = waited.hint(data)
        if hint:
            print(hint, flush=True)
    return history


class _NoStages:
    """A run without ``trainer.stages``: no stage boundary is ever due."""

    def steps_to_next(self, step: int) -> float:
        return math.inf

    def enter(self, step: int, model) -> bool:
        return False


def _enter_stage(stages, step: int, trainer, say) -> None:
    """Apply a stage that begins at ``step`` (or, resuming, every stage begun by then)."""
    before = getattr(stages, "entered", 0)
    if stages.enter(step, trainer.model):
        trainer.trainable_variables_changed()
    if say is not None and getattr(stages, "entered", 0) != before:
        say(f"{stages.describe(step)}: {_count(trainer.model.trainable_variables):,} trainable parameters")


def _count(variables) -> int:
    return int(sum(math.prod(v.shape) for v in variables))


class _Profiler:
    """A TensorBoard profile of steps ``[first, last)``; chunks are cut at both ends."""

    def __init__(self, steps: list[int] | None, directory):
        self.first, self.last = steps if steps else (None, None)
        self.directory = str(directory)
        self.running = False

    def steps_to_next(self, step: int) -> float:
        for boundary in (self.first, self.last):
            if boundary is not None and step < boundary:
                return boundary - step
        return math.inf

    def at(self, step: int) -> None:
        import tensorflow as tf

        if step == self.first and not self.running:
            tf.profiler.experimental.start(self.directory)
            self.running = True
        elif step == self.last and self.running:
            self.stop()

    def stop(self) -> None:
        import tensorflow as tf

        if self.running:
            tf.profiler.experimental.stop()
            self.running = False

    def __enter__(self) -> _Profiler:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _costs(checkpointer: Checkpointer) -> dict:
    return {
        "checkpoint_seconds": round(checkpointer.save_seconds, 3),
        "checkpoints_saved": checkpointer.saves,
        "nan_rollbacks": checkpointer.nan_rollbacks,
    }


def _next_chunk(chunk: int, ran: int, seconds: float) -> int:
    """Grow (or shrink) steps per call toward TARGET_CALL_SECONDS per call."""
    if ran < chunk:  # cut short by an event: no information about the chunk size
        return chunk
    per_step = seconds / max(ran, 1)
    wanted = int(TARGET_CALL_SECONDS / max(per_step, 1e-6))
    return max(1, min(MAX_STEPS_PER_CALL, wanted, chunk * 4))


def _what_diverged(results: dict[str, float], trainer) -> str | None:
    """What of the last training call is NaN or infinite, if anything."""
    if not math.isfinite(results["loss"]):
        return "training loss"
    if not trainer.weights_finite:
        return "model's weights"
    return None


def _diverged(run_dir, what: str, step: int, checkpoint: str | None, note: str = "") -> None:
    run_dir.update_status(status="diverged", step=step)
    kept = f"; the last good checkpoint is {checkpoint}" if checkpoint else ""
    raise Diverged(f"the {what} became NaN or infinite by step {step}{note}{kept}")
