"""A resolved recipe made real: strategy, data, model, loss, metrics, optimizer.

:func:`check_components` resolves every name in a recipe and checks each
component's arguments before anything is built or loaded. :func:`build` then
creates the pieces in order (the strategy first: it must precede every other
TensorFlow op), and :func:`check_model_fits_data` runs one batch through the
model and the loss so that shape and label mistakes surface as one clear line
before training starts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainkit import compat, registry, runtime
from trainkit.components import check_arguments, instantiate
from trainkit.distribution.cluster import has_evaluator, is_multi_worker, is_parameter_server
from trainkit.distribution.strategies import data_section_for
from trainkit.errors import (
    ConfigError,
    TrainkitError,
    did_you_mean,
    first_line,
    graph_error_reasons,
)
from trainkit.recipe import Component, Recipe, RunIdentity, ValidationPolicy
from trainkit.run_source import run_recipe, source_models

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from trainkit.data.pipeline import PreparedData
    from trainkit.models.pretrained import SourceUse
    from trainkit.training.coordinated import CoordinatedData
    from trainkit.training.loop import Trainer
    from trainkit.training.stages import Stages

# "accuracy" means the accuracy that fits the loss, as in Keras's compile().
_ACCURACY_FOR_LOSS = {
    "SparseCategoricalCrossentropy": "SparseCategoricalAccuracy",
    "CategoricalCrossentropy": "CategoricalAccuracy",
    "CategoricalFocalCrossentropy": "CategoricalAccuracy",
    "BinaryCrossentropy": "BinaryAccuracy",
    "BinaryFocalCrossentropy": "BinaryAccuracy",
}


def check_components(recipe: Recipe) -> None:
    """Every registered name and argument in the recipe, checked without building; an
    error names the file or override that set the key at fault."""
    try:
        _check_components(recipe)
    except ConfigError as err:
        source = recipe.origin_of(err.key) if err.key else None
        if source is None or source in str(err):
            raise
        raise ConfigError(f"{err} (set in {source})", key=err.key) from None


def _check_components(recipe: Recipe) -> None:
    from trainkit.models.build import check_builder_arguments

    loss_cls = registry.losses.get(recipe.loss.type, field="loss.type")
    check_arguments(loss_cls, recipe.loss.kwargs, field="loss", label=loss_cls.__name__)
    for i, spec in enumerate(recipe.metrics):
        cls = _metric_class(spec, loss_cls, field=f"metrics.{i}")
        check_arguments(cls, spec.kwargs, field=f"metrics.{i}", label=cls.__name__)
    optimizer_cls = registry.optimizers.get(recipe.optimizer.type, field="optimizer.type")
    check_arguments(optimizer_cls, recipe.optimizer.kwargs, field="optimizer", label=optimizer_cls.__name__)
    for i, spec in enumerate(recipe.trainer.callbacks):
        cls = registry.callbacks.get(spec.type, field=f"trainer.callbacks.{i}.type")
        check_arguments(cls, spec.kwargs, field=f"trainer.callbacks.{i}", label=cls.__name__)
    check_callback_paths(recipe)
    check_builder_arguments(recipe.model)
    from trainkit.data import transforms

    for group in ("transforms", "augment", "eval_transforms"):
        for i, spec in enumerate(getattr(recipe.data, group)):
            transforms.check(spec, field_name=f"data.{group}.{i}")


def _metric_class(spec: Component, loss_cls: type, *, field: str) -> type:
    if spec.type in ("accuracy", "acc"):
        name = _ACCURACY_FOR_LOSS.get(loss_cls.__name__)
        if name is None:
            raise ConfigError(
                f"{field}: 'accuracy' cannot be matched to the loss {loss_cls.__name__}; "
                "name the metric (SparseCategoricalAccuracy, CategoricalAccuracy, BinaryAccuracy)"
            )
        return registry.metrics.get(name)
    return registry.metrics.get(spec.type, field=f"{field}.type")


def make_loss(recipe: Recipe, *, per_example: bool):
    """The recipe's loss; ``per_example=True`` returns unreduced losses (for the loop)."""
    cls = registry.losses.get(recipe.loss.type, field="loss.type")
    kwargs = dict(recipe.loss.kwargs)
    if per_example:
        kwargs["reduction"] = None
    return instantiate(cls, kwargs, field="loss", label=cls.__name__)


