"""``trainkit sweep``: the command line's face of :mod:`trainkit.sweeps`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainkit.errors import ConfigError, RunDirError
from trainkit.sweeps.space import MAX_TRIALS


def main_for_cli(args: argparse.Namespace) -> int:
    """``trainkit sweep SWEEP [KEY=VALUE]...`` or ``trainkit sweep show DIR [--best-config FILE]``."""
    if args.sweep == "show":
        return show(args)
    if args.best_config:
        raise ConfigError("--best-config goes with `trainkit sweep show DIR`")
    overrides = list(args.overrides)
    source = args.sweep
    if args.space:
        overrides = [source, *overrides] if source else overrides
        source = args.space
    if not source:
        raise ConfigError("name a sweep file: trainkit sweep SWEEP [KEY=VALUE]... (or --space FILE)")
    if args.workers < 1:
        raise ConfigError(f"--workers: give 1 or more, got {args.workers}")
    if args.trials is not None and not 1 <= args.trials <= MAX_TRIALS:
        raise ConfigError(f"--trials: give 1 to {MAX_TRIALS:,}, got {args.trials:,}")
    from trainkit.runtime import quiet_tensorflow
    from trainkit.sweeps.runner import DEFAULT_SWEEPS, run_sweep, run_workers
    from trainkit.sweeps.space import load_sweep

    sweep = load_sweep(source, overrides)
    sweep_dir = Path(args.sweep_dir or DEFAULT_SWEEPS / sweep.name)
    if args.workers > 1:
        argv = [source, *overrides, *(["--storage", args.storage] if args.storage else [])]
        argv += ["--trials", str(args.trials)] if args.trials else []
        return run_workers(sweep, argv, workers=args.workers, sweep_dir=sweep_dir, storage_url=args.storage, trials=args.trials)
    quiet_tensorflow()
    study = run_sweep(sweep, sweep_dir=sweep_dir, storage_url=args.storage, trials=args.trials)
    print(f"sweep directory: {sweep_dir}  (trainkit sweep show {sweep_dir})")
    states = [trial.state.name for trial in study.trials]
    if "COMPLETE" not in states and "FAIL" in states:  # (a script that reads the best trial next must not go on)
        print(f"error: no trial completed; {states.count('FAIL')} failed (why: trainkit sweep show {sweep_dir})", file=sys.stderr)
        return 1
    return 0


def show(args: argparse.Namespace) -> int:
    from trainkit.sweeps.report import open_sweep

    if len(args.overrides) != 1:
        raise ConfigError("usage: trainkit sweep show DIR [--best-config FILE]")
    if args.best_config:
        from trainkit.rundir import check_output

        check_output(args.best_config, "--best-config")
    result = open_sweep(args.overrides[0])
    print(result.table())
    try:
        trial = result.best_trial()
    except RunDirError as err:  # no completed trial yet
        print(f"best: none ({err})")
        if args.best_config:  # (a script that trains the file next must not go on)
            raise RunDirError(f"--best-config {args.best_config}: not written, as no trial has completed") from None
        return 0
    shown = ", ".join(f"{key}={value}" for key, value in result.recipe_values(trial).items())
    print(f"best: trial {trial.number}  {result.metric} {trial.value:.6g}  ({shown})  {result.sweep_dir / trial.user_attrs['run_dir']}")
    if args.best_config:
        path = result.best_config(args.best_config)
        print(f"wrote {path}  ({result.train_command(path)})")
    return 0
