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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainkit import distribute
from trainkit.errors import ConfigError, RunDirError
from trainkit.loader import load_recipe
from trainkit.recipe import Recipe
from trainkit.runtime import quiet_tensorflow
from trainkit.training.run_dir import RunDir, command_line

DEFAULT_RUNS = "runs"


@dataclass
class Run:
    """A finished (or resumed and finished) training run."""

    recipe: Recipe
    run_dir: Path
    model: Any
    history: dict[str, list] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    """Final metrics per evaluated split, as in ``eval.json``."""
    _built: Any = None

    def evaluate(self, split: str = "test") -> dict[str, float]:
        """Metrics of the trained model on ``split`` (``train``, ``validation``, ``test``)."""
        built = self._built
        return built.trainer.evaluate(built.data.distributed(built.strategy, split))

    def __repr__(self) -> str:
        return f"Run({self.recipe.name!r}, run_dir={str(self.run_dir)!r}, metrics={self.metrics})"


def _as_recipe(recipe: Recipe | str | os.PathLike) -> Recipe:
    return recipe if isinstance(recipe, Recipe) else load_recipe(recipe)


def _source_of(recipe: Recipe) -> str | None:
    return getattr(recipe, "_source", None)


def default_run_dir(recipe: Recipe) -> Path:
    return Path(DEFAULT_RUNS) / recipe.name


def train(
    recipe: Recipe | str | os.PathLike,
    *,
    run_dir: str | os.PathLike | None = None,
    restart: bool = False,
    callbacks: list | None = None,
    trainer_class: type | None = None,
) -> Run:
    """Train a recipe into a run directory (default ``runs/<name>``) and evaluate it.

    A run directory holding a run of the same recipe is resumed from its latest
    checkpoint; one holding a different recipe is refused unless ``restart``,
    which moves the old run aside (never deletes it). ``callbacks`` are extra
    Keras callbacks; ``trainer_class`` a :class:`~trainkit.training.loop.Trainer`
    subclass overriding ``compute_loss``/``train_step``/``test_step``.
    """
    quiet_tensorflow()
    recipe = _as_recipe(recipe)
    if distribute.serve_if_server_task(recipe.runtime):
        # A parameter-server cluster's worker or ps task: it served the chief, which trained.
        return Run(recipe, Path(run_dir or default_run_dir(recipe)), model=None)
    directory = RunDir(run_dir or default_run_dir(recipe))
    moved = None
    if not restart:
        changes = directory.check_compatible(recipe)  # read-only: refuses before anything is built
    else:
        changes = []
    from trainkit.build import build, make_callbacks
    from trainkit.training.fit import fit

    built = build(recipe, trainer_class=trainer_class)  # all validation happens here
    # Multi-worker: only the chief writes the run directory; the other workers
    # read its checkpoints and write to a scratch directory, removed at the end.
    role = distribute.role(built.strategy)
    shared, directory = directory, distribute.writable_run_dir(directory, role)
    if not role.is_chief:
        built.recipe = distribute.quiet(built.recipe)  # the chief alone reports
    if restart and directory.path.exists() and role.is_chief:
        moved = directory.set_aside()
    directory.acquire()
    try:
        resume_from = None
        from trainkit.training.checkpoint import Checkpointer

        latest = None if restart and not role.is_chief else _latest_checkpoint(shared)
        if latest:
            done_step = Checkpointer.counters(latest)[0]
            resume_from = latest
            if done_step >= built.total_steps and shared.read_status().get("status") == "completed" and role.is_chief:
                print(f"{directory.path}: already trained to step {done_step}; evaluating the final model")
        distribute.check_same_start(built.strategy, Checkpointer.counters(latest)[0] if latest else 0)
        directory.start(recipe, command=command_line(), recipe_source=_source_of(recipe), resumed=bool(latest))
        directory.update_status(distribution=distribute.batch_plan(recipe, built.strategy))
        if built.recipe.trainer.progress:
            print(_header(built, directory))
        if moved:
            print(f"the previous run in {directory.path} was moved to {moved}")
        if changes and role.is_chief:
            print(f"resuming with changed settings: {', '.join(changes)}")
        callback_objects = make_callbacks(recipe, tensorboard_dir=str(directory.tensorboard / "keras"))
        history = fit(built, directory, callbacks=callback_objects + list(callbacks or []), resume_from=resume_from)
        metrics = _final_evaluation(built, directory)
        if role.is_chief:
            _export(built, directory)
        directory.update_status(status="completed", ended=_now())
    except BaseException as err:
        status = directory.read_status().get("status")
        if status == "running":
            directory.update_status(status="failed", error=f"{type(err).__name__}: {err}", ended=_now())
        lost = distribute.as_worker_lost(err, built.strategy)
        if lost is not None:
            raise lost from None
        raise
    finally:
        directory.release()
        distribute.remove_scratch(directory, role)
    return Run(recipe, shared.path, built.model, history, metrics, built)