def make_metrics(recipe: Recipe) -> list:
    loss_cls = registry.losses.get(recipe.loss.type)
    out = []
    for i, spec in enumerate(recipe.metrics):
        cls = _metric_class(spec, loss_cls, field=f"metrics.{i}")
        kwargs = dict(spec.kwargs)
        if spec.type in ("accuracy", "acc"):
            kwargs.setdefault("name", "accuracy")
        out.append(instantiate(cls, kwargs, field=f"metrics.{i}", label=cls.__name__))
    return out


#: Callback arguments that name a file or folder (Keras's CSVLogger, ModelCheckpoint,
#: TensorBoard, BackupAndRestore, and the same names in registered callbacks).
CALLBACK_PATH_ARGUMENTS = ("filename", "filepath", "log_dir", "backup_dir")


def check_callback_paths(recipe: Recipe) -> None:
    """Refuse a relative callback path that would leave the run directory (``../x``)."""
    for i, spec in enumerate(recipe.trainer.callbacks):
        for key in CALLBACK_PATH_ARGUMENTS:
            value = spec.kwargs.get(key)
            if isinstance(value, str) and not os.path.isabs(value):
                inside = os.path.normpath(value)
                if inside == ".." or inside.startswith(".." + os.sep):
                    raise ConfigError(
                        f"trainer.callbacks.{i}.{key}: '{value}' leaves the run directory; relative paths "
                        "are inside it (e.g. 'log.csv'): give a path without '..', or an absolute path"
                    )


def make_callbacks(recipe: Recipe, *, run_dir: str | os.PathLike | None = None) -> list:
    """The recipe's Keras callbacks; relative paths in their arguments are placed
    inside ``run_dir`` (as ``data.cache`` is), so a run writes nothing outside it."""
    out = []
    for i, spec in enumerate(recipe.trainer.callbacks):
        cls = registry.callbacks.get(spec.type, field=f"trainer.callbacks.{i}.type")
        kwargs = dict(spec.kwargs)
        if run_dir is not None:
            for key in CALLBACK_PATH_ARGUMENTS:
                if isinstance(kwargs.get(key), str) and not os.path.isabs(kwargs[key]):
                    kwargs[key] = os.path.join(run_dir, kwargs[key])
            if cls.__name__ == "TensorBoard" and "log_dir" not in kwargs:
                kwargs["log_dir"] = os.path.join(run_dir, "tensorboard", "keras")  # beside trainkit's own
        out.append(instantiate(cls, kwargs, field=f"trainer.callbacks.{i}", label=cls.__name__))
    return out


def resolve_validation(recipe: Recipe) -> Recipe:
    """``trainer.validation: sidecar`` made concrete: it stays ``sidecar`` (no in-loop
    validation) where the cluster has an ``evaluator`` task to validate instead,
    and becomes the default in-loop validation where it has none."""
    if recipe.trainer.validation != "sidecar" or has_evaluator():
        return recipe
    trainer = recipe.trainer.model_copy(update={"validation": ValidationPolicy()})
    return recipe.model_copy(update={"trainer": trainer})


def resolve_monitor(recipe: Recipe, *, has_validation: bool) -> Recipe:
    """``recipe`` with ``trainer.checkpoint.monitor: auto`` made concrete.

    As Keras's ``ModelCheckpoint``, which monitors ``val_loss`` unless told
    otherwise: so ``--checkpoint best`` works for every recipe with a validation
    split. Without one there is nothing held out to choose by, so no best.
    """
    policy = recipe.trainer.checkpoint
    if policy.monitor != "auto":
        return recipe
    checkpoint = policy.model_copy(update={"monitor": "val_loss" if has_validation else None})
    trainer = recipe.trainer.model_copy(update={"checkpoint": checkpoint})
    return recipe.model_copy(update={"trainer": trainer})


def total_steps(recipe: Recipe, steps_per_epoch: int) -> int:
    budgets = []
    if recipe.trainer.stages:
        budgets.append(sum(stage.epochs for stage in recipe.trainer.stages) * steps_per_epoch)
    if recipe.trainer.epochs:
        budgets.append(recipe.trainer.epochs * steps_per_epoch)
    if recipe.trainer.steps:
        budgets.append(recipe.trainer.steps)
    return min(budgets)


