"""``trainkit``: a thin command line over :mod:`trainkit.api`.

TensorFlow is imported only by commands that build something, so ``--help``,
``show`` and ``ls`` answer at once. Mistakes in recipes, configs and overrides
print one line (``error: ...``) and exit with code 2; nothing is written.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from trainkit.errors import TrainkitError

_STARTED = time.time()

EXAMPLES = """\
examples:
  trainkit ls
  trainkit show digits_cnn trainer.epochs=3
  trainkit validate digits_cnn -c digits_cnn_smoke
  trainkit train digits_cnn                         # into runs/digits_cnn (resumes if it exists)
  trainkit train digits_mlp -c digits_mlp_smoke optimizer.learning_rate=0.01 --run-dir runs/try
  trainkit eval runs/digits_cnn --split test --checkpoint best
  trainkit export runs/digits_cnn --format saved_model --format onnx -o served/
  trainkit predict runs/digits_cnn new_digits.npy -o predictions.csv
  trainkit data mnist_cnn --split test -n 3         # a split as the model sees it, and its speed
  trainkit launch -n 2 digits_mlp                   # 2 local workers, multi_worker_mirrored
  trainkit plot runs/digits_cnn runs/try -o curves.png  # learning curves of runs

exit codes: 0 done, 2 bad input or unusable run directory, 3 training diverged (NaN/Inf),
  4 lost another task of the cluster, 5 the disk filled up, 130 stopped by Ctrl-C (SIGINT), 143 stopped by SIGTERM;
  train again to resume.
