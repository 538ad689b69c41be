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

import functools
import os
from pathlib import Path
from typing import Any

from trainkit.distribution.parameter_server import serve_if_server_task
from trainkit.distribution.strategies import describe, in_one_process
from trainkit.errors import ConfigError, RunDirError
from trainkit.loader import load_recipe
from trainkit.recipe import Recipe
from trainkit.runs import Run, read_history
from trainkit.runtime import quiet_tensorflow
from trainkit.training.run_dir import RunDir
from trainkit.training.sinks import warn

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
    process_started: float | None = None,
) -> Run:
    """Train a recipe into a run directory (default ``runs/<name>``) and evaluate it.

    A run directory holding a run of the same recipe is resumed from its latest
    checkpoint; one holding a different recipe is refused unless ``restart``,
    which moves the old run aside (never deletes it). ``callbacks`` are extra
    Keras callbacks; ``trainer_class`` a :class:`~trainkit.training.loop.Trainer`
    subclass overriding ``compute_loss``/``train_step``/``test_step``.
    ``process_started`` (``time.time()``): when the process began, if this call
    is its job (the CLI), for run.json's start-up phase and time to the first step.
    """
    import time

    # The job's start, for run.json's phases: the process's (the CLI) or this call's.
    started = process_started or time.time()
    quiet_tensorflow()
    recipe = _as_recipe(recipe)
    if serve_if_server_task(recipe.runtime):
        # A parameter-server cluster's worker or ps task: it served the chief, which trained.
        return Run(recipe, Path(run_dir or default_run_dir(recipe)), served_only=True)
    from trainkit.runtime import preserved_process_state
    from trainkit.training.lifecycle import train_run
    from trainkit.training.stops import TrainingStopped

    target = Path(run_dir or default_run_dir(recipe))
    try:
        with preserved_process_state():
            trained = train_run(
                recipe, target, restart=restart, callbacks=callbacks,
                trainer_class=trainer_class, recipe_source=_source_of(recipe), started=started,
                process_started=process_started,
            )
    except TrainingStopped as stop:
        # The run so far, for `except trainkit.Interrupted as stop: stop.run.history`.
        stop.run = Run(recipe, target)
        raise
    built = trained.built
    # The history of every epoch the run has trained, not only this call's (a resumed run).
    return Run(recipe, trained.run_dir, built.model, read_history(trained.run_dir), trained.metrics, built)


def load_run_recipe(run_dir: str | os.PathLike, *, recipe_file: str | os.PathLike | None = None) -> Recipe:
    """The recipe of a run directory (its ``config.yaml``).

    A run directory is data: it never makes trainkit run code, whatever its
    run.json says (a copied or edited run directory must not be able to). A run
    whose recipe registered its own components needs them registered again:
    either already in this process (a notebook that trained it), or by the
    recipe file the caller names in ``recipe_file`` (``trainkit eval --recipe``),
    which is imported because the caller chose it.
    """
    directory = RunDir(run_dir)
    if not directory.exists():
        raise RunDirError(f"{directory.path} is not a trainkit run directory (no config.yaml)")
    if recipe_file is not None:
        from trainkit.loader import import_recipe_file

        import_recipe_file(Path(recipe_file), option="--recipe")
    return directory.read_recipe()


def with_recipe_file_hint(directory: RunDir, err: ConfigError) -> ConfigError:
    """``err`` with a hint when the run came from a Python recipe that was not named."""
    source = directory.read_status().get("recipe_source")
    if not source:
        return err
    return ConfigError(
        f"{err}; this run was trained from the recipe file {source}, whose components a run directory "
        f"never imports by itself: name it with --recipe {source} (recipe_file= in Python)"
    )