@dataclass
class Built:
    """Everything a run needs, created under the recipe's strategy (:func:`build`)."""

    recipe: Recipe
    """The recipe as built: ``trainer.checkpoint.monitor: auto`` made concrete."""
    strategy: tf.distribute.Strategy
    data: PreparedData | CoordinatedData
    model: keras.Model
    trainer: Trainer
    steps_per_epoch: int
    total_steps: int
    identity: RunIdentity
    """The run's identity: the recipe as given, plus its pretrained sources' digests."""
    sources: list[SourceUse] = field(default_factory=list)
    """The pretrained sources the model came from."""
    init_report: dict | None = None
    """What ``model.init`` restored (``None``: no init, or a resumed run)."""
    stages: Stages | None = None
    """The run's stages, if it has ``trainer.stages``."""
    finetune: dict | None = None
    """Frozen layers, parameter counts and each trainable variable's learning-rate group."""


def build(
    recipe: Recipe,
    *,
    trainer_class: type | None = None,
    run_dir: str | Path | None = None,
    keep_source_copy: bool = False,
) -> Built:
    """Strategy, data, model and trainer for ``recipe``, checked to fit together.

    The set-up steps in their order, each returning a typed value: the strategy
    first (it must precede every other TensorFlow op), the data, the model with
    its fine-tuning, the optimizer, the trainer; the run's identity is computed
    beside the recipe, which is left as it was given.

    ``run_dir``: the run this continues or evaluates, whose copy of its pretrained
    source stands in for a source that is gone, and whose checkpoints make
    ``model.init`` unnecessary. ``keep_source_copy``: take a copy of the pretrained
    source for the run directory (``SourceUse.saved``).
    """
    from trainkit.training.stages import Stages

    check_components(recipe)
    strategy = runtime.configure(recipe.runtime, seed=recipe.seed)
    data = setup_data(recipe, strategy, run_dir=run_dir)
    steps_per_epoch = data.steps_per_epoch()
    steps = total_steps(recipe, steps_per_epoch)
    has_validation = data.has_split("validation")  # (before a parameter server wraps the data)
    stages = Stages.of(recipe, steps_per_epoch=steps_per_epoch)
    with strategy.scope():
        tuned = setup_model(recipe, data, stages, run_dir, keep_source_copy)
        optimizer = setup_optimizer(recipe, tuned, stages, total_steps=steps)
        # Compiled for Keras's sake (callbacks read model.optimizer; model.keras
        # then loads ready for model.evaluate); trainkit's loop does the training.
        tuned.model.compile(
            optimizer=optimizer.optimizer, loss=make_loss(recipe, per_example=False), metrics=make_metrics(recipe)
        )
        trainer, data = setup_trainer(recipe, strategy, tuned.model, optimizer.optimizer, data, trainer_class)
    # The identity of the recipe as given (monitor: auto, as config.yaml keeps it);
    # the built run's own copy has checkpoint.monitor: auto made concrete.
    identity = RunIdentity.of(recipe, {use.field: use.digest for use in tuned.sources})
    # (and trainer.validation: sidecar made concrete: off only where an evaluator task validates)
    concrete = resolve_monitor(resolve_validation(recipe), has_validation=has_validation)
    return Built(
        concrete, strategy, data, tuned.model, trainer,
        steps_per_epoch, steps, identity, tuned.sources, tuned.init_report, stages, optimizer.finetune,
    )


@dataclass(frozen=True)
class ModelSetup:
    """The model step's value: the model with its pretrained weights, LoRA and frozen layers."""

    model: keras.Model
    sources: list[SourceUse]
    init_report: dict | None
    variables: list
    """The variables the optimizer must know (every one a stage may unfreeze)."""


@dataclass(frozen=True)
class OptimizerSetup:
    """The optimizer step's value."""

    optimizer: keras.optimizers.Optimizer
    finetune: dict | None
    """Frozen layers, parameter counts and each trainable variable's learning-rate group."""


