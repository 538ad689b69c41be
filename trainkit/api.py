"""The Python API: the same functions the CLI calls, for scripts and notebooks.

>>> import trainkit
>>> recipe = trainkit.load_recipe("digits_mlp", configs=["digits_mlp_smoke"])
>>> run = trainkit.train(recipe, run_dir="runs/demo")       # doctest: +SKIP
>>> run.metrics["test"]["accuracy"]                          # doctest: +SKIP
0.97
>>> trainkit.evaluate("runs/demo", split="validation")       # doctest: +SKIP
{'loss': 0.11, 'accuracy': 0.97}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from trainkit import tracking
from trainkit.distribution.cluster import cluster_info, is_evaluator_task
from trainkit.distribution.parameter_server import serve_if_server_task
from trainkit.distribution.strategies import describe
from trainkit.errors import ConfigError
from trainkit.evaluation import evaluate as evaluate
from trainkit.loader import load_recipe
from trainkit.recipe import Recipe
from trainkit.rundir import load_run_recipe as load_run_recipe
from trainkit.runs import Run, read_history
from trainkit.runtime import leaves_process_as_it_was, quiet_tensorflow
from trainkit.tracking import ParentRun

DEFAULT_RUNS = "runs"


def _as_recipe(recipe: Recipe | str | os.PathLike) -> Recipe:
    return recipe if isinstance(recipe, Recipe) else load_recipe(recipe)


def _source_of(recipe: Recipe) -> str | None:
    return getattr(recipe, "_source", None)


def default_run_dir(recipe: Recipe) -> Path:
    """``runs/<name>``, or ``runs/<config>`` for a recipe varied by a config layer."""
    return Path(DEFAULT_RUNS) / recipe.run_name


def train(
    recipe: Recipe | str | os.PathLike,
    *,
    run_dir: str | os.PathLike | None = None,
    restart: bool = False,
    callbacks: list | None = None,
    trainer_class: type | None = None,
    tracking_parent: ParentRun | None = None,
    process_started: float | None = None,
) -> Run:
    """Train a recipe into a run directory (default ``runs/<name>``) and evaluate it.

    A run directory holding a run of the same recipe is resumed from its latest
    checkpoint; one holding a different recipe is refused unless ``restart``,
    which moves the old run aside (never deletes it). ``callbacks`` are extra
    Keras callbacks; ``trainer_class`` a :class:`~trainkit.training.loop.Trainer`
    subclass overriding ``compute_loss``/``train_step``/``test_step``.
    ``tracking_parent``: a sweep's MLflow run (:func:`trainkit.tracking.start_parent`),
    under which this run is tracked as a child. ``process_started`` (``time.time()``):
    when the process began, if this call is its job (the CLI), for run.json's start-up
    phase and time to the first step.
    """
    import time

    # The job's start, for run.json's phases: the process's (the CLI) or this call's.
    started = process_started or time.time()
    quiet_tensorflow()
    recipe = _as_recipe(recipe)
    served = _serve_if_not_a_trainer(recipe, Path(run_dir or default_run_dir(recipe)), started)
    if served is not None:
        return served
    from trainkit.runtime import preserved_process_state
    from trainkit.serving.export import export_trained, record_inputs
    from trainkit.training.lifecycle import train_run
    from trainkit.training.stops import TrainingStopped

    target = Path(run_dir or default_run_dir(recipe))
    info = cluster_info()
    tracker = tracking.tracker_for(recipe, target, parent=tracking_parent) if info is None or info.is_chief else None
    try:
        with preserved_process_state():
            trained = train_run(
                recipe, target, restart=restart, callbacks=[*(callbacks or []), *([tracker.callback()] if tracker else [])],
                trainer_class=trainer_class, recipe_source=_source_of(recipe), started=started,
                record_inputs=record_inputs, export=export_trained, process_started=process_started,
            )
    except BaseException as err:
        if tracker:
            tracker.finish("KILLED" if isinstance(err, TrainingStopped | KeyboardInterrupt) else "FAILED")
        if isinstance(err, TrainingStopped):
            # The run so far, for `except trainkit.Interrupted as stop: stop.run.history`.
            err.run = Run(recipe, target)
        raise
    if tracker:
        tracker.finish("FINISHED")
    built = trained.built
    # The history of every epoch the run has trained, not only this call's (a resumed run).
    return Run(recipe, trained.run_dir, built.model, read_history(trained.run_dir), trained.metrics, built)


def _serve_if_not_a_trainer(recipe: Recipe, target: Path, started: float) -> Run | None:
    """The run as this task of a cluster saw it, where the task does not train: the
    evaluator task evaluates the workers' checkpoints as they come, and a parameter-server
    cluster's worker or ps task serves the chief, which trains. None: this task trains."""
    if is_evaluator_task():
        from trainkit.sidecar import EVALUATOR_POLL_SECONDS, watch

        watch(target, until_finished=True, every_seconds=EVALUATOR_POLL_SECONDS, wait_for_run=True, ended_after=started)
        return Run(recipe, target, served_only=True)
    if serve_if_server_task(recipe.runtime):
        return Run(recipe, target, served_only=True)
    return None


