"""trainkit: declarative, Keras-style training on real TensorFlow.

Importing trainkit does not import TensorFlow; it is loaded when something is
built. The public API::

    trainkit.load_recipe(name_or_path, configs=[...], overrides={...}) -> Recipe
    trainkit.train(recipe, run_dir=...) -> Run
    trainkit.evaluate(run_dir, split="test", checkpoint="last") -> dict
    trainkit.dataset(recipe, split) -> tf.data.Dataset
    trainkit.validate(recipe) -> dict
    trainkit.inspect_data(recipe, split="train", n=5) -> dict
    trainkit.load_run(run_dir) -> Run;  run.history, run.metrics, run.model, run.hash, run.plot()
    trainkit.restore(run_dir, checkpoint="last") -> keras.Model: a trained run's model, in one process
    trainkit.compare([run_dir, ...]) -> a table of final metrics and differing recipe fields
    trainkit.Interrupted (a KeyboardInterrupt), trainkit.Terminated: training stopped by
        SIGINT/SIGTERM with a checkpoint saved (``.checkpoint``); train again to resume
    trainkit.request_stop(): the same orderly stop for a training in a background thread
    trainkit.export(run_dir, formats=[...], checkpoint="final", out_dir=...) -> dict
    trainkit.predict(run_dir, inputs, checkpoint=None) -> Predictions
    trainkit.register_model / register_dataset / register_transform / register_layer / register_loss / register_metric / register_callback
"""

from trainkit.errors import ConfigError, RunDirError, TrainkitError
from trainkit.loader import load_recipe
from trainkit.recipe import Recipe
from trainkit.registry import (
    register_callback,
    register_dataset,
    register_layer,
    register_loss,
    register_metric,
    register_model,
    register_transform,
)
from trainkit.signals import request_stop
from trainkit.training.stops import Diverged, Interrupted, Terminated, TrainingStopped
from trainkit.version import __version__ as __version__

__all__ = [
    "ConfigError",
    "Diverged",
    "Interrupted",
    "Recipe",
    "RunDirError",
    "Terminated",
    "TrainingStopped",
    "TrainkitError",
    "compare",
    "dataset",
    "evaluate",
    "export",
    "inspect_data",
    "load_recipe",
    "load_run",
    "plot_runs",
    "predict",
    "register_callback",
    "register_dataset",
    "register_layer",
    "register_loss",
    "register_metric",
    "register_model",
    "register_transform",
    "request_stop",
    "restore",
    "train",
    "validate",
]


def __getattr__(name: str):
    # The functions that build things live in trainkit.api; importing it is
    # still cheap (TensorFlow loads inside the calls).
    if name in ("train", "evaluate", "dataset", "validate", "inspect_data"):
        from trainkit import api

        return getattr(api, name)
    if name in ("Run", "load_run", "compare", "plot_runs"):
        from trainkit import runs

        return getattr(runs, name)
    if name == "restore":
        from trainkit.plan import restore

        return restore
    if name == "predict":
        from trainkit.serving.predict import predict

        return predict
    if name == "export":
        from trainkit.serving.export import export

        return export
    raise AttributeError(f"module 'trainkit' has no attribute {name!r}")