def setup_data(recipe: Recipe, strategy: tf.distribute.Strategy, *, run_dir: str | Path | None = None) -> PreparedData:
    """The data step: every split prepared, the batch size checked against the training split
    (``run_dir``: the run this continues, whose fitted vocabulary is reused)."""
    from trainkit.data.pipeline import prepare
    from trainkit.models.pretrained import data_section

    section = data_section(recipe, Path(run_dir) if run_dir is not None else None)  # (a KerasHub preset's preprocessor)
    data = prepare(data_section_for(section, strategy), seed=recipe.seed, run_dir=run_dir)
    if data.steps_per_epoch() == 0:
        raise ConfigError(
            f"data.batch_size: {recipe.data.batch_size} is larger than the training split "
            f"({data.info.sizes['train']} examples) with drop_remainder on"
        )
    return data


def setup_model(recipe: Recipe, data: PreparedData, stages: Stages | None, run_dir, keep_source_copy: bool) -> ModelSetup:
    """The model step (under the strategy's scope): built, fine-tuned, checked against one batch."""
    model, sources, init_report, variables = _fine_tuned_model(recipe, data.info, stages, run_dir, keep_source_copy)
    check_model_fits_data(recipe, model, data)
    return ModelSetup(model, sources, init_report, variables)


def setup_optimizer(recipe: Recipe, tuned: ModelSetup, stages: Stages | None, *, total_steps: int) -> OptimizerSetup:
    """The optimizer step: the schedule, the parameter groups' learning rates and loss scaling,
    built on every variable a stage may unfreeze."""
    from trainkit.optim import group_learning_rates, make_optimizer, scaled_learning_rate

    optimizer_section = recipe.optimizer.model_copy(update={"learning_rate": scaled_learning_rate(recipe)})
    factors = stages.learning_rate_factors(recipe.optimizer.learning_rate) if stages else ()
    optimizer = make_optimizer(optimizer_section, total_steps=total_steps, stage_factors=factors)
    finetune_summary = None
    model, variables = tuned.model, tuned.variables
    if recipe.optimizer.groups or recipe.model.freeze or stages or tuned.sources or recipe.model.lora_rank:
        from trainkit.models import finetune

        groups = recipe.optimizer.groups
        group_index = finetune.group_of_variables(model, variables, groups) if groups else [None] * len(variables)
        optimizer = group_learning_rates(
            optimizer, variables, [1.0 if i is None else groups[i].learning_rate_multiplier for i in group_index]
        )
        finetune_summary = finetune.summary(model, variables, groups, group_index)
    # Built on every variable a stage may unfreeze, so that the optimizer's
    # state (and so its checkpoints) has the same shape in every stage.
    optimizer.build(variables)
    if recipe.runtime.precision == "mixed_float16":
        # As Keras's compile() does: float16 gradients underflow without loss
        # scaling, and the loop's scale_loss() scales only with this wrapper.
        import keras

        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(variables)
    return OptimizerSetup(optimizer, finetune_summary)


def setup_trainer(
    recipe: Recipe, strategy: tf.distribute.Strategy, model: keras.Model, optimizer: keras.optimizers.Optimizer,
    data: PreparedData, trainer_class: type | None,
) -> tuple[Trainer, PreparedData | CoordinatedData]:
    """The trainer step: the compiled steps' owner (a parameter server's wraps the data too)."""
    from trainkit.training.loop import Trainer

    trainer_class = trainer_class or Trainer
    if is_parameter_server(strategy):
        from trainkit.training.coordinated import CoordinatedData, coordinated_trainer_class

        trainer_class = coordinated_trainer_class(trainer_class)
        data = CoordinatedData(data, strategy)
    trainer = trainer_class(
        strategy=strategy,
        model=model,
        loss=make_loss(recipe, per_example=True),
        optimizer=optimizer,
        metrics=make_metrics(recipe),
        eval_metrics=make_metrics(recipe),
        jit_compile=recipe.runtime.jit_compile,
        measure_input=recipe.trainer.measure_input and not recipe.runtime.deterministic,
    )
    return trainer, data