def _init_line(report: dict) -> str:
    from trainkit.models.warm_start import summary_line

    return summary_line(report)


def dataset(recipe: Recipe | str | os.PathLike, split: str = "train", *, raw: bool = False):
    """The batched ``tf.data.Dataset`` that feeds ``split`` (train: shuffled, epoch 0).

    ``raw=True``: the split as the source gives it, in evaluation order, before
    ``data.scale`` and the transforms -- what an exported model takes.
    """
    quiet_tensorflow()
    recipe = _as_recipe(recipe)
    from trainkit.data.pipeline import prepare
    from trainkit.models.pretrained import data_section

    data = prepare(data_section(recipe), seed=recipe.seed)
    if raw:
        return data.raw_dataset(split)
    return data.dataset(split, training=split == "train")


@leaves_process_as_it_was
def validate(recipe: Recipe | str | os.PathLike) -> dict[str, Any]:
    """Check a recipe end to end without training: schema, components, data, one batch.

    Returns a summary: data shapes and sizes, model parameters, steps per epoch.
    """
    quiet_tensorflow()
    recipe = _as_recipe(recipe)
    from trainkit.plan import build

    built = build(recipe)
    info = built.data.info
    from trainkit.plan import check_callbacks, make_callbacks, rehearse
    from trainkit.training.lifecycle import check_policy

    callbacks = make_callbacks(recipe)
    rehearse(built)  # one training step and one evaluation step, weights restored after
    check_policy(built)
    check_callbacks(built, callbacks)
    # One batch read around data.cache: validating writes no cache files.
    x, y = next(iter(built.data._uncached().dataset("train", training=True)))
    return {
        "recipe": recipe.name,
        "hash": built.identity.hash,
        "features": list(info.feature_shape),
        "task": info.task,
        "classes": info.num_classes,
        "examples": info.sizes,
        "batch": [{k: list(v.shape) for k, v in x.items()} if isinstance(x, dict) else list(x.shape), list(y.shape)],
        "parameters": int(built.model.count_params()),
        **(built.finetune or {}),
        **({"sources": {u.field: f"{u.source} (digest {u.digest})" for u in built.sources}} if built.sources else {}),
        **({"init": _init_line(built.init_report)} if built.init_report else {}),
        "steps_per_epoch": built.steps_per_epoch,
        "total_steps": built.total_steps,
        "strategy": describe(built.strategy),
    }


#: ``trainkit data --seconds`` at most: an hour of timing is far more than a rate needs.
MAX_INSPECT_SECONDS = 3600.0