def _header(built, directory: RunDir) -> str:
    from trainkit.runtime import describe

    info, recipe = built.data.info, built.recipe
    return (
        f"training {recipe.name} ({recipe.hash}) into {directory.path}: "
        f"{info.sizes['train']} training examples, {built.steps_per_epoch} steps/epoch, {built.total_steps} steps; "
        f"{built.model.count_params():,} parameters; {describe(built.strategy)}, "
        f"{distribute.batch_text(recipe, built.strategy)}"
    )


def _now() -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _latest_checkpoint(directory: RunDir) -> str | None:
    if not directory.checkpoints.is_dir():
        return None
    import tensorflow as tf

    return tf.train.latest_checkpoint(str(directory.checkpoints))


def _final_evaluation(built, directory: RunDir) -> dict[str, dict[str, float]]:
    from trainkit.training.run_dir import write_json_atomic

    results = {}
    for split in built.recipe.trainer.evaluate:
        if split in built.data.arrays:
            results[split] = built.trainer.evaluate(built.data.distributed(built.strategy, split))
            if built.recipe.trainer.progress:
                shown = "  ".join(f"{k} {v:.4g}" for k, v in results[split].items())
                print(f"{split}: {shown}")
    write_json_atomic(directory.eval_json, results)
    return results


def _export(built, directory: RunDir) -> None:
    formats = built.recipe.export.formats
    if "keras" in formats:
        from trainkit.export import portable_copy

        tmp = directory.path / ".model.tmp.keras"
        portable_copy(built.model, built.trainer.optimizer).save(tmp)
        os.replace(tmp, directory.model_file)
    if "saved_model" in formats:
        built.model.export(str(directory.path / "saved_model"), verbose=False)


def load_run_recipe(run_dir: str | os.PathLike) -> Recipe:
    """The recipe of a run directory, with its recipe module's components registered."""
    directory = RunDir(run_dir)
    if not directory.exists():
        raise RunDirError(f"{directory.path} is not a trainkit run directory (no config.yaml)")
    source = directory.read_status().get("recipe_source")
    if source and Path(source).is_file():
        from trainkit.loader import _import_recipe_module

        _import_recipe_module(Path(source))
    return load_recipe(directory.config)


def evaluate(
    run_dir: str | os.PathLike,
    *,
    split: str = "test",
    checkpoint: str = "last",
) -> dict[str, float]:
    """Metrics of a run's checkpoint on a split.

    ``checkpoint`` is ``last`` (the latest checkpoint), ``final`` (``model.keras``)
    or a checkpoint path (``runs/x/checkpoints/ckpt-120``).
    """
    quiet_tensorflow()
    recipe = distribute.in_one_process(load_run_recipe(run_dir))  # a cluster's run, evaluated here
    directory = RunDir(run_dir)
    from trainkit.build import build
    from trainkit.training.checkpoint import restore_model_weights

    built = build(recipe)
    built.data._check_split(split)
    if checkpoint == "final":
        if not directory.model_file.is_file():
            raise RunDirError(f"{directory.model_file} does not exist: the run has not finished")
        built.model.load_weights(directory.model_file)
    else:
        path = _latest_checkpoint(directory) if checkpoint == "last" else checkpoint
        if not path:
            raise RunDirError(f"{directory.checkpoints} holds no checkpoint")
        import tensorflow as tf

        if not tf.io.gfile.exists(path + ".index"):
            raise ConfigError(
                f"--checkpoint: no checkpoint at {path}; use last, final or a path such as "
                f"{directory.checkpoints / 'ckpt-N'}"
            )
        restore_model_weights(built.model, path)
    return built.trainer.evaluate(built.data.distributed(built.strategy, split))


def dataset(recipe: Recipe | str | os.PathLike, split: str = "train"):
    """The batched ``tf.data.Dataset`` that feeds ``split`` (train: shuffled, epoch 0)."""
    quiet_tensorflow()
    recipe = _as_recipe(recipe)
    from trainkit.data.pipeline import prepare

    data = prepare(recipe.data, seed=recipe.seed)
    return data.dataset(split, training=split == "train")


def validate(recipe: Recipe | str | os.PathLike) -> dict[str, Any]:
    """Check a recipe end to end without training: schema, components, data, one batch.

    Returns a summary: data shapes and sizes, model parameters, steps per epoch.
    """
    quiet_tensorflow()
    recipe = _as_recipe(recipe)
    from trainkit.build import build

    built = build(recipe)
    info = built.data.info
    x, y = next(iter(built.data.dataset("train", training=True)))
    built.trainer.evaluate(built.strategy.experimental_distribute_dataset(
        built.data.dataset("train").take(1)
    ))
    return {
        "recipe": recipe.name,
        "hash": recipe.hash,
        "features": list(info.feature_shape),
        "task": info.task,
        "classes": info.num_classes,
        "examples": info.sizes,
        "batch": [list(x.shape), list(y.shape)],
        "parameters": int(built.model.count_params()),
        "steps_per_epoch": built.steps_per_epoch,
        "total_steps": built.total_steps,
        "strategy": _strategy_name(built.strategy),
    }


def _strategy_name(strategy) -> str:
    from trainkit.runtime import describe

    return describe(strategy)
