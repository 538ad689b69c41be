"""A run's life in its directory: lock, status, training, final evaluation, export.

:func:`train_run` is what :func:`trainkit.train` does: check the run directory
against the recipe (read-only, before anything is built), build, take the lock,
write ``config.yaml`` and ``run.json``, hand the built objects to a
:class:`~trainkit.training.controller.Controller`, evaluate the final model,
export it (with the exporter passed in from :mod:`trainkit.serving.export`), and record how it ended (``completed``, ``interrupted``, ``failed``,
``diverged``, with ``ended``) whatever happens.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainkit.distribution import cluster
from trainkit.distribution.cluster import Role
from trainkit.distribution.consensus import check_same_start
from trainkit.distribution.strategies import describe
from trainkit.errors import ConfigError, did_you_mean
from trainkit.files import write_bytes_atomic, write_json_atomic
from trainkit.optim import batch_plan, batch_text, scaled_learning_rate
from trainkit.recipe import Recipe
from trainkit.rundir import RunDir, command_line
from trainkit.training import disk_full, scratch
from trainkit.training.phases import Phases
from trainkit.training.sinks import Sink, make_sink, say

if TYPE_CHECKING:
    from trainkit.plan import Built
    from trainkit.training.controller import Controller


@dataclass
class Trained:
    """What one training call produced."""

    run_dir: Path
    built: Any
    history: dict[str, list]
    metrics: dict[str, dict[str, float]]


def check_policy(built) -> None:
    """Checks of the trainer section that need the built run; raise before anything is written."""
    monitor = built.recipe.trainer.checkpoint.monitor
    if monitor is not None:
        from trainkit.plan import metric_names

        names = metric_names(built)
        if monitor not in names:
            hint = did_you_mean(monitor, names)
            no_val = "" if built.data.has_split("validation") else " (there is no validation split)"
            raise ConfigError(
                f"trainer.checkpoint.monitor: '{monitor}' is not a metric of this run{no_val}; {hint}"
            )


def train_run(
    recipe: Recipe,
    run_dir: str | os.PathLike,
    *,
    restart: bool = False,
    callbacks: list | None = None,
    trainer_class: type | None = None,
    recipe_source: str | None = None,
    sink: Sink | None = None,
    started: float | None = None,
    record_inputs: Callable[[Built, RunDir], None] | None = None,
    export: Callable[[Built, RunDir], Any] | None = None,
    process_started: float | None = None,
) -> Trained:
    """Train ``recipe`` into ``run_dir`` (resuming a run of the same recipe), evaluate, export.

    ``record_inputs`` and ``export`` come from the serving layer above (passed in by
    :func:`trainkit.train`): ``inference.json`` at the start, the exports at the end.
    ``started`` (``time.time()``): when the job began (the process's start or the call),
    for run.json's ``phases.start_up``; ``process_started`` for ``seconds_to_first_step``.
    """
    from trainkit.plan import make_callbacks

    phases = Phases()
    phases.add("start_up", time.time() - started if started else 0.0)
    directory = RunDir(run_dir)
    checked = _build_checked(recipe, directory, restart=restart, trainer_class=trainer_class, phases=phases)
    built = checked.built
    role = cluster.role(built.strategy)
    sink = sink or make_sink(recipe.trainer.progress, chief=role.is_chief)
    shared, directory = directory, _writable_dir(directory, built, role, restart=restart)
    # The callbacks checked above are the run's (built once); a non-chief worker's
    # write into its scratch directory instead.
    made = checked.callbacks if directory is shared else make_callbacks(recipe, run_dir=directory.path)
    callback_objects = made + list(callbacks or [])
    moved = _lock(directory, role, restart=restart)
    controller = None
    try:
        step = _begin(recipe, checked, directory, role, sink, recipe_source=recipe_source, record_inputs=record_inputs)
        _resume_notices(checked, step, role, sink, moved=moved, directory=directory)
        controller = _controller(built, directory, sink, callback_objects, phases, process_started=process_started)
        history, metrics = _train_to_the_end(
            controller, built, directory, sink, phases, export=export if role.is_chief else None
        )
    except BaseException as err:
        replacement = _record_failure(err, directory, built, controller)
        if replacement is not None:
            raise replacement from None
        raise
    finally:
        directory.release()
        scratch.remove_scratch(directory, role)
    return Trained(shared.path, built, history, metrics)


def _lock(directory: RunDir, role: Role, *, restart: bool) -> Path | None:
    """Take the directory's lock; with ``restart``, move the old run aside first
    (under the lock: never a run that a live process trains). Returns where it went."""
    moved = None
    if restart and directory.path.exists() and role.is_chief:
        directory.acquire()
        moved = directory.set_aside()
    directory.acquire()
    return moved


@dataclass
class _Checked:
    """A built run with everything user-supplied checked, before the directory is touched."""

    built: Built
    callbacks: list
    changes: list[str]
    previous: Recipe | None


def _build_checked(recipe: Recipe, directory: RunDir, *, restart: bool, trainer_class: type | None, phases: Phases) -> _Checked:
    """Check the directory (read-only), build, and check what only the built run shows."""
    from trainkit.plan import build, check_callbacks, make_callbacks, rehearse

    directory.check_place()  # a folder that can be written, without links: before anything is built
    changes = [] if restart else directory.check_compatible(recipe)  # read-only: refuses before building
    previous = directory.read_recipe() if changes else None  # (config.yaml is rewritten below)
    with phases.timed("build"):
        # All validation happens here; a run that continues lends its copy of a pretrained source.
        built = build(
            recipe, trainer_class=trainer_class, run_dir=None if restart else directory.path, keep_source_copy=True
        )
    # Everything user-supplied is checked before the run directory is touched:
    # the callbacks are made now (their constructors check their arguments: a
    # failure is a bad recipe, one line, exit 2), and one real step shows that
    # optimizer, loss and metrics work with the data (it also builds metrics
    # that make their variables on first use).
    with phases.timed("checks"):
        callbacks = make_callbacks(recipe, run_dir=directory.path)
        rehearse(built)
        check_policy(built)
        check_callbacks(built, callbacks, run_dir=directory.path)
        if not restart:
            check_sources(directory, built, recipe)
            directory.check_same_data(built.data.info.sizes)
    return _Checked(built, callbacks, changes, previous)


def _writable_dir(directory: RunDir, built: Built, role: Role, *, restart: bool) -> RunDir:
    """Multi-worker: only the chief writes the run directory; the other workers
    write to a scratch directory, removed at the end, starting from a copy of
    the chief's checkpoints so that every worker resumes (and later decides
    its saves) exactly as the chief does."""
    writable = scratch.writable_run_dir(directory, role)
    if not role.is_chief:
        built.recipe = scratch.quiet(built.recipe)  # the chief alone reports
        if not restart:
            scratch.copy_checkpoints(directory, writable)
    return writable


def _begin(
    recipe: Recipe, checked: _Checked, directory: RunDir, role: Role, sink: Sink, *,
    recipe_source: str | None, record_inputs: Callable[[Built, RunDir], None] | None,
) -> int:
    """Holding the lock: config.yaml, run.json, the sources' copy, inference.json and
    the header written; returns the step the run resumes from (0: a new run)."""
    from trainkit.rundir.checkpoints import candidates, step_of

    built = checked.built
    found = candidates(directory.checkpoints)
    step = step_of(found[0]) if found else 0
    check_same_start(built.strategy, step)
    directory.start(
        recipe, identity=built.identity.hash, command=command_line(), recipe_source=recipe_source, resumed=bool(found),
        trained_past=bool(found) and step > built.total_steps,
    )
    if role.is_chief:
        keep_sources(built, directory, sink)
    # Only now, validated and holding the lock, may a relative data.cache path
    # write its files (inside the run directory, so a resumed run reuses them).
    built.data.use_cache_dir(directory.path)
    directory.update_status(
        distribution=batch_plan(recipe, built.strategy), examples=dict(built.data.info.sizes)
    )
    if role.is_chief:
        built.data.write_fitted(directory.path)  # the vocabulary: a resumed run reads it back
    if role.is_chief and record_inputs is not None:
        record_inputs(built, directory)  # inference.json: what export and predict need
    sink.line(header(built, directory))
    if built.data.cache_note:
        sink.line(built.data.cache_note)
    return step


def _resume_notices(checked: _Checked, step: int, role: Role, sink: Sink, *, moved: Path | None, directory: RunDir) -> None:
    if moved:
        sink.notice(f"the previous run in {directory.path} was moved to {moved}")
    if checked.changes and role.is_chief:
        sink.notice(f"resuming with changed settings: {', '.join(checked.changes)}")
        note = schedule_note(checked.built, checked.previous, step)
        if note:
            sink.notice(note)


def _controller(
    built: Built, directory: RunDir, sink: Sink, callbacks: list, phases: Phases, *, process_started: float | None
) -> Controller:
    """The controller of this run, with its collaborators: the checkpointer, the
    metrics log and the profiler window in the run directory, the sink, the callbacks."""
    from trainkit.training.checkpoint import Checkpointer
    from trainkit.training.controller import Controller
    from trainkit.training.events import ProfileWindow
    from trainkit.training.report import MetricsLog

    policy = built.recipe.trainer
    checkpointer = Checkpointer(
        directory.checkpoints,
        model=built.model,
        optimizer=built.trainer.optimizer,
        metrics=built.trainer.train_metrics,
        keep=policy.checkpoint.keep,
        callbacks=callbacks,
        monitor=policy.checkpoint.monitor,
        mode=policy.checkpoint.mode,
    )
    return Controller(
        trainer=built.trainer, data=built.data, strategy=built.strategy, policy=policy,
        checkpointer=checkpointer, metrics_log=MetricsLog(directory),
        profile=ProfileWindow(policy.profile_steps, directory.tensorboard), sink=sink, callbacks=callbacks,
        steps_per_epoch=built.steps_per_epoch, total_steps=built.total_steps, phases=phases,
        events=(built.stages,) if built.stages else (), process_started=process_started,
    )


def _record_failure(err: BaseException, directory: RunDir, built: Built, controller: Controller | None) -> BaseException | None:
    """How a run ended early, written to run.json (the one place a run's status is
    written: the controller raises, it writes nothing); the error to raise instead of
    ``err`` (a full disk, an unreadable file, a lost worker), or None."""
    from trainkit.training.controller import now

    if controller is not None:
        controller.metrics_log.close()  # (the controller closes it, unless it failed before training)
    full = disk_full.is_disk_full(err)
    if full:  # first make room: the status below must still be written
        disk_full.remove_partial_files(directory.path)
        err = disk_full.describe(directory.path, writing=_what_was_written(err), needed=_state_bytes(built))
    explain = getattr(built.data, "explain_read_error", None)
    unreadable = explain(err) if explain else None  # a bad image found mid-training
    if unreadable is not None:
        err = unreadable
    try:
        if directory.read_status().get("status") == "running":
            costs = controller.costs() if controller is not None else {}
            directory.update_status(**ended_status(err, costs), ended=now())
    except OSError:
        if not full:
            raise
    if full or unreadable is not None:
        return err
    return cluster.as_worker_lost(err, built.strategy)


def ended_status(err: BaseException, costs: dict[str, Any]) -> dict[str, Any]:
    """The status fields of a run that ``err`` ended (``costs``: the controller's, if it ran)."""
    from trainkit.training.stops import Diverged, TrainingStopped

    if isinstance(err, TrainingStopped):  # a signal, at a chunk boundary: saved at err.step
        return {"status": "interrupted", "step": err.step, **costs}
    if isinstance(err, Diverged):
        return {"status": "diverged", "step": err.step}
    if isinstance(err, KeyboardInterrupt):
        return {"status": "interrupted"}
    return {"status": "failed", "error": f"{type(err).__name__}: {err}"}


def schedule_note(built, previous: Recipe, step: int) -> str | None:
    """What a changed budget does to the learning-rate schedule at the resumed step."""
    from trainkit.optim import budget_change_note
    from trainkit.plan import total_steps

    rate = {"learning_rate": scaled_learning_rate(built.recipe)}
    return budget_change_note(
        previous.optimizer.model_copy(update=rate),
        built.recipe.optimizer.model_copy(update=rate),
        old_total=total_steps(previous, built.steps_per_epoch),
        new_total=built.total_steps,
        step=step,
    )


def _what_was_written(err: BaseException) -> str:
    text = str(err)
    if "SaveV2" in text or "ckpt-" in text:
        return "a checkpoint"
    if any(mark in text for mark in (".keras", "saved_model", ".tflite", ".onnx", "export")):
        return "the exported model"
    return "a file"


def _state_bytes(built) -> int:
    """Bytes of the model's and optimizer's variables: about what a checkpoint takes."""
    variables = [*built.model.variables, *built.trainer.optimizer.variables]
    return sum(int(v.numpy().nbytes) for v in variables)


def check_sources(directory: RunDir, built: Built, recipe: Recipe) -> None:
    """Refuse to continue a run whose pretrained source changed since it started."""
    from trainkit.errors import RunDirError

    recorded = directory.read_status().get("sources") or {}
    for use in built.sources:
        before = recorded.get(use.field)
        if before and before["digest"] != use.digest:
            raise RunDirError(
                f"{directory.path} was trained from {use.field} {use.source} with weights digest {before['digest']}, "
                f"but it now has digest {use.digest} (the source changed); use another --run-dir, or --restart"
            )
    # A source read no more (model.init of a continued run whose source is gone)
    # keeps its recorded digest in the run's identity.
    if recorded:
        built.identity = built.identity.with_recorded(recipe, {name: before["digest"] for name, before in recorded.items()})


def keep_sources(built, directory: RunDir, sink: Sink) -> None:
    """Record the sources' digests, keep a copy of ``model.source`` (so evaluating,
    exporting or resuming never needs it again) and write the init report."""
    from trainkit.models.pretrained import STORED_SOURCE

    if not built.sources:
        return
    directory.update_status(sources={u.field: {"source": u.source, "digest": u.digest} for u in built.sources})
    stored = directory.path / STORED_SOURCE
    for use in built.sources:
        if use.field == "model.source" and use.saved is not None and not stored.is_file():
            write_bytes_atomic(stored, use.saved, within=directory.path)
    if built.init_report is not None:
        from trainkit.models.warm_start import summary_line

        write_json_atomic(directory.path / "init.json", built.init_report)
        say(summary_line(built.init_report))  # shown with progress off too, like a resume


def header(built, directory: RunDir) -> str:
    info, recipe = built.data.info, built.recipe
    return (
        f"training {recipe.name} ({built.identity.hash}) into {directory.path}: "
        f"{info.sizes['train']} training examples, {built.steps_per_epoch} steps/epoch, {built.total_steps} steps; "
        f"{built.model.count_params():,} parameters; {describe(built.strategy)}, "
        f"{batch_text(recipe, built.strategy)}"
    )


def _train_to_the_end(controller, built: Built, directory: RunDir, sink: Sink, phases: Phases, *, export) -> tuple[dict, dict]:
    """Train, record the session's figures, evaluate the final model, export it (``export``:
    the chief's writer, or None), and mark the run completed; the history and metrics."""
    from trainkit.evaluation import final_evaluation
    from trainkit.training.controller import now

    history = controller.run()
    _record_summary(directory, controller.summary, trained_steps=controller.trained_steps)
    with phases.timed("final_evaluation"):
        metrics = final_evaluation(controller, built, directory, sink)
    if export is not None:
        with phases.timed("export"):
            export(built, directory)
    _record_phases(directory, phases, trained=bool(controller.trained_steps))
    directory.update_status(status="completed", ended=now())
    return history, metrics


def _record_summary(directory: RunDir, summary: dict, *, trained_steps: int) -> None:
    """The controller's figures in run.json. Each session's figures are kept in ``sessions``;
    the run's own (top-level) figures are those of the last session that trained, so
    opening a finished run again measures nothing and loses nothing."""
    position = {key: summary[key] for key in ("step", "epoch")}
    measured = {key: value for key, value in summary.items() if key not in position}
    sessions = directory.read_status().get("sessions")
    sessions = [*(sessions if isinstance(sessions, list) else []), {"steps": trained_steps, **measured}]
    directory.update_status(**position, sessions=sessions, **(measured if trained_steps else {}))


def _record_phases(directory: RunDir, phases: Phases, *, trained: bool) -> None:
    """This session's phases in its entry of ``sessions``; the run's own ``phases`` only when it
    trained (a finished run opened again keeps the figures of the session that trained it)."""
    sessions = directory.read_status().get("sessions")
    fields: dict[str, Any] = {"phases": phases.as_dict()} if trained else {}
    if isinstance(sessions, list) and sessions and isinstance(sessions[-1], dict):
        sessions[-1] = {**sessions[-1], "phases": phases.as_dict()}
        fields["sessions"] = sessions
    directory.update_status(**fields)