def _check_inspect_budget(n: Any, seconds: Any) -> None:
    """Refuse, in one line, a count or time budget that would silently show or time nothing."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"n (trainkit data -n): must be a whole number of examples, 0 or more, got {n!r}")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= MAX_INSPECT_SECONDS:
        raise ConfigError(f"seconds (trainkit data --seconds): must be a number above 0 and at most {MAX_INSPECT_SECONDS:g}, got {seconds!r}")


def inspect_data(
    recipe: Recipe | str | os.PathLike,
    split: str = "train",
    *,
    n: int = 5,
    seconds: float = 5.0,
) -> dict[str, Any]:
    """A split as the model sees it, and how fast its pipeline runs alone.

    Returns the element spec (per example), the number of examples, the label
    distribution (over one epoch or ``seconds``, whichever ends first), the first
    ``n`` examples (evaluation order, NumPy), and the throughput of the split's
    pipeline (the training pipeline for ``train``: shuffled and augmented as epoch
    0) cut after each of its stages (``stage_examples_per_second``: read, parse,
    transform, batch, a quarter of ``seconds`` each; ``examples_per_second`` is the
    last, the whole pipeline). ``cached``: the split's examples are kept after their
    first pass; where the label count read the split whole, that pass is made, and
    ``batch`` reads the cache, as every epoch after the first does. Writes nothing.
    """
    _check_inspect_budget(n, seconds)
    quiet_tensorflow()
    recipe = _as_recipe(recipe)
    from trainkit.data.pipeline import prepare
    from trainkit.models.pretrained import data_section

    data = prepare(data_section(recipe), seed=recipe.seed)
    data._check_split(split)
    info = data.info
    ds = data.dataset(split, training=split == "train")
    x_spec, y_spec = ds.element_spec

    def per_example(spec) -> str:
        return f"{spec.dtype.name} {spec.shape.as_list()[1:]}"

    spec = {
        "features": {k: per_example(v) for k, v in x_spec.items()} if isinstance(x_spec, dict) else per_example(x_spec),
        "label": per_example(y_spec),
    }
    scan = _scan_labels(ds, info, split, seconds)
    stages = _stage_rates(data, split, seconds / 4)
    return {
        "recipe": recipe.name,
        "split": split,
        "source": recipe.data.source.type,
        "held_as": data.kind(split),
        "cached": data.cached(split),
        "element_spec": spec,
        "examples": info.sizes[split],
        "batches": data.steps_per_epoch(split) if split == "train" else -(-info.sizes[split] // data.batch_size(training=False)),
        "task": info.task,
        "classes": info.num_classes,
        "label_distribution": scan["labels"],
        "label_distribution_complete": scan["complete"],
        "label_distribution_examples": scan["seen"],
        "first_examples": data.examples(split, n),
        "examples_per_second": stages["batch"],
        "stage_examples_per_second": stages,
        "skipped_files": list(info.skipped),
        "text": _text_report(data, split, n),
    }


#: What ``stage_examples_per_second`` gives a stage that ran once, when the data was prepared.
PREPARED = "prepared in memory"


def _stage_rates(data, split: str, seconds: float) -> dict[str, float | str | None]:
    """Examples per second of the pipeline of ``split`` cut after each stage (read,
    parse, transform, batch: each includes the ones before), over ``seconds`` a
    stage (:func:`_examples_per_second`); None for an empty split, :data:`PREPARED`
    for a stage that an in-memory split ran once, before any epoch."""
    batch_size = data.batch_size(training=split == "train")
    return {
        name: PREPARED if ds is None else _examples_per_second(ds, None if batched else batch_size, seconds=seconds)
        for name, ds, batched in data.stages(split, training=split == "train")
    }


def _examples_per_second(ds, batch_size: int | None, *, seconds: float) -> float | None:
    """Examples per second of ``ds``, passes repeated, from its first batch (thread
    start-up, the first file: paid once in a training) to ``seconds`` after it. What
    every epoch pays again is counted: a short split's shuffle buffer filling anew
    for each pass. (Timing one pass, start-up included, put a small split at a
    tenth of its speed in training; leaving out only the first batch of one pass
    left out the buffer's fill, a small split's whole work.)

    Read the way training reads: batches pulled inside a ``tf.function``, a few at a
    call. ``batch_size``: ``ds`` gives single examples, read in batches of this size
    (``ragged_batch``: decoded images may differ in size). A Python loop over single
    examples costs about 0.1 ms each, which capped the stages before batching near
    10,000 examples/s and named them the ones to fix whatever they did; over batches
    it still costs about as much as reading 32 small records."""
    import time

    import tensorflow as tf

    @tf.function
    def pull(iterator, most):
        examples = tf.constant(0, tf.int64)
        for _ in tf.range(most):
            element = iterator.get_next_as_optional()
            if not element.has_value():
                break
            examples += _rows(tf.nest.flatten(element.get_value())[0])
        return examples

    iterator = iter((ds if batch_size is None else ds.ragged_batch(batch_size)).repeat())
    if not int(pull(iterator, tf.constant(1, tf.int64))):
        return None  # an empty split
    examples, calls, start = 0, 1, time.perf_counter()
    while time.perf_counter() - start < seconds:
        before = time.perf_counter()
        examples += int(pull(iterator, tf.constant(calls, tf.int64)))
        if time.perf_counter() - before < 0.05:
            calls *= 2  # (more batches a call, while a call stays short)
    return examples / (time.perf_counter() - start)


def _rows(value):
    import tensorflow as tf

    return value.nrows(out_type=tf.int64) if isinstance(value, tf.RaggedTensor) else tf.shape(value, out_type=tf.int64)[0]


def _text_report(data, split: str, n: int, limit: int = 10_000) -> dict[str, Any] | None:
    """The tokenizer (``data.text``) on up to ``limit`` raw texts of ``split``: vocabulary size,
    out-of-vocabulary rate, share cut by ``sequence_length``; and the first ``n`` raw texts."""
    import numpy as np

    from trainkit.data import text

    if data.text_step is None:
        return None
    texts, seen = [], 0
    for x, _ in data.raw_dataset(split, batch_size=1024):
        texts.append(x.numpy())
        seen += len(texts[-1])
        if seen >= limit:
            break
    raw = np.concatenate(texts)[:limit] if texts else np.zeros((0,), object)
    return {**text.statistics(data.text_step, raw), "raw_examples": [t.decode("utf-8", "replace") for t in raw[:n]]}


def _scan_labels(ds, info, split: str, seconds: float) -> dict[str, Any]:
    """Read ``ds`` for one epoch or ``seconds``: the label distribution (counts per
    class, or min/mean/max) and how many examples were seen."""
    import time

    import numpy as np

    counts: dict[int, int] = {}
    values: list[np.ndarray] = []
    seen = 0
    start = time.perf_counter()
    complete = True
    for _, y in ds:
        y = y.numpy()
        seen += len(y)
        if info.task == "classification":
            labels = y.argmax(-1) if y.ndim > 1 else y
            for label, count in zip(*np.unique(labels, return_counts=True), strict=True):
                counts[int(label)] = counts.get(int(label), 0) + int(count)
        else:
            values.append(y.reshape(len(y), -1))
        if time.perf_counter() - start > seconds:
            complete = seen >= info.sizes[split]
            break
    if info.task == "classification":
        names = info.class_names or []
        labels = {(names[k] if k < len(names) else str(k)): counts.get(k, 0) for k in range(info.num_classes)}
    else:
        all_values = np.concatenate(values) if values else np.zeros((0, 1))
        labels = {"min": float(all_values.min()), "mean": float(all_values.mean()), "max": float(all_values.max())}
    return {"labels": labels, "complete": complete, "seen": seen}
