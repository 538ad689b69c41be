"""Exported models that take features as the data source gives them.

The end of training calls :func:`export_trained` (the formats of
``export.formats`` into the run directory); ``trainkit export`` and
:func:`trainkit.export` export any kept checkpoint of a run (:func:`export`).
Each export is the inference model of :mod:`trainkit.serving.model` written by
:mod:`trainkit.serving.formats`, beside ``export.json``: the metadata (task, class
names, input, outputs) and, per format, its file, size, the seconds it took, and
how far its outputs are from ``model.keras`` on up to :data:`CHECK_EXAMPLES`
examples of the test split (LiteRT: the accuracy change too).

``model.keras`` must load with plain ``keras.models.load_model`` -- no trainkit
import, no custom objects. The trained model may hold trainkit's learning-rate
schedule in its optimizer, so the export is compiled with an optimizer of the
same kind whose learning rate is the schedule's current value.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainkit.errors import (
    ConfigError,
    ExportError,
    MissingExtra,
    TrainkitError,
    as_list,
    first_line,
)
from trainkit.recipe import NO_RECURRENT, NO_STRING_INPUTS
from trainkit.rundir import RunDir, refuse_run_files
from trainkit.runtime import leaves_process_as_it_was
from trainkit.serving import spec as inference_spec

if TYPE_CHECKING:
    import keras

    from trainkit.plan import Built

FORMATS = ("keras", "saved_model", "tflite", "onnx")
# The modules a format's writer imports beyond TensorFlow (the ``export`` extra).
_FORMAT_MODULES = {"onnx": ("tf2onnx", "onnx")}
METADATA_FILE = "export.json"
CHECK_EXAMPLES = 512


def portable_copy(built: Built) -> keras.Model:
    """A copy of the built run's model compiled like it, with a schedule-free optimizer of the same kind."""
    import keras

    from trainkit.serving.model import copy_weights

    copy = keras.models.clone_model(built.model)
    copy_weights(built.model, copy)
    _compile_like(copy, built)
    return copy


def _compile_like(target: keras.Model, built: Built) -> None:
    """``target`` compiled with the run's loss and metrics and a plain copy of its
    optimizer (the base group's, without loss scaling), at its current learning rate."""
    import keras

    from trainkit.optim import base_optimizer
    from trainkit.plan import make_loss, make_metrics

    optimizer = base_optimizer(built.trainer.optimizer)
    config = optimizer.get_config()
    config["learning_rate"] = float(optimizer.learning_rate.numpy() if hasattr(optimizer.learning_rate, "numpy") else optimizer.learning_rate)
    loss, metrics = make_loss(built.recipe, per_example=False), make_metrics(built.recipe)
    target.compile(optimizer=type(optimizer).from_config(config), loss=loss, metrics=metrics)
    if isinstance(target.optimizer, keras.optimizers.LossScaleOptimizer):
        # compile() wrapped it (mixed_float16 policy); unwrapped, the file loads
        # without a variable-count warning where it is usually loaded: in float32.
        target.optimizer = target.optimizer.inner_optimizer
    # Built (fresh slots), so loading the file does not warn about missing optimizer variables.
    target.optimizer.build(target.trainable_variables)


def record_inputs(built: Built, directory: RunDir) -> None:
    """Write the run's inference description (``inference.json``) into its directory."""
    from trainkit.plan import make_loss

    spec = inference_spec.describe(
        built.recipe, built.data, built.model, make_loss(built.recipe, per_example=False), identity=built.identity.hash
    )
    inference_spec.write(directory.path, spec)


def export_trained(built: Built, directory: RunDir) -> dict[str, Any]:
    """The end of training: ``export.formats`` of the trained model into the run directory."""
    spec = inference_spec.read(directory.path)
    if spec is None:
        record_inputs(built, directory)
        spec = inference_spec.read(directory.path)
    if spec.get("unsupported"):
        print(f"warning: {spec['unsupported']}: only the trained model is exported (to model.keras)", file=sys.stderr)
        if "keras" in built.recipe.export.formats:
            from trainkit.serving.formats import write_keras

            write_keras(portable_copy(built), directory.model_file)
        return {}
    require_writers(built.recipe.export.formats)
    return _write(built, spec, list(built.recipe.export.formats), directory.path, quantize=built.recipe.export.quantize)


