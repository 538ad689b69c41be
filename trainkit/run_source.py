"""A run directory read back as a model: the recipe made to run in one process,
and a run used as a fine-tuning source.

Layer 6, beside :mod:`trainkit.plan`, which calls it: the plan restores the
sources of a recipe's ``model.source`` / ``model.init.source`` that are run
directories here and hands their models down to :mod:`trainkit.models`, so the
model builders never read a run themselves. :func:`trainkit.plan.restore` is the
restore of a run for evaluation, ``Run.model``, export and predict.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainkit.distribution.strategies import in_one_process
from trainkit.errors import ConfigError, TrainkitError
from trainkit.recipe import ModelSection, Recipe
from trainkit.rundir import RunDir, load_run_recipe
from trainkit.rundir.checkpoints import load_weights

if TYPE_CHECKING:
    import keras


def run_recipe(run_dir: str | os.PathLike, *, recipe_file: str | os.PathLike | None = None) -> tuple[RunDir, Recipe]:
    """A run's directory and recipe, the recipe made to run in this one process:
    a ``multi_worker_mirrored`` or ``parameter_server`` run restores without a cluster."""
    directory = RunDir(run_dir)
    return directory, in_one_process(load_run_recipe(run_dir, recipe_file=recipe_file))


def is_run(source: Any) -> bool:
    return isinstance(source, str) and Path(source).is_dir() and (Path(source) / "config.yaml").is_file()


def source_models(section: ModelSection) -> dict[str, keras.Model]:
    """The models of the section's sources that are run directories, by source."""
    wanted = []
    if section.type == "pretrained":
        kwargs = section.kwargs
        wanted.append((kwargs.get("source"), kwargs.get("source_checkpoint", "final"), "model.source"))
    if section.init is not None:
        wanted.append((section.init.source, section.init.source_checkpoint, "model.init.source"))
    return {source: restore_source(Path(source), str(checkpoint), field=field) for source, checkpoint, field in wanted if is_run(source)}


def restore_source(path: Path, checkpoint: str, *, field: str) -> keras.Model:
    """A run's model as a fine-tuning source: its recipe's architecture (built for its
    data) with a checkpoint's weights. Nothing of the process (seeds, strategy) is
    changed: it is built inside the run that uses it. (Its ``model.keras`` is the
    inference model, preprocessing included, so it is not what is restored.)"""
    from trainkit.data.pipeline import prepare
    from trainkit.models.build import build_with_sources
    from trainkit.models.pretrained import STORED_SOURCE, data_section

    try:
        directory, recipe = run_recipe(path)
        info = prepare(data_section(recipe, path), seed=recipe.seed, run_dir=path).info

        def build() -> keras.Model:
            stored, runs = path / STORED_SOURCE, source_models(recipe.model)
            return build_with_sources(recipe.model, info, stored_source=stored, runs=runs)[0]

        model = build()
        if recipe.model.lora_rank:  # its checkpoint holds the low-rank updates: read them, then merge
            from trainkit.models.finetune import enable_lora, merge_lora

            adapted = build()
            enable_lora(adapted, recipe.model.lora_rank)
            load_weights(adapted, directory, checkpoint, field=f"{field}_checkpoint")
            merge_lora(adapted, model)
        else:
            load_weights(model, directory, checkpoint, field=f"{field}_checkpoint")
    except TrainkitError as err:
        raise ConfigError(f"{field}: the run {path} cannot be loaded: {err}" if field not in str(err) else str(err)) from None
    return model
