"""``trainkit``: a thin command line over :mod:`trainkit.api`.

TensorFlow is imported only by commands that build something, so ``--help``,
``show`` and ``ls`` answer at once. Mistakes in recipes, configs and overrides
print one line (``error: ...``) and exit with code 2; nothing is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from trainkit.errors import ConfigError, TrainkitError

_STARTED = time.time()

EXAMPLES = """\
examples:
  trainkit ls
  trainkit show digits_cnn trainer.epochs=3
  trainkit validate digits_cnn -c digits_cnn_smoke
  trainkit train digits_cnn                         # into runs/digits_cnn (resumes if it exists)
  trainkit train digits_mlp -c digits_mlp_smoke optimizer.learning_rate=0.01 --run-dir runs/try
  trainkit eval runs/digits_cnn --split test --checkpoint best
  trainkit eval runs/digits_cnn --watch --until-finished   # a sidecar evaluator beside the training
  trainkit export runs/digits_cnn --format saved_model --format onnx -o served/
  trainkit predict runs/digits_cnn new_digits.npy -o predictions.csv
  trainkit data mnist_cnn --split test -n 3         # a split as the model sees it, and its speed
  trainkit launch -n 2 digits_mlp                   # 2 local workers, multi_worker_mirrored
  trainkit plot runs/digits_cnn runs/try -o curves.png  # learning curves of runs
  trainkit sweep digits_mlp_sweep trainer.epochs=1 model.hidden_units=[16] --trials 3  # an Optuna sweep: runs/sweeps/NAME
  trainkit sweep show runs/sweeps/digits_mlp_sweep --best-config best.yaml

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
    _sweep_command(commands)
    commands.add_parser("ls", help="list recipes and configs with their descriptions")
    return parser