def _fine_tuned_model(recipe: Recipe, info, stages, run_dir, keep_source_copy: bool) -> tuple[Any, list, dict | None, list]:
    """The model with its pretrained weights, LoRA and frozen layers; its sources,
    the ``model.init`` report, and the variables the optimizer must know."""
    from trainkit.models import finetune
    from trainkit.models.build import build_with_sources
    from trainkit.models.pretrained import STORED_SOURCE, is_available, keras_bytes

    run_path = Path(run_dir) if run_dir is not None else None
    _check_not_itself(recipe, run_path)
    runs = source_models(recipe.model)  # sources that are runs, restored here and handed down
    model, sources = build_with_sources(
        recipe.model, info, stored_source=run_path / STORED_SOURCE if run_path else None, runs=runs
    )
    stored = run_path / STORED_SOURCE if run_path else None
    for use in sources:
        if keep_source_copy and not (stored and stored.is_file()):
            use.saved = keras_bytes(use.model)  # before LoRA and freezing change it
    init_report = None
    spec = recipe.model.init
    if spec is not None:
        from trainkit.rundir.checkpoints import candidates

        continuing = run_path is not None and bool(candidates(run_path / "checkpoints"))
        # A run that continues restores its checkpoint: the init source is only
        # read (when it is still there) for its digest, never needed.
        if not (continuing and not is_available(spec.source)):
            from trainkit.models.warm_start import restore_matching

            init_report, use = restore_matching(model, spec, runs=runs)
            sources.append(use)
            if continuing:
                init_report = None
    every_variable = list(model.trainable_variables)
    if recipe.model.lora_rank:
        finetune.enable_lora(model, recipe.model.lora_rank)
    if recipe.model.freeze:
        finetune.freeze(model, recipe.model.freeze)
        if not model.trainable_variables:  # ('' and '.*' match every layer, the new head too)
            raise ConfigError(
                f"model.freeze: {recipe.model.freeze} freezes every layer, the head too, so the first stage would "
                "train nothing; name the layers to keep as they are (for example '^conv_')"
            )
    unfreezes = bool(stages and any(stage.unfreeze for stage in stages.stages))
    if stages:
        stages.check(model)
    return model, sources, init_report, every_variable if unfreezes else list(model.trainable_variables)


def _check_not_itself(recipe: Recipe, run_path: Path | None) -> None:
    from trainkit.models.pretrained import check_not_itself

    if recipe.model.type == "pretrained":
        check_not_itself(str(recipe.model.kwargs.get("source", "")), run_path, field="model.source")
    if recipe.model.init is not None:
        check_not_itself(recipe.model.init.source, run_path, field="model.init.source")


def check_model_fits_data(recipe: Recipe, model, data) -> None:
    """One batch through the model and the loss; mistakes become one ConfigError line."""
    import tensorflow as tf

    info = data.info
    try:
        x, y = data.sample_batch(4)
    except tf.errors.InvalidArgumentError as err:
        raise (data.explain_read_error(err) or err) from None
    try:
        y_pred = model(x, training=False)
    except TrainkitError:
        raise
    except Exception as err:  # shape mistakes mostly; a custom layer's call is user code too
        expected = [tuple(t.shape[1:]) for t in model.inputs]
        given = {k: tuple(v.shape[1:]) for k, v in x.items()} if isinstance(x, dict) else tuple(x.shape[1:])
        raise ConfigError(
            f"model: the model expects inputs of shape {expected[0] if len(expected) == 1 else expected} "
            f"but the data gives {given} (check data.feature_shape, data.transforms and the model's first layers): "
            f"{first_line(err)}"
        ) from None
    if isinstance(y_pred, list | tuple | dict):
        return  # several outputs: the loss check below is for single-output models
    outputs = int(y_pred.shape[-1]) if len(y_pred.shape) > 1 else 1
    loss_name = type(make_loss(recipe, per_example=False)).__name__
    class_losses = ("SparseCategorical", "Categorical", "Binary")
    if info.task == "regression" and loss_name.startswith(class_losses):
        raise ConfigError(
            f"loss: {loss_name} needs class labels, but the data's targets are real numbers "
            "(a regression: use mse, mae or huber)"
        )
    if info.task == "classification":
        top = int(info.num_classes) - 1
        if loss_name.startswith("SparseCategorical") and top >= outputs:
            raise ConfigError(
                f"model: labels go up to {top} ({info.num_classes} classes) but the model outputs "
                f"{outputs} value(s) per example; the last layer needs {info.num_classes} units"
            )
        if loss_name.startswith("SparseCategorical") and outputs > top + 1:
            kept = " (a pretrained source with another number of classes: model.head: replace)" if _keeps_a_head(recipe) else ""
            raise ConfigError(
                f"model: the model outputs {outputs} values per example, but the data has {info.num_classes} classes: "
                f"the last layer needs {info.num_classes} units{kept}"
            )
        if loss_name.startswith("Binary") and top > 1:
            raise ConfigError(
                f"loss: {loss_name} needs labels 0 or 1, but the data has {info.num_classes} classes "
                "(use SparseCategoricalCrossentropy with one output per class)"
            )
    try:
        make_loss(recipe, per_example=False)(y, y_pred)
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as err:
        raise ConfigError(
            f"loss: {loss_name} cannot compare labels of shape {tuple(y.shape[1:]) or 'scalar'} with model "
            f"outputs of shape {tuple(y_pred.shape[1:])}: {first_line(err)}"
        ) from None


