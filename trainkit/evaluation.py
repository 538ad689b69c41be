"""Evaluation: a trained run's metrics on its splits.

:func:`evaluate` measures one kept checkpoint of a run on one split (``trainkit
eval``, :func:`trainkit.evaluate`, ``Run.evaluate``); :func:`final_evaluation`
measures the model at the end of training on ``trainer.evaluate``'s splits and
writes ``eval.json``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from trainkit.files import write_json_atomic
from trainkit.runtime import leaves_process_as_it_was

if TYPE_CHECKING:
    from trainkit.plan import Built
    from trainkit.rundir import RunDir
    from trainkit.training.controller import Controller
    from trainkit.training.sinks import Sink


@leaves_process_as_it_was
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
    directory never imports code by itself). A cluster's run is evaluated here,
    in one process.
    """
    from trainkit.plan import restore_plan

    built = restore_plan(run_dir, checkpoint, recipe_file=recipe_file)
    built.data._check_split(split)
    return built.trainer.evaluate_split(built.data, split)


def final_evaluation(controller: Controller, built: Built, directory: RunDir, sink: Sink) -> dict[str, dict[str, float]]:
    """The trained model on each of ``trainer.evaluate``'s splits, shown and written to ``eval.json``."""
    results = {}
    for split in built.recipe.trainer.evaluate:
        if built.data.has_split(split):
            results[split] = controller.evaluate(split, hooks=False)
            sink.result(split, results[split])
    write_json_atomic(directory.eval_json, results)
    return results
