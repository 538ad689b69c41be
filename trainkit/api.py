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
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainkit import distribute
from trainkit.errors import ConfigError, RunDirError
from trainkit.loader import load_recipe
from trainkit.recipe import Recipe
from trainkit.runtime import quiet_tensorflow
from trainkit.training import disk_full
from trainkit.training.run_dir import RunDir, command_line

if TYPE_CHECKING:
    from trainkit.serving.predict import Predictions

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

    def predict(self, inputs: Any, *, checkpoint: str | None = None) -> Predictions:
        """Predictions on raw inputs (a NumPy array or a file): :func:`trainkit.predict`."""
        from trainkit.serving.predict import predict

        return predict(self.run_dir, inputs, checkpoint=checkpoint)

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
    directory.check_place()  # a folder that can be written, without links: before anything is built
    if not restart:
        changes = directory.check_compatible(recipe)  # read-only: refuses before anything is built
    else:
        changes = []
    from trainkit.build import build, check_callbacks, make_callbacks, rehearse
    from trainkit.serving.export import export_trained, record_inputs
    from trainkit.training.checkpoint import candidates, step_of
    from trainkit.training.fit import check_policy, fit

    built = build(recipe, trainer_class=trainer_class)  # all validation happens here
    # Everything user-supplied is checked before the run directory is touched:
    # the callbacks are made now (their constructors check their arguments), and
    # one real step shows that optimizer, loss and metrics work with the data
    # (it also builds metrics that make their variables on first use).
    callbacks_to_check = make_callbacks(recipe)
    rehearse(built)
    check_policy(built)
    check_callbacks(built, callbacks_to_check)
    if not restart:
        directory.check_same_data(built.data.info.sizes)
    # Multi-worker: only the chief writes the run directory; the other workers
    # write to a scratch directory, removed at the end, starting from a copy of
    # the chief's checkpoints so that every worker resumes (and later decides
    # its saves) exactly as the chief does.
    role = distribute.role(built.strategy)
    shared, directory = directory, distribute.writable_run_dir(directory, role)
    if not role.is_chief:
        built.recipe = distribute.quiet(built.recipe)  # the chief alone reports
        if not restart:
            distribute.copy_checkpoints(shared, directory)
    if restart and directory.path.exists() and role.is_chief:
        directory.acquire()  # never move a run that a live process is training
        moved = directory.set_aside()
    directory.acquire()
    try:
        found = candidates(directory.checkpoints)
        distribute.check_same_start(built.strategy, step_of(found[0]) if found else 0)
        directory.start(recipe, command=command_line(), recipe_source=_source_of(recipe), resumed=bool(found))
        # Only now, validated and holding the lock, may a relative data.cache path
        # write its files (inside the run directory, so a resumed run reuses them).
        built.data.use_cache_dir(directory.path)
        directory.update_status(
            distribution=distribute.batch_plan(recipe, built.strategy), examples=dict(built.data.info.sizes)
        )
        if role.is_chief:
            record_inputs(built, directory)  # inference.json: what export and predict need
        if built.recipe.trainer.progress:
            print(_header(built, directory))
        if moved:
            print(f"the previous run in {directory.path} was moved to {moved}")
        if changes and role.is_chief:
            print(f"resuming with changed settings: {', '.join(changes)}")
        callback_objects = make_callbacks(recipe, tensorboard_dir=str(directory.tensorboard / "keras"))
        history = fit(built, directory, callbacks=callback_objects + list(callbacks or []))
        metrics = _final_evaluation(built, directory)
        if role.is_chief:
            export_trained(built, directory)
        directory.update_status(status="completed", ended=_now())
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
            status = directory.read_status().get("status")
            if status == "running":
                if isinstance(err, KeyboardInterrupt):
                    directory.update_status(status="interrupted", ended=_now())
                else:
                    directory.update_status(status="failed", error=f"{type(err).__name__}: {err}", ended=_now())
        except OSError:
            if not full:
                raise
        if full or unreadable is not None:
            raise err from None
        lost = distribute.as_worker_lost(err, built.strategy)
        if lost is not None:
            raise lost from None
        raise
    finally:
        directory.release()
        distribute.remove_scratch(directory, role)
    return Run(recipe, shared.path, built.model, history, metrics, built)


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


