"""A run's life in its directory: lock, status, training, final evaluation, export.

:func:`train_run` is what :func:`trainkit.train` does: check the run directory
against the recipe (read-only, before anything is built), build, take the lock,
write ``config.yaml`` and ``run.json``, hand the built objects to a
:class:`~trainkit.training.controller.Controller`, evaluate the final model,
export it (:mod:`trainkit.serving.export`), and record how it ended (``completed``, ``interrupted``, ``failed``,
``diverged``, with ``ended``) whatever happens.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainkit.distribution import cluster
from trainkit.distribution.consensus import check_same_start
from trainkit.distribution.strategies import describe
from trainkit.errors import ConfigError, did_you_mean
from trainkit.files import write_bytes_atomic, write_json_atomic
from trainkit.optim import batch_plan, batch_text, scaled_learning_rate
from trainkit.recipe import Recipe
from trainkit.training import disk_full, scratch
from trainkit.training.phases import Phases
from trainkit.training.run_dir import RunDir, command_line
from trainkit.training.sinks import Sink, make_sink, say


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
        from trainkit.build import metric_names

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
    process_started: float | None = None,
) -> Trained:
    """Train ``recipe`` into ``run_dir`` (resuming a run of the same recipe), evaluate, export.

    ``started`` (``time.time()``) is when the job began, the process's start or
    the call of :func:`trainkit.train`: run.json's ``phases.start_up`` runs from
    there to here, where TensorFlow and trainkit are imported.
    ``process_started``: when the process began (the CLI's start), for run.json's
    ``seconds_to_first_step``.
    """
    from trainkit.build import build, check_callbacks, make_callbacks, rehearse
    from trainkit.serving.export import export_trained, record_inputs
    from trainkit.training.checkpoint import Checkpointer, candidates, step_of
    from trainkit.training.controller import now

    phases = Phases()
    phases.add("start_up", time.time() - started if started else 0.0)
    directory = RunDir(run_dir)
    directory.check_place()  # a folder that can be written, without links: before anything is built
    changes = [] if restart else directory.check_compatible(recipe)  # read-only: refuses before building
    previous = directory.read_recipe() if changes else None  # (config.yaml is rewritten below)
    with phases.timed("build"):
        # All validation happens here; a run that continues lends its copy of a pretrained source.
        built = build(
            recipe, trainer_class=trainer_class, run_dir=None if restart else directory.path, keep_source_copy=True
        )
    # Everything user-supplied is checked before the run directory is touched:
    # the callbacks are made now (their constructors check their arguments), and
    # one real step shows that optimizer, loss and metrics work with the data
    # (it also builds metrics that make their variables on first use).
    callbacks_to_check = make_callbacks(recipe, run_dir=directory.path)
    rehearse(built)
    check_policy(built)
    check_callbacks(built, callbacks_to_check, run_dir=directory.path)
    if not restart:
        check_sources(directory, built)
        directory.check_same_data(built.data.info.sizes)
    # Multi-worker: only the chief writes the run directory; the other workers
    # write to a scratch directory, removed at the end, starting from a copy of
    # the chief's checkpoints so that every worker resumes (and later decides
    # its saves) exactly as the chief does.
    role = cluster.role(built.strategy)
    sink = sink or make_sink(recipe.trainer.progress, chief=role.is_chief)
    shared, directory = directory, scratch.writable_run_dir(directory, role)
    if not role.is_chief:
        built.recipe = scratch.quiet(built.recipe)  # the chief alone reports
        if not restart:
            scratch.copy_checkpoints(shared, directory)
    # Built before anything is written: a callback that fails to construct is a
    # bad recipe (one line, exit 2), not a failed run.
    callback_objects = make_callbacks(recipe, run_dir=directory.path) + list(callbacks or [])
    moved = None
    if restart and directory.path.exists() and role.is_chief:
        directory.acquire()  # never move a run that a live process is training
        moved = directory.set_aside()
    directory.acquire()
    controller = None
    try:
        found = candidates(directory.checkpoints)
        check_same_start(built.strategy, step_of(found[0]) if found else 0)
        directory.start(recipe, command=command_line(), recipe_source=recipe_source, resumed=bool(found))
        if role.is_chief:
            keep_sources(built, directory, sink)
        # Only now, validated and holding the lock, may a relative data.cache path
        # write its files (inside the run directory, so a resumed run reuses them).
        built.data.use_cache_dir(directory.path)
        directory.update_status(
            distribution=batch_plan(recipe, built.strategy), examples=dict(built.data.info.sizes)
        )
        if role.is_chief:
            record_inputs(built, directory)  # inference.json: what export and predict need
        sink.line(header(built, directory))
        if moved:
            sink.notice(f"the previous run in {directory.path} was moved to {moved}")
        if changes and role.is_chief:
            sink.notice(f"resuming with changed settings: {', '.join(changes)}")
            note = schedule_note(built, previous, step_of(found[0]) if found else 0)
            if note:
                sink.notice(note)
        policy = built.recipe.trainer
        checkpointer = Checkpointer(
            directory.checkpoints,
            model=built.model,
            optimizer=built.trainer.optimizer,
            metrics=built.trainer.train_metrics,
            keep=policy.checkpoint.keep,
            callbacks=callback_objects,
            monitor=policy.checkpoint.monitor,
            mode=policy.checkpoint.mode,
        )
        controller = make_controller(
            built, directory, checkpointer, sink, callback_objects, phases, process_started=process_started
        )
        history = controller.run()
        directory.update_status(**controller.summary)
        with phases.timed("final_evaluation"):
            metrics = final_evaluation(controller, built, directory, sink)
        if role.is_chief:
            with phases.timed("export"):
                export_trained(built, directory)
        directory.update_status(status="completed", ended=now(), phases=phases.as_dict())
    except BaseException as err:
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
            raise err from None
        lost = cluster.as_worker_lost(err, built.strategy)
        if lost is not None:
            raise lost from None
        raise
    finally:
        if controller is not None:
            controller.metrics_log.close()  # (closed already, unless it failed before training)
        directory.release()
        scratch.remove_scratch(directory, role)
    return Trained(shared.path, built, history, metrics)


def make_controller(built, directory: RunDir, checkpointer, sink: Sink, callbacks: list, phases: Phases, *, process_started: float | None):
    """The run's controller, with its collaborators: the checkpointer, the metrics
    log and the profiler window in the run directory, the sink and the callbacks."""
    from trainkit.training.controller import Controller
    from trainkit.training.events import ProfileWindow
    from trainkit.training.report import MetricsLog

    policy = built.recipe.trainer
    return Controller(
        trainer=built.trainer, data=built.data, strategy=built.strategy, policy=policy,
        checkpointer=checkpointer, metrics_log=MetricsLog(directory),
        profile=ProfileWindow(policy.profile_steps, directory.tensorboard), sink=sink, callbacks=callbacks,
        steps_per_epoch=built.steps_per_epoch, total_steps=built.total_steps, phases=phases,
        events=(built.stages,) if built.stages else (), process_started=process_started,
    )


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
    from trainkit.build import total_steps
    from trainkit.optim import budget_change_note

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
    if any(mark in text for mark in (".tmp.keras", "saved_model", ".tflite", ".onnx", "export")):
        return "the exported model"
    return "a file"


def _state_bytes(built) -> int:
    """Bytes of the model's and optimizer's variables: about what a checkpoint takes."""
    variables = [*built.model.variables, *built.trainer.optimizer.variables]
    return sum(int(v.numpy().nbytes) for v in variables)


def check_sources(directory: RunDir, built) -> None:
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
    # keeps its recorded digest in the recipe's identity.
    for name, before in recorded.items():
        built.recipe._source_digests.setdefault(name, before["digest"])


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
        f"training {recipe.name} ({recipe.hash}) into {directory.path}: "
        f"{info.sizes['train']} training examples, {built.steps_per_epoch} steps/epoch, {built.total_steps} steps; "
        f"{built.model.count_params():,} parameters; {describe(built.strategy)}, "
        f"{batch_text(recipe, built.strategy)}"
    )


def final_evaluation(controller, built, directory: RunDir, sink: Sink) -> dict[str, dict[str, float]]:
    results = {}
    for split in built.recipe.trainer.evaluate:
        if built.data.has_split(split):
            results[split] = controller.evaluate(split, hooks=False)
            sink.result(split, results[split])
    write_json_atomic(directory.eval_json, results)
    return results