def metric_names(built: Built) -> list[str]:
    """The names a run reports (``loss``, ``accuracy``, ``val_loss``, ...), for monitors."""
    names = list(built.trainer.result())
    if built.data.has_split("validation"):  # in memory or streamed
        names += [f"val_{name}" for name in names]
    return names


#: Callback arguments that name a file or folder the callback writes.
_CALLBACK_PATHS = ("filename", "filepath", "log_dir", "backup_dir")


def check_callbacks(built: Built, callbacks: list, *, run_dir: str | os.PathLike | None = None) -> None:
    """What Keras callbacks only find out mid-training: a monitor the run never
    reports, a file in a folder that cannot exist. Raise before anything is written.

    Relative paths are checked where :func:`make_callbacks` puts them, inside
    ``run_dir`` (which trainkit itself makes) when one is given."""
    names = metric_names(built)
    for i, callback in enumerate(callbacks):
        field = f"trainer.callbacks.{i}"
        label = type(callback).__name__
        monitor = getattr(callback, "monitor", None)
        if isinstance(monitor, str) and monitor not in names:
            no_val = "" if built.data.has_split("validation") else " (there is no validation split)"
            raise ConfigError(
                f"{field}.monitor: {label} watches '{monitor}', which this run does not report{no_val}; "
                f"{did_you_mean(monitor, names)}"
            )
        for key in _CALLBACK_PATHS:
            value = built.recipe.trainer.callbacks[i].kwargs.get(key) if i < len(built.recipe.trainer.callbacks) else None
            if isinstance(value, str) and value:
                path = Path(value)
                if run_dir is not None and not path.is_absolute():
                    path = Path(run_dir) / path
                    if path.parent == Path(run_dir):
                        continue  # straight inside the run directory, which trainkit makes
                # CSVLogger opens its file without making folders; the others make them.
                _check_writable_place(path, field=f"{field}.{key}", label=label, makes_folders=key != "filename")


def _check_writable_place(path: Path, *, field: str, label: str, makes_folders: bool) -> None:
    """``path`` can be created: its nearest existing ancestor is a writable folder
    (its parent itself, for a callback that makes no folders)."""
    import errno
    import os

    ancestor = path.absolute().parent
    if not makes_folders and not ancestor.is_dir():
        raise ConfigError(f"{field}: {label} would write {path}, but the folder {ancestor} does not exist")
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{field}: {label} would write {path}, but {ancestor} is a file, not a folder")
    for part in path.parts:
        if len(os.fsencode(part)) > 255:
            raise ConfigError(f"{field}: {label} would write {path}, whose name '{part[:20]}...' is longer than 255 bytes")
    if not os.access(ancestor, os.W_OK):
        raise ConfigError(f"{field}: {label} would write {path}, but {ancestor} is not writable ({os.strerror(errno.EACCES)})")


