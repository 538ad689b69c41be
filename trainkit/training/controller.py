"""The training controller: trains a built recipe to the end of its budget, in chunks.

:class:`Controller` owns the outer loop. Each chunk is one call of
:meth:`Trainer.train`, of as many steps as the nearest periodic event allows
(see :mod:`trainkit.training.events`): a log line, a validation, a checkpoint,
a profile window, an epoch end, the end of the budget. With
``trainer.steps_per_execution: auto`` the chunk grows until a call takes about
``TARGET_CALL_SECONDS``: small models stop paying Python overhead per step,
large ones still report often. Its collaborators are passed in, as orbit's
``Controller`` takes its summary manager and actions: the checkpointer, the
metrics log, the profiler window and the output sink. It writes no run
status: the run's lifecycle around it (lock, status, final evaluation, export)
is :mod:`trainkit.training.lifecycle`'s, which reads :attr:`Controller.summary`
and the stops it raises (each carries its step).

Keras callbacks get Keras's protocol as ``fit`` drives it under
``steps_per_execution``: ``on_train_batch_begin``/``_end`` once per compiled call
(with the in-epoch index of its first and last batch), ``on_test_*`` around
every validation, the same ``logs`` keys as ``fit`` plus the
current ``learning_rate`` in the epoch logs, and
``optimizer.finalize_variable_values`` at the end (with ``use_ema`` the final
weights are the moving averages).

SIGINT (Ctrl-C, a kernel interrupt) and SIGTERM (preemption) are handled at the
next chunk boundary: a checkpoint is saved and :class:`Interrupted` (a
``KeyboardInterrupt``) or :class:`Terminated` is raised, carrying the checkpoint
(exit codes 130 and 143); training into the same run directory continues exactly
where it stopped.

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
import functools
import math
import signal
import time

import keras

from trainkit import teardown
from trainkit.distribution.cluster import is_parameter_server
from trainkit.distribution.consensus import Consensus
from trainkit.errors import TrainkitError
from trainkit.optim import base_optimizer
from trainkit.recipe import ValidationPolicy
from trainkit.signals import SignalRecorder
from trainkit.training import input_wait
from trainkit.training.checkpoint import Checkpointer, read_counters
from trainkit.training.events import (
    BudgetEnd,
    EpochEnd,
    EverySteps,
    Position,
    ProfileWindow,
    steps_until_next,
)
from trainkit.training.phases import Phases
from trainkit.training.report import MetricsLog
from trainkit.training.sinks import Sink, format_metrics
from trainkit.training.stops import (  # noqa: F401 (re-exported: where users look for them)
    Diverged,
    Interrupted,
    Terminated,
    TrainingStopped,
    stopped_by,
)

TARGET_CALL_SECONDS = 0.2
MAX_STEPS_PER_CALL = 1000


class TrainableChanged(TrainkitError):
    """A callback changed which variables are trainable in the middle of a run."""


class Controller:
    """Trains ``trainer`` on ``data`` under ``strategy`` from the run's latest checkpoint.

    ``policy`` is the recipe's trainer section; ``checkpointer`` saves and
    restores the full state; ``metrics_log`` records each log event
    (``metrics.jsonl``, TensorBoard; the controller closes it when training
    ends); ``profile`` is the profiler window of ``trainer.profile_steps``;
    ``sink`` shows progress; ``callbacks`` are Keras callbacks.
    ``process_started`` (``time.time()``), when given, is when the process began,
    for :attr:`summary`'s ``seconds_to_first_step``. :meth:`run` returns the
    history of the epochs it ran.
    """

    def __init__(
        self,
        *,
        trainer,
        data,
        strategy,
        policy,
        checkpointer: Checkpointer,
        metrics_log: MetricsLog,
        profile: ProfileWindow,
        sink: Sink,
        callbacks: list,
        steps_per_epoch: int,
        total_steps: int,
        events: tuple = (),
        phases: Phases | None = None,
        process_started: float | None = None,
    ):
        self.trainer, self.data, self.strategy, self.policy = trainer, data, strategy, policy
        self.model = trainer.model
        self.checkpointer, self.metrics_log, self.profile, self.sink = checkpointer, metrics_log, profile, sink
        self.process_started = process_started
        self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps
        self.epochs = policy.epochs or math.ceil(total_steps / steps_per_epoch)
        self.callback_objects = list(callbacks)
        self.callbacks = keras.callbacks.CallbackList(
            callbacks, model=self.model, epochs=self.epochs, steps=steps_per_epoch, verbose=0
        )
        self._make_events(events)
        self.has_validation = data.has_split("validation") and policy.validation != "sidecar"
        spe = policy.steps_per_execution
        self.auto_chunk = spe == "auto"
        self.chunk = spe if isinstance(spe, int) else 1
        self.position = Position()
        self.history: dict[str, list] = {}
        #: What the run's status records of this training (step, epoch, speed,
        #: costs), once :meth:`run` has returned.
        self.summary: dict = {}
        # Batch hooks are Python calls per compiled call: look for trainability
        # changes after them only when some callback overrides them.
        self._batch_hooks = any(_has_batch_hooks(callback) for callback in self.callback_objects)
        self._trainable = self._trainable_ids()
        self._last_save_time = time.monotonic()
        self._first_step_seconds = None
        #: Where the run's seconds go (run.json's ``phases``): first step,
        #: training, validation and checkpoint saves are added here.
        self.phases = phases if phases is not None else Phases()
        #: Steps this session trained (set when it ends): 0 when a finished run is opened again.
        self.trained_steps = 0
        self._first_call_done = False

    def _make_events(self, extra: tuple) -> None:
        """The periodic events; the chunk is cut at the nearest. ``extra`` events passed in
        (stages, say) may also have ``fire(controller)``, called when they are due."""
        policy = self.policy
        self.epoch_end = EpochEnd(self.steps_per_epoch)
        self.budget_end = BudgetEnd(self.total_steps)
        self.log_due = EverySteps(policy.log_every_steps)
        # ``sidecar``: the cluster's evaluator task validates; the loop never does.
        self.validation = policy.validation if policy.validation != "sidecar" else ValidationPolicy(every_epochs=None)
        self.validation_due = EverySteps(self.validation.every_steps)
        self.checkpoint_due = EverySteps(policy.checkpoint.every_steps)
        self.events = [
            self.epoch_end, self.budget_end, self.log_due, self.validation_due, self.checkpoint_due, self.profile,
            *extra,
        ]
        self._actions = [event for event in extra if hasattr(event, "fire")]

    # -- the run ------------------------------------------------------------------

    def run(self) -> dict[str, list]:
        """Train to the end of the budget (or an early stop); the epochs run here as a history."""
        resumed_from = self._resume()
        if resumed_from:  # an event due where the run resumes (a stage begun by then) fires first
            self._fire_due()
        self.metrics_log.count_rate_from(self.position.step)
        # The list is the training iterator's only owner (the epochs and chunks are given
        # the list), so that _release can hand it to another thread to destroy (a local
        # kept it alive until run returned, or in an exception's frames: its destruction
        # then stalled this thread, 1.4 s at the end of most runs).
        owner = [iter(self.data.distributed_training(
            self.strategy, start_epoch=self.position.epoch, skip_batches=self.position.step_in_epoch
        ))]
        consensus = Consensus(self.strategy)  # multi-worker: chunk sizes, timed saves, signals agreed
        self.model.stop_training = False
        started = time.perf_counter()
        start_step = self.position.step
        self.callbacks.on_train_begin()
        if resumed_from:
            self.checkpointer.apply_callback_state()
            if self.checkpointer.stopped_early and self.position.step < self.total_steps:
                self.sink.notice(
                    f"the run stopped early at step {self.position.step}; not training further (--restart trains again)"
                )
                self.model.stop_training = True
        if self.policy.nan_policy == "rollback" and self.checkpointer.latest is None:
            self.save()  # something to roll back to
        whole_epochs = self.total_steps % self.steps_per_epoch == 0  # (stages too: they count epochs)
        self.sink.start(total_steps=self.total_steps, epochs=self.policy.epochs or (self.epochs if whole_epochs else None), position=self.position)
        try:
            with contextlib.ExitStack() as stack:
                stack.callback(self.sink.finish)
                stack.callback(self.metrics_log.close)
                stack.callback(self.profile.stop)
                flag = stack.enter_context(SignalRecorder(second_interrupt_stops=True))
                self.profile.at(self.position)
                while not self.budget_end.due(self.position) and not self.model.stop_training:
                    if not self._run_epoch(owner, consensus, flag):
                        break
        finally:  # (also when a signal stops the run: the epochs' frames never held the iterator)
            self._release(owner)
        self.save()
        self._finalize_weights()
        self.callbacks.on_train_end(self.history and {k: v[-1] for k, v in self.history.items()})
        self._record_end(time.perf_counter() - started, start_step)
        return self.history

    def _resume(self) -> str | None:
        resumed_from = self.checkpointer.restore_latest(warn=self.sink.warn)
        if resumed_from:
            self.position = Position(*self.checkpointer.counters())
            step = self.position.step
            # Said even with a live display: a resumed run must never look like a fresh one.
            if step >= self.total_steps:
                self.sink.notice(f"resumed from {resumed_from} at step {step} (finished)")
                self.sink.notice(f"already trained to step {step} of {self.total_steps}: finished; evaluating the final model")
            else:
                self.sink.notice(
                    f"resumed from {resumed_from} at step {step} "
                    f"(epoch {self.position.epoch + 1}, step {self.position.step_in_epoch} of it)"
                )
        return resumed_from

    def _run_epoch(self, owner: list, consensus, flag) -> bool:
        """One epoch (or what is left of it); False when the budget ended inside it."""
        position = self.position
        if position.step_in_epoch == 0:  # (a resumed epoch keeps its restored metrics)
            self.trainer.reset_train_metrics()
        self.callbacks.on_epoch_begin(position.epoch)
        epoch_clock = (self.trainer.input_seconds, self.trainer.loop_seconds)
        results = None  # this epoch's metrics, as the last training call returned them
        while not self.epoch_end.due(self.position) and not self.budget_end.due(self.position):
            results = self._run_chunk(owner, consensus, flag)
            if self.model.stop_training:
                break
        if not self.epoch_end.due(self.position) and not self.model.stop_training:
            return False  # the step budget ended inside this epoch
        self._end_epoch(results, epoch_clock)
        return True

    def _fire_due(self) -> None:
        """Fire the actions due at this position (a stage beginning here), before its
        step trains: after the previous epoch's line and logs, which belong to the
        stage that trained them."""
        for event in self._actions:
            if event.due(self.position):
                event.fire(self)

    def _run_chunk(self, owner: list, consensus, flag) -> dict[str, float]:
        self._fire_due()
        n = steps_until_next(self.events, self.position, self.chunk)
        self.profile.at(self.position)
        self.callbacks.on_train_batch_begin(self.position.step_in_epoch)
        call_start = time.perf_counter()
        results = self.trainer.train(owner[0], n)  # (no frame keeps the iterator: see run)
        if not self._first_call_done:  # tracing and the pipeline's start: a fixed cost of its own
            self._first_call_done = True
            self.phases.add("first_step", time.perf_counter() - call_start)
        if self._first_step_seconds is None and self.process_started:
            self._first_step_seconds = round(time.time() - self.process_started, 2)
        self.position = position = self.position.advanced(n)
        self.profile.at(position)
        if self.auto_chunk:
            self.chunk = _next_chunk(self.chunk, n, time.perf_counter() - call_start)
        broken = _what_diverged(results, self.trainer)
        if broken:
            self._roll_back(broken)  # or raise Diverged: never save this state
            results = self.trainer.result()
        self.callbacks.on_train_batch_end(position.step_in_epoch - 1, results)
        if self._batch_hooks:
            self._check_trainable("on_train_batch_end")
        self.sink.advance(position)
        if self.log_due.due(position):
            rate = self.metrics_log.steps_per_second(position.step)
            self.metrics_log.log(split="train", step=position.step, epoch=position.epoch, values=results, steps_per_second=rate)
            self.sink.train_log(position, results, rate)
        if self.validation_due.due(position) and self.has_validation:
            val = self._validate()
            self.sink.validation(position, val)
            self._consider_best(val)
        seconds = self.policy.checkpoint.every_seconds
        time_due = bool(seconds and time.monotonic() - self._last_save_time >= seconds)
        self.chunk, (time_due, signaled) = consensus.agree(
            chief_value=self.chunk, flags=(time_due, flag.signum is not None)
        )
        if self.checkpoint_due.due(position) or time_due:
            self.save()
        if signaled:
            path = self.save()
            raise stopped_by(flag.signum or signal.SIGTERM, path, position.step)
        return results

    def _end_epoch(self, results: dict[str, float] | None, epoch_clock: tuple[float, float]) -> None:
        position = self.position
        # (None: resumed from a checkpoint taken at this epoch's last step)
        logs = dict(results) if results is not None else self.trainer.result()
        every = self.validation.every_epochs
        last = self.budget_end.due(position)
        if self.has_validation and ((every and (position.epoch + 1) % every == 0) or last):
            logs.update(self._validate())
        logs["learning_rate"] = self.learning_rate()
        waited = self.trainer.input_seconds - epoch_clock[0]
        looped = self.trainer.loop_seconds - epoch_clock[1]
        # This epoch's own share: a cache fills in the first epoch, so it can differ from the rest.
        wait = {"input_wait_fraction": round(waited / looped, 4)} if looped > 0 else {}
        self.metrics_log.log(split="epoch", step=position.step, epoch=position.epoch, values=logs, **wait)
        self.sink.epoch_end(position, logs)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
        self.callbacks.on_epoch_end(position.epoch, logs)
        self._check_trainable("on_epoch_end")
        self.metrics_log.flush()
        self.position = self.position.next_epoch()
        self._consider_best(logs)
        if self.policy.checkpoint.every_epoch or self.model.stop_training or self.budget_end.due(self.position):
            self.save()

    # -- evaluation ---------------------------------------------------------------

    def evaluate(self, split: str, *, take: int | None = None, hooks: bool = True) -> dict[str, float]:
        """Metrics on ``split``, with Keras's ``on_test_*`` hooks around the evaluation.

        The whole evaluation is one compiled call, so the batch hooks run once
        around it, as ``evaluate`` calls them under ``steps_per_execution``.
        ``hooks=False`` after training: ``on_train_end`` has closed callbacks
        such as TensorBoard's writers, as after Keras's ``fit``.
        """
        if not hooks:
            return self.trainer.evaluate_split(self.data, split, take=take)
        self.callbacks.on_test_begin()
        self.callbacks.on_test_batch_begin(0)
        results = self.trainer.evaluate_split(self.data, split, take=take)
        self.callbacks.on_test_batch_end(self._eval_batches(split, take) - 1, results)
        self.callbacks.on_test_end(results)
        return results

    def _eval_batches(self, split: str, take: int | None) -> int:
        batches = -(-self.data.info.sizes[split] // self.data.batch_size(training=False))
        return max(1, min(batches, take) if take else batches)

    def _validate(self) -> dict[str, float]:
        with self.phases.timed("validation"):
            results = self.evaluate("validation", take=self.validation.steps)
        position = self.position
        self.metrics_log.log(split="validation", step=position.step, epoch=position.epoch, values=results)
        return {f"val_{k}": v for k, v in results.items()}

    @functools.cached_property
    def _schedule(self) -> keras.optimizers.schedules.LearningRateSchedule | None:
        return _schedule_of(self.trainer.optimizer)

    def learning_rate(self) -> float:
        """The learning rate the last step trained with (a schedule's value at that
        step: the optimizer's own ``learning_rate`` is the next step's)."""
        optimizer = self.trainer.optimizer
        if self._schedule is None or int(optimizer.iterations) == 0:
            return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        return float(keras.ops.convert_to_numpy(self._schedule(int(optimizer.iterations) - 1)))

    # -- checkpoints ----------------------------------------------------------------

    def save(self) -> str:
        self._last_save_time = time.monotonic()
        checkpointer = self.checkpointer
        checkpointer.stopped_early = bool(self.model.stop_training)
        counters = self.position.as_counters()
        if checkpointer.saved_at.get("last") == tuple(counters.values()):
            return checkpointer.latest  # this very state is saved already
        return checkpointer.save(**counters)

    def _consider_best(self, values: dict[str, float]) -> None:
        checkpointer = self.checkpointer
        monitor = checkpointer.monitor
        if monitor in values and checkpointer.is_better(values[monitor]):
            checkpointer.stopped_early = bool(self.model.stop_training)
            checkpointer.save_best(values[monitor], **self.position.as_counters())
            self.sink.line(f"  best {monitor} so far: {values[monitor]:.4g} at step {self.position.step} (checkpoints/best)")

    def _roll_back(self, what: str) -> None:
        checkpointer, policy = self.checkpointer, self.policy
        bad_step = self.position.step
        good = checkpointer.latest
        if policy.nan_policy != "rollback" or good is None:
            self._diverged(what, bad_step, good)
        if checkpointer.nan_rollbacks >= policy.nan_max_retries:
            self._diverged(what, bad_step, good, f" after {checkpointer.nan_rollbacks} rollback(s) (trainer.nan_max_retries)")
        good_step, good_epoch, _ = read_counters(good)
        try:
            checkpointer.rollback(good)
        except Exception as err:  # the last good checkpoint is unreadable: nothing to roll back to
            self._diverged(what, bad_step, None, f"; rolling back to {good} failed: {err}")
        checkpointer.nan_rollbacks += 1
        if good_epoch != self.position.epoch:
            self.trainer.reset_train_metrics()  # the restored running metrics belong to another epoch
        skipped = bad_step - good_step
        self.sink.warn(
            f"warning: the {what} became NaN or infinite by step {bad_step}; rolled back to "
            f"{good} (step {good_step}) and skipped the {skipped} batch(es) read since it "
            f"(rollback {checkpointer.nan_rollbacks} of at most {policy.nan_max_retries})"
        )
        self.metrics_log.log(
            split="nan_rollback", step=bad_step, epoch=self.position.epoch, values={},
            restored_step=good_step, skipped_batches=skipped,
        )

    def _diverged(self, what: str, step: int, checkpoint: str | None, note: str = "") -> None:
        kept = f"; the last good checkpoint is {checkpoint}" if checkpoint else ""
        raise Diverged(f"the {what} became NaN or infinite by step {step}{note}{kept}", step=step)

    # -- the end ------------------------------------------------------------------

    def _release(self, owner: list) -> None:
        # Let go of the training iterator (owner's only item, held nowhere else) in the
        # background: destroying it waits for tf.data's autotuning thread to wake from
        # its sleep, which grows to a minute (measured: 3.5 s of a 10 s run). But when
        # the budget ended inside the first epoch it may still be writing a file cache
        # (data.cache), and a final evaluation of the training split reads the same
        # cache; tf.data allows one writer at a time, so then wait for it.
        released = teardown.release_in_background(owner)
        if self.data.caches_to_files:
            released.join()

    def _finalize_weights(self) -> None:
        """As Keras's ``fit`` ends: with ``use_ema`` the weights become the moving averages.

        The rotation's last checkpoint keeps the raw weights (a longer budget
        resumes from them); ``final/`` holds the finalized ones that are
        evaluated and exported.
        """
        optimizer = self.trainer.optimizer
        changed = bool(getattr(optimizer, "use_ema", False))
        if changed:
            with self.strategy.scope():
                optimizer.finalize_variable_values(self.model.trainable_variables)
        self.checkpointer.save_final(**self.position.as_counters(), same_as_last=not changed)

    def _record_end(self, elapsed: float, start_step: int) -> None:
        policy, trainer, position = self.policy, self.trainer, self.position
        phases = self.phases
        phases.add("checkpoint_saves", self.checkpointer.save_seconds)
        phases.add("training", elapsed - sum(phases.seconds.get(k, 0.0) for k in ("first_step", "validation", "checkpoint_saves")))
        # (Not under a parameter server: its steps run asynchronously on remote workers.)
        measured = policy.measure_input and not is_parameter_server(self.strategy)
        waited = input_wait.from_trainer(trainer) if measured else None
        self.trained_steps = position.step - start_step
        self.summary = {
            "step": position.step,
            "epoch": position.epoch,
            "steps_per_second": round(self.trained_steps / elapsed, 2) if elapsed > 0 else None,
            "train_seconds": round(elapsed, 2),
            "stopped_early": bool(self.model.stop_training),
            "seconds_to_first_step": self._first_step_seconds,
            **({"input_wait_fraction": round(waited.fraction, 4)} if waited else {}),
            **self.costs(),
        }
        if measured and not waited and trainer.steps_run:
            self.sink.line("input wait: not measured (runtime.deterministic forbids the timing ops)")
        hint = waited.hint(self.data) if waited else None
        if hint:  # (nothing to change: nothing said; the fraction is in run.json)
            self.sink.line(waited.summary())
            self.sink.notice(hint)

    def costs(self) -> dict:
        checkpointer = self.checkpointer
        return {
            "checkpoint_seconds": round(checkpointer.save_seconds, 3),
            "checkpoints_saved": checkpointer.saves,
            "nan_rollbacks": checkpointer.nan_rollbacks,
        }

    # -- trainability -----------------------------------------------------------------

    def _trainable_ids(self) -> list[int]:
        return [id(v) for v in self.model.trainable_variables]

    def trainable_variables_changed(self) -> None:
        """For an event that changes which variables train (a stage's unfreeze):
        the training step is traced again for the new set, which callbacks may
        then not change."""
        self.trainer.trainable_variables_changed()
        self._trainable = self._trainable_ids()

    def _check_trainable(self, hook: str) -> None:
        """Refuse a change of trainable variables: the traced step would silently ignore it."""
        now_ids = self._trainable_ids()
        if now_ids != self._trainable:
            names = ", ".join(type(cb).__name__ for cb in self.callback_objects) or "a callback"
            raise TrainableChanged(
                f"callbacks: {names} changed which variables are trainable ({len(self._trainable)} -> "
                f"{len(now_ids)}) in {hook} at step {self.position.step}; the training step is compiled "
                "for a fixed set of variables: change trainability between runs (resume with a new recipe) instead"
            )


def _schedule_of(optimizer) -> keras.optimizers.schedules.LearningRateSchedule | None:
    """The learning-rate schedule an optimizer was made with (None: a rate); that of the
    base group of a grouped optimizer, inside any loss scaling."""
    rate = base_optimizer(optimizer).get_config().get("learning_rate")
    return keras.optimizers.schedules.deserialize(rate) if isinstance(rate, dict) else None


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _next_chunk(chunk: int, ran: int, seconds: float) -> int:
    """Grow (or shrink) steps per call toward TARGET_CALL_SECONDS per call."""
    if ran < chunk:  # cut short by an event: no information about the chunk size
        return chunk
    per_step = seconds / max(ran, 1)
    wanted = int(TARGET_CALL_SECONDS / max(per_step, 1e-6))
    return max(1, min(MAX_STEPS_PER_CALL, wanted, chunk * 4))


def _has_batch_hooks(callback) -> bool:
    base = keras.callbacks.Callback
    kind = type(callback)
    return kind.on_train_batch_begin is not base.on_train_batch_begin or kind.on_train_batch_end is not base.on_train_batch_end


def _what_diverged(results: dict[str, float], trainer) -> str | None:
    """What of the last training call is NaN or infinite, if anything."""
    if not math.isfinite(results["loss"]):
        return "training loss"
    if not trainer.weights_finite:
        return "model's weights"
    return None


__all__ = [
    "Controller", "Diverged", "Interrupted", "Terminated", "TrainableChanged", "TrainingStopped",
    "format_metrics", "stopped_by",
]