def _sweep_command(commands) -> None:
    """sweep, and sweep show."""
    p = commands.add_parser(
        "sweep", help="hyperparameter sweep on Optuna (every trial a run), or `sweep show DIR`",
        description="trainkit sweep SWEEP [KEY=VALUE]... runs a sweep file's trials; "
        "trainkit sweep show DIR [--best-config FILE] prints its trials table and best trial.",
    )
    p.add_argument("sweep", nargs="?", metavar="SWEEP", help="a sweep file (sweeps/ or configs/, or a path), or `show`")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="a setting of every trial (with show: the sweep directory)")
    p.add_argument("--trials", type=int, metavar="N", help="total trials across every process (default: the file's)")
    p.add_argument("--storage", metavar="URL", help="an Optuna RDB URL (postgresql://...) shared by many processes (default: a journal file in the sweep directory)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="local processes sharing the study (one GPU each, round robin, when there are GPUs)")
    p.add_argument("--sweep-dir", metavar="DIR", help="where the trials go (default: runs/sweeps/NAME)")
    p.add_argument("--space", metavar="FILE", help="the sweep file, given as an option")
    p.add_argument("--best-config", metavar="FILE", help="with show: write the best trial as a config that `trainkit train FILE` trains")


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
    p.add_argument(
        "--evaluator", action="store_true",
        help="add an evaluator task: evaluates each checkpoint as the workers write it "
        "(with trainer.validation: sidecar the workers skip in-loop validation)",
    )


def _run_commands(commands) -> None:
    """Commands on a run directory: eval, export, predict."""
    p = commands.add_parser("eval", help="evaluate a run's checkpoint on a split, or each new one (--watch)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--split", help="train, validation or test (default: test; validation with --watch)")
    p.add_argument(
        "--watch", action="store_true",
        help="a sidecar evaluator: evaluate every new checkpoint once, in order, as training writes them "
        "(eval_history.jsonl, tensorboard/eval, checkpoints/best_eval)",
    )
    p.add_argument("--every-seconds", type=float, default=30.0, metavar="S", help="with --watch: how often to look (default 30)")
    p.add_argument("--until-finished", action="store_true", help="with --watch: stop once the run has ended and its last checkpoint is evaluated")
    p.add_argument(
        "--wait", action="store_true",
        help="with --watch: the training starts now, beside this evaluator: wait for RUN_DIR to appear, "
        "and for this training's end (TensorFlow's start-up overlaps the training's)",
    )
    p.add_argument(
        "--threads", type=int, metavar="N",
        help="with --watch: TensorFlow's threads in the evaluator (intra-op, inter-op, tf.data; "
        "default 1, so the training keeps the other cores; 0: one per core)",
    )
    p.add_argument(
        "--nice", metavar="idle|N",
        help="with --watch: the evaluator's priority: N=1..19 lowers it by N (default 10), 0 keeps it, "
        "idle runs it only on CPU time nothing else wants (Linux SCHED_IDLE)",
    )
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
    _print_builder_defaults(recipe)
    return 0


def _print_builder_defaults(recipe) -> None:
    """The model builder's own defaults, as comments: the recipe leaves them to the
    builder, so they are neither in its YAML nor in its hash."""
    import yaml

    from trainkit.models.build import builder_defaults

    defaults = builder_defaults(recipe.model)
    if not defaults:
        return
    print(f"# model builder '{recipe.model.type}' defaults (the builder's own, not in the recipe or its hash; set any under model:):")
    for line in yaml.safe_dump(defaults, sort_keys=False, default_flow_style=False).splitlines():
        print(f"#   {line}")


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
    from trainkit.distribution.cluster import CLUSTER_STRATEGIES, cluster_info

    recipe = _load(args)
    run = api.train(recipe, run_dir=args.run_dir, restart=args.restart, process_started=_STARTED)
    cluster = cluster_info() if recipe.runtime.strategy in CLUSTER_STRATEGIES else None
    # trainer.progress: false silences everything but warnings and errors. Of a
    # cluster's tasks only the chief, which writes the run directory, says where it is.
    if not run.served_only and recipe.trainer.progress and (cluster is None or cluster.is_chief):
        print(f"run directory: {run.run_dir}")
        print(next_steps(run.run_dir, recurrent=recipe.model.type == "rnn"))
    return 0


def _export_formats(spec: dict[str, Any], recurrent: bool) -> str:
    """The formats a plain ``trainkit export`` writes for a run (raw text and recurrent loops: no LiteRT, ONNX)."""
    return ".keras, SavedModel" if spec["input"]["dtype"] == "string" or recurrent else ".keras, SavedModel, LiteRT, ONNX"


def _predict_inputs(spec: dict[str, Any]) -> str:
    """What ``trainkit predict`` reads for a run, by the kind of its input."""
    if spec["input"]["dtype"] == "string":
        return "a CSV or .jsonl with the text column, a .txt file or a folder of .txt files"
    if spec["input"].get("series"):
        return "a CSV of the series (one row per time step), a .npy array of windows or .jsonl"
    if spec["input"].get("image"):
        return "a folder of images, a .npy array or .jsonl"
    return "a CSV with the training columns, a .npy array or .jsonl"


def next_steps(run_dir, *, recurrent: bool = False) -> str:
    """What to do with a trained run, as command lines to copy (named as this
    command was run, e.g. ``.venv/bin/trainkit`` where ``trainkit`` is not on the PATH);
    ``recurrent``: a model of the ``rnn`` builder."""
    import shlex
    import shutil
    from pathlib import Path

    from trainkit.serving import spec as inference_spec

    program = sys.argv[0] if sys.argv[0].endswith("trainkit") and not shutil.which("trainkit") else "trainkit"
    run = shlex.quote(str(run_dir))
    lines = [
        (f"{program} eval {run} --split test", "metrics of a split, from any checkpoint (--checkpoint)"),
        (f"{program} plot {run} -o curves.png", "the learning curves"),
    ]
    recorded = inference_spec.read(Path(run_dir))
    if recorded is not None and not recorded.get("unsupported"):
        lines += [
            (f"{program} export {run}", f"the model with its preprocessing: {_export_formats(recorded, recurrent)}"),
            (f"{program} predict {run} INPUT", f"INPUT: {_predict_inputs(recorded)}"),
        ]
    width = max(len(command) for command, _ in lines)
    return "next:\n" + "\n".join(f"  {command:<{width}}  # {what}" for command, what in lines)


def cmd_launch(args: argparse.Namespace) -> int:
    from trainkit.launch import main_for_cli

    return main_for_cli(args)


def cmd_eval(args: argparse.Namespace) -> int:
    from trainkit import api

    if args.watch:
        from trainkit.sidecar import DEFAULT_NICE, DEFAULT_THREADS, watch

        if args.checkpoint != "last":
            raise ConfigError("--checkpoint goes without --watch (a sidecar evaluates every checkpoint as it comes)")

        watch(
            args.run_dir, split=args.split or "validation", every_seconds=args.every_seconds,
            until_finished=args.until_finished, recipe_file=args.recipe,
            wait_for_run=args.wait, ended_after=time.time() if args.wait else None,
            threads=DEFAULT_THREADS if args.threads is None else args.threads,
            nice=DEFAULT_NICE if args.nice is None else args.nice,
        )
        return 0
    flags = (("--until-finished", args.until_finished or None), ("--wait", args.wait or None))
    for option, value in (*flags, ("--threads", args.threads), ("--nice", args.nice)):
        if value is not None:
            shown = option if option in ("--until-finished", "--wait") else f"{option} {value}"
            raise ConfigError(f"{option} goes with --watch (trainkit eval RUN_DIR --watch {shown})")
    split = args.split or "test"
    results = api.evaluate(args.run_dir, split=split, checkpoint=args.checkpoint, recipe_file=args.recipe)
    print(json.dumps({split: results}, indent=2))
    return 0


def _check_image_format(output: str) -> None:
    from pathlib import Path

    from trainkit.errors import ConfigError

    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        return  # plotting says which extra to install
    known = FigureCanvasBase.get_supported_filetypes()
    suffix = Path(output).suffix.lower().lstrip(".")
    if suffix not in known:
        shown = f"'.{suffix}'" if suffix else "no suffix"
        raise ConfigError(f"-o {output}: {shown} is not an image format; use .png, .svg or .pdf ({', '.join(sorted(known))})")


def cmd_plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from trainkit.files import atomic_path
    from trainkit.rundir import check_output
    from trainkit.runs import load_run, plot_runs
    from trainkit.training.disk_full import writing

    output = args.output
    _check_image_format(output)
    check_output(output, "-o", suffixes=(Path(output).suffix.lower(),))
    runs = [load_run(path) for path in args.run_dirs]  # every directory checked before drawing
    figure = plot_runs(runs)
    with writing(output, "the plot", option="-o"), atomic_path(output) as tmp:
        figure.savefig(tmp, dpi=100)
    print(f"wrote {output}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from trainkit.rundir import check_output
    from trainkit.serving.export import export
    from trainkit.training.disk_full import writing

    if args.output:
        check_output(args.output, "-o", folder=True)
    with writing(args.output or args.run_dir, "the export", option="-o"):
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
    from trainkit.rundir import check_output
    from trainkit.serving.predict import predict, write_csv

    if args.output:
        check_output(args.output, "-o", suffixes=(".csv",))
    predictions = predict(args.run_dir, args.input, checkpoint=args.checkpoint)
    if args.output:
        from trainkit.training.disk_full import writing

        with writing(args.output, "the predictions", option="-o"):
            write_csv(predictions, args.output)
        print(f"{len(predictions.inputs)} predictions written to {args.output}")
    else:
        print(predictions.to_csv(), end="")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from trainkit import api

    report = api.inspect_data(_load(args), split=args.split, n=args.n, seconds=args.seconds)
    print(f"{report['recipe']}  split {report['split']}  ({report['source']} source, held as {report['held_as']})")
    spec = report["element_spec"]
    features = spec["features"]
    if isinstance(features, dict):
        features = ", ".join(f"{k}: {v}" for k, v in features.items())
    print(f"  element spec: features {features}; label {spec['label']}")
    print(f"  examples:     {report['examples']} ({report['batches']} batch{'' if report['batches'] == 1 else 'es'})")
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
    tokens = report.get("text")
    if tokens:
        print(
            f"  text:         vocabulary {tokens['vocabulary_size']} tokens; out of vocabulary {tokens['out_of_vocabulary_rate']:.1%} "
            f"of words; cut by sequence_length {tokens['cut_by_sequence_length']:.1%} of examples (of {tokens['examples']})"
        )
    for i, (x, y) in enumerate(report["first_examples"]):
        if tokens and i < len(tokens["raw_examples"]):
            raw = tokens["raw_examples"][i]
            print(f"  example {i}: label {_show(y)}  text {raw[:100]!r}{'...' if len(raw) > 100 else ''}")
            print(f"             tokens {_show_tokens(x)}")
            continue
        print(f"  example {i}: label {_show(y)}  features {_show(x)}")
    rate = report["examples_per_second"]
    print(f"  pipeline alone: {rate:,.0f} examples/s" if rate else "  pipeline alone: too few batches to time")
    _print_stages(report["stage_examples_per_second"])
    if report["cached"]:
        here = ", as batch did here" if report["label_distribution_complete"] else ""
        print(f"  cached: read, parse and transform run in the first epoch only; the epochs after it read the cache{here}")
    return 0


def _print_stages(rates: dict[str, float | str | None]) -> None:
    """Examples per second after each stage; the stage that loses the most is the one to fix."""
    print("  by stage (each includes the ones before; examples/s):")
    previous, worst, worst_drop = None, None, 1.0
    for name, rate in rates.items():
        if isinstance(rate, str):  # ran once, when the data was prepared
            print(f"    {name:<10}   {rate}, before the first epoch")
            continue
        print(f"    {name:<10} " + (f"{rate:>12,.0f}" if rate else "  too short to time"))
        if rate and previous and rate / previous < worst_drop:
            worst, worst_drop = name, rate / previous
        previous = rate or previous
    if worst is not None and worst_drop < 0.5:
        print(f"  slowest stage: {worst} (to {worst_drop:.0%} of the rate before it)")


def _show_tokens(value) -> str:
    import numpy as np

    array = np.asarray(value).reshape(-1)
    shown = np.array2string(array[:24], precision=3, separator=", ", max_line_width=10**6)
    return shown[:-1] + ", ...]" if array.size > 24 else shown


def _show(value) -> str:
    import numpy as np

    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    array = np.asarray(value)
    if array.size <= 8:
        return np.array2string(array, precision=3, separator=", ")
    return f"{array.dtype} {list(array.shape)} min {array.min():.3g} mean {array.mean():.3g} max {array.max():.3g}"



def cmd_sweep(args: argparse.Namespace) -> int:
    from trainkit.sweeps.command import main_for_cli

    return main_for_cli(args)

COMMANDS = {"sweep": cmd_sweep, "export": cmd_export, "predict": cmd_predict, "plot": cmd_plot, "data": cmd_data, "train": cmd_train, "launch": cmd_launch, "eval": cmd_eval, "show": cmd_show, "validate": cmd_validate, "ls": cmd_ls}


class _ClosedPipeTolerant:
    """stdout that a reader may close (``trainkit show X | head -1``): a closed pipe is a
    normal end in Unix, not an error. What is still printed goes to /dev/null and the
    command carries on (a training is never failed by it)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._discard()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._discard()

    def _discard(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    if not isinstance(sys.stdout, _ClosedPipeTolerant) and hasattr(sys.stdout, "fileno"):
        sys.stdout = _ClosedPipeTolerant(sys.stdout)
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