def rehearse(built: Built) -> None:
    """One real training step and one evaluation step, then every variable as it was.

    Arguments are checked by name before anything is built, but only running
    the optimizer, the loss and the metrics shows that their values work together
    (``beta_1: abc``, ``weight_decay: [1]``, a ``precision`` metric on sparse
    multiclass labels). This runs before the run directory is touched, so such a
    mistake is one line with nothing written. The model's, optimizer's and
    metrics' variables (and the random generators' state) are put back, so the
    run that follows is the run it would have been without the rehearsal.

    Clusters are skipped: their steps are collective across workers, each of which
    checks the same recipe by itself.
    """
    import tensorflow as tf

    from trainkit.training.checkpoint import seed_generator_states

    strategy, trainer = built.strategy, built.trainer
    if is_parameter_server(strategy) or is_multi_worker(strategy):
        return
    metric_variables = [v for m in (*trainer.train_metrics, *trainer.eval_metrics) for v in m.variables]
    variables = [*built.model.variables, *trainer.optimizer.variables, *metric_variables, *seed_generator_states(built.model)]
    unique = list({id(v): v for v in variables}.values())
    saved = [v.numpy() for v in unique]
    data = built.data._uncached()
    try:
        trainer.trial(
            iter(strategy.experimental_distribute_dataset(data.training_stream().take(1))),
            data.distributed(strategy, "train", take=1),
        )
    except (ValueError, TypeError, AttributeError, tf.errors.OpError) as err:
        unreadable = built.data.explain_read_error(err)
        if unreadable is not None:
            raise unreadable from None
        section, reason = _blame(err)
        raise ConfigError(f"{section}: one training step failed: {reason[:300]}") from None
    finally:
        for variable, value in zip(unique, saved, strict=True):
            variable.assign(value)
        trainer.reset_train_metrics()


def _keeps_a_head(recipe: Recipe) -> bool:
    """Whether the model is a pretrained source with its own head (``head: keep``)."""
    return recipe.model.type == "pretrained" and recipe.model.kwargs.get("head", "keep") == "keep"


def _blame(err: BaseException) -> tuple[str, str]:
    """``(recipe section whose Keras code raised err, the reason in one line)``.

    A graph-mode error carries the Python frames where its op was defined in its
    message, and the actual reason after them.
    """
    import traceback

    message = (getattr(err, "message", None) or str(err)).strip()
    files = [frame.filename for frame in traceback.extract_tb(err.__traceback__)]
    files += re.findall(r'File "([^"]+)"', message)
    reasons = graph_error_reasons(err)
    reason = reasons[-1] if reasons else type(err).__name__
    for path in files:  # outermost first: a metric's update may call into keras's losses
        section = compat.keras_section_of(path)
        if section is not None:
            return section, reason
    return "recipe", reason


def restore_plan(
    run_dir: str | os.PathLike,
    checkpoint: str | int | None = "last",
    *,
    recipe_file: str | os.PathLike | None = None,
    field: str = "--checkpoint",
) -> Built:
    """A trained run built again in this one process, with the weights of ``checkpoint``.

    The one restore of a run (evaluation, ``Run.model``, export, predict): a
    ``multi_worker_mirrored`` or ``parameter_server`` run restores in a plain
    process. ``checkpoint``: ``last``, ``best``, ``final``, a step or a checkpoint
    path; None leaves the weights as built (a sidecar evaluator loads each
    checkpoint itself). ``recipe_file``: the Python recipe the run came from,
    imported to register its components (a run directory never imports code by itself).
    """
    from trainkit.rundir import with_recipe_file_hint
    from trainkit.rundir.checkpoints import load_weights

    directory, recipe = run_recipe(run_dir, recipe_file=recipe_file)
    try:
        built = build(recipe, run_dir=directory.path)  # (its copy of a pretrained source, if the source is gone)
    except ConfigError as err:
        if recipe_file is not None:
            raise
        raise with_recipe_file_hint(directory, err) from None
    if checkpoint is not None:
        load_weights(built.model, directory, str(checkpoint), field=field)
    return built


def restore(
    run_dir: str | os.PathLike, checkpoint: str | int = "last", *, recipe_file: str | os.PathLike | None = None
):
    """The trained ``keras.Model`` of a run with the weights of ``checkpoint``
    (:func:`restore_plan`), the process's seeds and policies left as they were."""
    runtime.quiet_tensorflow()
    with runtime.preserved_process_state():  # building applies the recipe's seeds
        return restore_plan(run_dir, checkpoint, recipe_file=recipe_file).model