def require_writers(formats: list[str]) -> None:
    """Refuse, in one line naming the extra, a format whose writer is not installed."""
    for name in formats:
        missing = [module for module in _FORMAT_MODULES.get(name, ()) if not _importable(module)]
        if missing:
            raise MissingExtra(
                f"export to {name} needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                "not installed; install the extra: pip install 'trainkit[export]'"
            )


def _importable(module: str) -> bool:
    import importlib.util

    if module in sys.modules:  # (None there: made unimportable, as a test does)
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None


@leaves_process_as_it_was  # restoring applies the run's runtime section (precision, determinism, seeds)
def export(
    run_dir: str | os.PathLike,
    *,
    formats: list[str] | None = None,
    checkpoint: str = "final",
    out_dir: str | os.PathLike | None = None,
    quantize: str | None = None,
    recipe_file: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Export a kept checkpoint of a run; returns the metadata written to ``export.json``.

    ``formats`` defaults to all four; ``checkpoint`` is ``final`` (default), ``last``,
    ``best``, a step number or a checkpoint path; ``out_dir`` defaults to
    ``RUN_DIR/export-CHECKPOINT``; ``quantize`` (``none``/``dynamic_range``, LiteRT)
    to the recipe's ``export.quantize``.
    """
    formats_given = formats is not None
    formats = as_list(formats, "formats") or list(FORMATS)
    for name in formats:
        if name not in FORMATS:
            from trainkit.errors import did_you_mean

            raise ConfigError(f"--format: unknown format '{name}'; {did_you_mean(name, FORMATS)}")
    if quantize is not None and quantize not in ("none", "dynamic_range"):
        raise ConfigError(f"--quantize: '{quantize}' is not a quantization; use none or dynamic_range")
    if quantize not in (None, "none") and "tflite" not in formats:
        raise ConfigError(f"--quantize {quantize}: quantizes the LiteRT model only, and the formats are {', '.join(formats)}; add --format tflite")
    if out_dir is not None:
        refuse_run_files(out_dir, "-o", folder=True)
    recorded = inference_spec.read(Path(run_dir))
    if recorded is not None and recorded["input"]["dtype"] == "string":
        formats = _formats_that_take(formats, NO_STRING_INPUTS, "this run's raw text", explicit=formats_given)
    require_writers(formats)
    if recorded is not None:
        inference_spec.check_exportable(recorded)  # before building anything
    built, spec, directory = restore_for_export(run_dir, checkpoint, recipe_file=recipe_file)
    inference_spec.check_exportable(spec)
    if built.recipe.model.type == "rnn":
        formats = _formats_that_take(formats, NO_RECURRENT, "this run's recurrent model", explicit=formats_given)
    label = Path(checkpoint).name if os.sep in checkpoint else checkpoint
    out = Path(out_dir) if out_dir is not None else directory.path / f"export-{label}"
    out.mkdir(parents=True, exist_ok=True)
    return _write(built, spec, formats, out, quantize=quantize or built.recipe.export.quantize)


def _remove_earlier_formats(out: Path, *, keep: list[str]) -> None:
    """Remove what an earlier export into ``out`` wrote in formats this one does not
    write: the folder must hold what its new ``export.json`` lists, never an older
    checkpoint's model beside it. Only the files trainkit names for a format go."""
    import json
    import shutil

    from trainkit.files import read_regular
    from trainkit.serving.formats import FILES

    try:
        earlier = json.loads(read_regular(out / METADATA_FILE, 1 << 20))["formats"]
    except (OSError, ValueError, KeyError, TypeError):  # none, or not one trainkit wrote: nothing is removed
        return
    for name in earlier if isinstance(earlier, dict) else ():
        path = out / FILES.get(name, "")
        if name in keep or name not in FILES or not (path.exists() or path.is_symlink()):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _formats_that_take(formats: list[str], refusing: dict[str, str], what: str, *, explicit: bool) -> list[str]:
    """The formats that can take ``what`` (``refusing``: those that cannot, with why): by
    default those that can; one asked for by name that cannot is refused in one line."""
    refused = [name for name in formats if name in refusing]
    if refused and explicit:
        raise ConfigError(f"--format: {refused[0]} cannot take {what}: {refusing[refused[0]]}; export keras or saved_model")
    return [name for name in formats if name not in refusing]


def restore_for_export(
    run_dir: str | os.PathLike, checkpoint: str, *, recipe_file: str | os.PathLike | None = None
) -> tuple[Built, dict[str, Any], RunDir]:
    """A run restored (:func:`trainkit.plan.restore_plan`: in one process, the weights of
    ``checkpoint``) and its inference description (recorded when it trained, else
    described now).

    ``recipe_file``: the Python recipe the run came from, for its components (a
    run directory never imports code by itself: docs/security.md)."""
    from trainkit.plan import make_loss, restore_plan
    from trainkit.startup import quiet_tensorflow

    quiet_tensorflow()
    built = restore_plan(run_dir, checkpoint, recipe_file=recipe_file)
    directory = RunDir(run_dir)
    spec = inference_spec.read(directory.path)
    if spec is None:  # a run from before inference.json: the data gives the same numbers again
        spec = inference_spec.describe(
        built.recipe, built.data, built.model, make_loss(built.recipe, per_example=False), identity=built.identity.hash
    )
    return built, spec, directory


def build_inference_model(built: Built, spec: dict[str, Any]) -> keras.Model:
    """The inference model of a built run, compiled like the trained model where
    its outputs are the trained model's (so ``model.evaluate`` works on raw features)."""
    from trainkit.serving.model import inference_model

    model = inference_model(built.model, spec)
    if spec["head"] in ("identity", "probabilities"):
        _compile_like(model, built)
    return model


def _write(built: Built, spec: dict[str, Any], formats: list[str], out: Path, *, quantize: str) -> dict[str, Any]:
    import tempfile

    from trainkit.files import write_json_atomic
    from trainkit.serving import formats as writers

    model = build_inference_model(built, spec)
    metadata = {k: spec[k] for k in ("recipe", "recipe_hash", "task", "num_classes", "class_names", "input", "outputs")}
    written: dict[str, Any] = {}
    _remove_earlier_formats(out, keep=formats)

    def timed(name: str, fn) -> None:
        start = time.perf_counter()
        try:
            fn()
        except (TrainkitError, OSError):  # (a full disk keeps its own exit and message)
            raise
        except Exception as err:  # a converter's failure: one line, not its stack
            raise ExportError(
                f"export.formats: {name} could not be written ({type(err).__name__}: {first_line(err)[:240]}); "
                "export keras and/or saved_model"
            ) from err
        path = out / writers.FILES[name]
        written[name] = {"file": path.name, "bytes": writers.size_of(path), "seconds": round(time.perf_counter() - start, 3)}

    if "keras" in formats:
        timed("keras", lambda: writers.write_keras(model, out / writers.FILES["keras"]))
    if "saved_model" in formats:
        timed("saved_model", lambda: writers.write_saved_model(model, spec, out / writers.FILES["saved_model"], metadata))
    if "tflite" in formats:
        def tflite() -> None:
            saved = out / writers.FILES["saved_model"]
            if "saved_model" in formats:
                writers.write_tflite(saved, out / writers.FILES["tflite"], quantize=quantize)
                return
            with tempfile.TemporaryDirectory(prefix=".tflite-", dir=out) as scratch:
                writers.write_saved_model(model, spec, Path(scratch) / "saved_model", metadata)
                writers.write_tflite(Path(scratch) / "saved_model", out / writers.FILES["tflite"], quantize=quantize)

        timed("tflite", tflite)
        written["tflite"]["quantize"] = quantize
    if "onnx" in formats:
        timed("onnx", lambda: writers.write_onnx(model, spec, out / writers.FILES["onnx"], metadata))
    from trainkit.serving.check import compare

    compare(built, model, spec, out, written, limit=CHECK_EXAMPLES)
    write_json_atomic(out / METADATA_FILE, {**metadata, "formats": written})
    return {**metadata, "formats": written, "directory": str(out)}