"""


def _recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", metavar="RECIPE", help="a name in recipes/ or configs/, a .py recipe, or a YAML config")
    parser.add_argument("-c", "--config", action="append", default=[], metavar="CONFIG", help="a YAML config layered on the recipe (repeatable)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override a field by dotted path, e.g. trainer.epochs=3")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainkit",
        description="Train, evaluate and export tf.keras models from declarative recipes.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _training_commands(commands)
    _run_commands(commands)
    _recipe_commands(commands)
    p = commands.add_parser("plot", help="draw the learning curves of one or more runs into an image")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("-o", "--output", default="curves.png", help="the image to write (default: curves.png; .png, .svg, .pdf)")
    commands.add_parser("ls", help="list recipes and configs with their descriptions")
    return parser


def _training_commands(commands) -> None:
    """train, launch."""
    p = commands.add_parser("train", help="train a recipe into a run directory, then evaluate and export it")
    _recipe_arguments(p)
    p.add_argument("--run-dir", metavar="DIR", help="where the run goes (default: runs/<recipe name>, or runs/<config name> with -c)")
    p.add_argument("--restart", action="store_true", help="start over; an existing run is moved aside, not deleted")

    p = commands.add_parser(
        "launch", help="train on a local cluster of N worker processes (TF_CONFIG on loopback ports)"
    )
    p.add_argument("-n", "--workers", type=int, required=True, metavar="N", help="number of worker processes")
    _recipe_arguments(p)
    p.add_argument("--run-dir", metavar="DIR", help="where the run goes (default: runs/<recipe name>, or runs/<config name> with -c)")
    p.add_argument("--restart", action="store_true", help="start over; an existing run is moved aside, not deleted")
    p.add_argument("--ps", type=int, default=1, metavar="P", help="parameter servers, for parameter_server recipes (default: 1)")


def _run_commands(commands) -> None:
    """Commands on a run directory: eval, export, predict."""
    p = commands.add_parser("eval", help="evaluate a run's checkpoint on a split")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--split", default="test", help="train, validation or test (default: test)")
    p.add_argument("--checkpoint", default="last", help="last (default), best, final, a step number (ckpt-N) or a checkpoint path")
    p.add_argument(
        "--recipe", metavar="RECIPE",
        help="the Python recipe (file or name) the run was trained from, to register its components "
        "(a run directory never runs code by itself)",
    )

    p = commands.add_parser("export", help="export a run's checkpoint: model.keras, SavedModel, LiteRT, ONNX")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument(
        "--format", action="append", dest="formats", metavar="F",
        help="keras, saved_model, tflite or onnx (repeatable; default: all four)",
    )
    p.add_argument("--checkpoint", default="final", help="final (default), last, best, a step number or a checkpoint path")
    p.add_argument("-o", "--output", metavar="DIR", help="where the files go (default: RUN_DIR/export-CHECKPOINT)")
    p.add_argument("--quantize", choices=["none", "dynamic_range"], help="LiteRT weights (default: the recipe's export.quantize)")
    p.add_argument("--recipe", metavar="RECIPE", help="the Python recipe (file or name) the run was trained from, to register its components")

    p = commands.add_parser("predict", help="predict raw inputs (CSV, .npy, JSON lines, a folder of images) with a run's model")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("input", metavar="INPUT", help="a CSV with the training columns, a .npy array, a .jsonl file or a folder of images")
    p.add_argument("-o", "--output", metavar="OUT", help="write the CSV here (default: print it)")
    p.add_argument("--checkpoint", help="last, best, final or a step number (default: the run's model.keras)")


def _recipe_commands(commands) -> None:
    """Commands on a recipe: show, validate, data."""
    p = commands.add_parser("show", help="print the resolved recipe as YAML")
    _recipe_arguments(p)

    p = commands.add_parser("validate", help="check a recipe: build it, run one training and one evaluation step, write nothing")
    _recipe_arguments(p)

    p = commands.add_parser("data", help="show a split (spec, size, labels, first examples) and time its pipeline")
    _recipe_arguments(p)
    p.add_argument("--split", default="train", help="train (default), validation or test")
    p.add_argument("-n", type=int, default=3, metavar="N", help="how many examples to show (default 3)")
    p.add_argument("--seconds", type=float, default=5.0, help="time budget of the throughput pass (default 5)")


def _load(args: argparse.Namespace):
    from trainkit.loader import load_recipe

    return load_recipe(args.recipe, configs=args.config, overrides=args.overrides)


def cmd_show(args: argparse.Namespace) -> int:
    recipe = _load(args)
    print(f"# {recipe.name}  (hash {recipe.hash})")
    print(recipe.to_yaml(), end="")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from trainkit.loader import available, describe

    entries = available()
    if not entries:
        print("no recipes found (looked for recipes/*.py and configs/*.yaml)")
        return 0
    width = max(len(name) for name in entries)
    for kind, suffixes in (("recipes", (".py",)), ("configs", (".yaml", ".yml"))):
        names = [n for n, p in entries.items() if p.suffix in suffixes]
        if names:
            print(f"{kind}:")
            for name in names:
                print(f"  {name:<{width}}  {describe(entries[name])}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from trainkit import api

    summary = api.validate(_load(args))
    for key, value in summary.items():
        if isinstance(value, dict) and key in ("learning_rate", "sources"):
            print(f"{key:>20}:")
            for name, shown in value.items():
                print(f"{'':>18}{name}: {shown}")
        else:
            print(f"{key:>20}: {value}")
    print("ok: the recipe builds, and one training step and one evaluation step run (the weights are put back)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from trainkit import api

    recipe = _load(args)
    run = api.train(recipe, run_dir=args.run_dir, restart=args.restart, process_started=_STARTED)
    # trainer.progress: false silences everything but warnings and errors.
    if not run.served_only and recipe.trainer.progress:
        print(f"run directory: {run.run_dir}")
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    from trainkit.launch import main_for_cli

    return main_for_cli(args)


def cmd_eval(args: argparse.Namespace) -> int:
    from trainkit import api

    results = api.evaluate(args.run_dir, split=args.split, checkpoint=args.checkpoint, recipe_file=args.recipe)
    print(json.dumps({args.split: results}, indent=2))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from trainkit.files import atomic_path
    from trainkit.runs import load_run, plot_runs

    runs = [load_run(path) for path in args.run_dirs]  # every directory checked before drawing
    figure = plot_runs(runs)
    output = args.output
    with atomic_path(output) as tmp:
        figure.savefig(tmp, dpi=100)
    print(f"wrote {output}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from trainkit.serving.export import export

    written = export(args.run_dir, formats=args.formats, checkpoint=args.checkpoint, out_dir=args.output, quantize=args.quantize, recipe_file=args.recipe)
    for name, entry in written["formats"].items():
        checked = ""
        if "max_difference_from_keras" in entry:
            checked = f"  max difference from model.keras {entry['max_difference_from_keras']:.1e}"
            if "accuracy_change" in entry:
                checked += f", accuracy change {entry['accuracy_change']:+.4f} on {entry['examples_checked']} examples"
        print(f"{name:>12}: {entry['file']}  {entry['bytes'] / 1024:,.1f} KiB  {entry['seconds']:.2f} s{checked}")
    print(f"exported to {written['directory']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from trainkit.serving.predict import predict, write_csv

    predictions = predict(args.run_dir, args.input, checkpoint=args.checkpoint)
    if args.output:
        write_csv(predictions, args.output)
        print(f"{len(predictions.inputs)} predictions written to {args.output}")
    else:
        print(predictions.to_csv(), end="")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from trainkit import api

    report = api.inspect_data(_load(args), split=args.split, n=max(args.n, 0), seconds=args.seconds)
    print(f"{report['recipe']}  split {report['split']}  ({report['source']} source, held as {report['held_as']})")
    spec = report["element_spec"]
    features = spec["features"]
    if isinstance(features, dict):
        features = ", ".join(f"{k}: {v}" for k, v in features.items())
    print(f"  element spec: features {features}; label {spec['label']}")
    print(f"  examples:     {report['examples']} ({report['batches']} batches)")
    if report["task"] == "classification":
        dist = report["label_distribution"]
        total = sum(dist.values()) or 1
        part = "" if report["label_distribution_complete"] else f" (first {report['label_distribution_examples']} examples)"
        print(f"  labels:       {report['classes']} classes{part}")
        for name, count in dist.items():
            print(f"    {name:>12}  {count:>8}  {count / total:6.1%}")
    else:
        dist = report["label_distribution"]
        print(f"  targets:      min {dist['min']:.4g}  mean {dist['mean']:.4g}  max {dist['max']:.4g}")
    if report["skipped_files"]:
        print(f"  skipped:      {len(report['skipped_files'])} unreadable file(s), e.g. {report['skipped_files'][0]}")
    for i, (x, y) in enumerate(report["first_examples"]):
        print(f"  example {i}: label {_show(y)}  features {_show(x)}")
    rate = report["examples_per_second"]
    print(f"  pipeline alone: {rate:,.0f} examples/s" if rate else "  pipeline alone: too few batches to time")
    return 0


def _show(value) -> str:
    import numpy as np

    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    array = np.asarray(value)
    if array.size <= 8:
        return np.array2string(array, precision=3, separator=", ")
    return f"{array.dtype} {list(array.shape)} min {array.min():.3g} mean {array.mean():.3g} max {array.max():.3g}"


COMMANDS = {"export": cmd_export, "predict": cmd_predict, "plot": cmd_plot, "data": cmd_data, "train": cmd_train, "launch": cmd_launch, "eval": cmd_eval, "show": cmd_show, "validate": cmd_validate, "ls": cmd_ls}


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    # Overrides may come after options too (``--run-dir D trainer.epochs=3``),
    # which argparse's subcommands cannot express: collect them from the leftovers.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any("=" not in e or e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    if args.version:
        from trainkit import __version__

        print(f"trainkit {__version__}")
        return 0
    if not args.command:
        parser.print_help()
        return 2
    from trainkit.training.stops import TrainingStopped

    try:
        return COMMANDS[args.command](args)
    except TrainingStopped as err:  # (before KeyboardInterrupt: SIGINT's stop is one)
        print(f"{err.label}: {err}", file=sys.stderr)
        return err.exit_code
    except TrainkitError as err:
        print(f"{getattr(err, 'label', 'error')}: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The ``trainkit`` command: :func:`main`, then the end of the process."""
    from trainkit import teardown

    teardown.exit_process(main())


if __name__ == "__main__":
    run()