def _leaves_process_as_it_was(function):
    """Seeds, determinism, precision policy and Keras serializables restored after ``function``
    (which builds a recipe, and so applies its runtime section to the process)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        quiet_tensorflow()
        from trainkit.runtime import preserved_process_state

        with preserved_process_state():
            return function(*args, **kwargs)

    return wrapper


@_leaves_process_as_it_was
def evaluate(
    run_dir: str | os.PathLike,
    *,
    split: str = "test",
    checkpoint: str = "last",
    recipe_file: str | os.PathLike | None = None,
) -> dict[str, float]:
    """Metrics of one of a run's kept checkpoints on a split.

    ``checkpoint`` is ``last`` (the newest checkpoint that reads back), ``best``
    (the best by ``trainer.checkpoint.monitor``), ``final`` (the state when
    training ended), a step number (``120`` picks ``ckpt-120``) or a checkpoint
    path (``runs/x/checkpoints/ckpt-120``). ``recipe_file``: the Python recipe
    the run was trained from, imported to register its components (a run
    directory never imports code by itself).
    """
    quiet_tensorflow()
    directory = RunDir(run_dir)
    recipe = in_one_process(load_run_recipe(run_dir, recipe_file=recipe_file))  # a cluster's run, evaluated here
    from trainkit.build import build

    try:
        built = build(recipe, run_dir=directory.path)  # (its copy of a pretrained source, if the source is gone)
    except ConfigError as err:
        if recipe_file is not None:
            raise
        raise with_recipe_file_hint(directory, err) from None
    built.data._check_split(split)
    load_checkpoint_weights(built.model, directory, checkpoint)
    return built.trainer.evaluate_split(built.data, split)


def load_checkpoint_weights(model, directory: RunDir, which: str, *, field: str = "--checkpoint") -> str:
    """Load the weights of the checkpoint ``which`` names into ``model``; returns its path.

    ``field`` is the option or recipe field that named it, for error messages.
    """
    from trainkit.training.checkpoint import (
        candidates,
        latest_readable,
        restore_model_weights,
        step_of,
    )

    ckpts = directory.checkpoints
    kept = [ckpts / "final", ckpts / "best", ckpts]
    choices = "use last, best, final, a step number or a checkpoint path"

    def restore(path: str) -> str:
        try:
            restore_model_weights(model, path)
        except Exception as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RunDirError(f"{field}: {path} cannot be read back: {reason[:160]}") from None
        return path

    if which in ("last", "best", "final"):
        where = ckpts if which == "last" else ckpts / which
        path, skipped = latest_readable(where, lambda p: restore_model_weights(model, p))
        for bad, reason in skipped:
            warn(f"warning: checkpoint {bad} cannot be read back ({reason}); skipped it")
        if path:
            return path
        if which == "final" and directory.model_file.is_file():
            model.load_weights(directory.model_file)  # a run from before checkpoints/final/
            return str(directory.model_file)
        if which == "best" and not skipped:
            raise RunDirError(
                f"{field} best: {where} holds no checkpoint (the run monitored no metric: "
                "trainer.checkpoint.monitor was null, or auto without a validation split); "
                "set trainer.checkpoint.monitor (e.g. loss) to keep the best one"
            )
        if which == "final" and not skipped:
            raise RunDirError(f"{field} final: {directory.path} has not finished training; {choices}")
        raise RunDirError(f"{field} {which}: {where} holds no readable checkpoint")
    if which.isdigit():
        for folder in kept:
            path = folder / f"ckpt-{int(which)}"
            if Path(f"{path}.index").is_file():
                return restore(str(path))
        steps = sorted({step_of(p) for folder in kept for p in candidates(folder)})
        shown = ", ".join(map(str, steps)) or "none"
        raise ConfigError(f"{field}: no checkpoint of step {which} in {ckpts} (kept steps: {shown}); {choices}")
    path = which[: -len(".index")] if which.endswith(".index") else which
    if not Path(f"{path}.index").is_file():
        raise ConfigError(f"{field}: no checkpoint at {which}; {choices}")
    return restore(path)


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

    data = prepare(recipe.data, seed=recipe.seed)
    if raw:
        return data.raw_dataset(split)
    return data.dataset(split, training=split == "train")


@_leaves_process_as_it_was
def validate(recipe: Recipe | str | os.PathLike) -> dict[str, Any]:
    """Check a recipe end to end without training: schema, components, data, one batch.

    Returns a summary: data shapes and sizes, model parameters, steps per epoch.
    """
    quiet_tensorflow()
    recipe = _as_recipe(recipe)
    from trainkit.build import build

    built = build(recipe)
    info = built.data.info
    from trainkit.build import check_callbacks, make_callbacks, rehearse
    from trainkit.training.lifecycle import check_policy

    callbacks = make_callbacks(recipe)
    rehearse(built)  # one training step and one evaluation step, weights restored after
    check_policy(built)
    check_callbacks(built, callbacks)
    # One batch read around data.cache: validating writes no cache files.
    x, y = next(iter(built.data._uncached().dataset("train", training=True)))
    return {
        "recipe": recipe.name,
        "hash": recipe.hash,
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


def inspect_data(
    recipe: Recipe | str | os.PathLike,
    split: str = "train",
    *,
    n: int = 5,
    seconds: float = 5.0,
) -> dict[str, Any]:
    """A split as the model sees it, and how fast its pipeline runs alone.

    Returns the element spec (per example), the number of examples, the label
    distribution, the first ``n`` examples (evaluation order, NumPy), and the
    throughput of the split's pipeline (the training pipeline for ``train``:
    shuffled and augmented as epoch 0) over one epoch or ``seconds``, whichever
    ends first. Writes nothing.
    """
    import time

    import numpy as np

    quiet_tensorflow()
    recipe = _as_recipe(recipe)
    from trainkit.data.pipeline import prepare

    data = prepare(recipe.data, seed=recipe.seed)
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
    counts: dict[int, int] = {}
    values: list[np.ndarray] = []
    seen, batches = 0, 0
    iterator = iter(ds)
    start = time.perf_counter()
    warm_examples, warm_time = 0, start
    complete = True
    for _, y in iterator:
        y = y.numpy()
        batches += 1
        seen += len(y)
        if info.task == "classification":
            labels = y.argmax(-1) if y.ndim > 1 else y
            for label, count in zip(*np.unique(labels, return_counts=True), strict=True):
                counts[int(label)] = counts.get(int(label), 0) + int(count)
        else:
            values.append(y.reshape(len(y), -1))
        if batches == 1:  # the first batch pays for start-up: time from here on
            warm_examples, warm_time = seen, time.perf_counter()
        if time.perf_counter() - start > seconds:
            complete = seen >= info.sizes[split]
            break
    now = time.perf_counter()
    if seen > warm_examples:
        rate = (seen - warm_examples) / max(now - warm_time, 1e-9)
    else:  # a single batch: start-up included
        rate = seen / max(now - start, 1e-9) if seen else None
    if info.task == "classification":
        names = info.class_names or []
        labels = {(names[k] if k < len(names) else str(k)): counts.get(k, 0) for k in range(info.num_classes)}
    else:
        all_values = np.concatenate(values) if values else np.zeros((0, 1))
        labels = {"min": float(all_values.min()), "mean": float(all_values.mean()), "max": float(all_values.max())}
    return {
        "recipe": recipe.name,
        "split": split,
        "source": recipe.data.source.type,
        "held_as": data.kind(split),
        "element_spec": spec,
        "examples": info.sizes[split],
        "batches": data.steps_per_epoch(split) if split == "train" else -(-info.sizes[split] // (recipe.data.eval_batch_size or recipe.data.batch_size)),
        "task": info.task,
        "classes": info.num_classes,
        "label_distribution": labels,
        "label_distribution_complete": complete,
        "label_distribution_examples": seen,
        "first_examples": data.examples(split, n),
        "examples_per_second": rate,
        "skipped_files": list(info.skipped),
    }