def _header(built, directory: RunDir) -> str:
    info, recipe = built.data.info, built.recipe
    return (
        f"training {recipe.name} ({recipe.hash}) into {directory.path}: "
        f"{info.sizes['train']} training examples, {built.steps_per_epoch} steps/epoch, {built.total_steps} steps; "
        f"{built.model.count_params():,} parameters; {distribute.describe(built.strategy)}, "
        f"{distribute.batch_text(recipe, built.strategy)}"
    )


def _now() -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _final_evaluation(built, directory: RunDir) -> dict[str, dict[str, float]]:
    from trainkit.training.run_dir import write_json_atomic

    results = {}
    for split in built.recipe.trainer.evaluate:
        if built.data.has_split(split):
            results[split] = built.trainer.evaluate(built.data.distributed(built.strategy, split))
            if built.recipe.trainer.progress:
                shown = "  ".join(f"{k} {v:.4g}" for k, v in results[split].items())
                print(f"{split}: {shown}")
    write_json_atomic(directory.eval_json, results)
    return results


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
    recipe = distribute.in_one_process(load_run_recipe(run_dir, recipe_file=recipe_file))  # a cluster's run, evaluated here
    from trainkit.build import build

    try:
        built = build(recipe)
    except ConfigError as err:
        if recipe_file is not None:
            raise
        raise with_recipe_file_hint(directory, err) from None
    built.data._check_split(split)
    load_checkpoint_weights(built.model, directory, checkpoint)
    return built.trainer.evaluate(built.data.distributed(built.strategy, split))


def load_checkpoint_weights(model, directory: RunDir, which: str) -> str:
    """Load the weights of the checkpoint ``which`` names into ``model``; returns its path."""
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
            raise RunDirError(f"--checkpoint: {path} cannot be read back: {reason[:160]}") from None
        return path

    if which in ("last", "best", "final"):
        where = ckpts if which == "last" else ckpts / which
        path, skipped = latest_readable(where, lambda p: restore_model_weights(model, p))
        for bad, reason in skipped:
            print(f"warning: checkpoint {bad} cannot be read back ({reason}); skipped it", file=sys.stderr)
        if path:
            return path
        if which == "final" and directory.model_file.is_file():
            model.load_weights(directory.model_file)  # a run from before checkpoints/final/
            return str(directory.model_file)
        if which == "best" and not skipped:
            raise RunDirError(
                f"--checkpoint best: {where} holds no checkpoint; set trainer.checkpoint.monitor "
                "(e.g. val_loss) to keep the best one"
            )
        if which == "final" and not skipped:
            raise RunDirError(f"--checkpoint final: {directory.path} has not finished training; {choices}")
        raise RunDirError(f"--checkpoint {which}: {where} holds no readable checkpoint")
    if which.isdigit():
        for folder in kept:
            path = folder / f"ckpt-{int(which)}"
            if Path(f"{path}.index").is_file():
                return restore(str(path))
        steps = sorted({step_of(p) for folder in kept for p in candidates(folder)})
        shown = ", ".join(map(str, steps)) or "none"
        raise ConfigError(f"--checkpoint: no checkpoint of step {which} in {ckpts} (kept steps: {shown}); {choices}")
    path = which[: -len(".index")] if which.endswith(".index") else which
    if not Path(f"{path}.index").is_file():
        raise ConfigError(f"--checkpoint: no checkpoint at {which}; {choices}")
    return restore(path)


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
    from trainkit.training.fit import check_policy

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
        "batch": [list(x.shape), list(y.shape)],
        "parameters": int(built.model.count_params()),
        "steps_per_epoch": built.steps_per_epoch,
        "total_steps": built.total_steps,
        "strategy": distribute.describe(built.strategy),
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
