"""What the progress display costs: the share of training time spent in the output sink.

    python benchmarks/display_cost.py [--repeats 3] [--epochs 10]

Trains an overhead-bound recipe (``digits_mlp`` with one 16-unit layer, one
step per compiled call, so the sink is called after every single step: the
worst case) in this process, once per sink, ``--repeats`` times. Every call
into the sink is timed; the cost is that time over the run's own training
time (``train_seconds`` in ``run.json``) -- a ratio that does not depend on how
busy the machine is, unlike a difference of two wall-clock runs.

Sinks: plain lines (to /dev/null), the terminal line (tqdm, to /dev/null), and
the notebook display (rendered through IPython's display machinery, with an
``InteractiveShell`` standing in for the kernel: everything but the message to
the front end). The issue's bar: at most 2%.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import options

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TRAINKIT_HOME", str(ROOT))

OVERRIDES = {
    "model.hidden_units": [16], "trainer.steps_per_execution": 1, "trainer.log_every_steps": 10,
    "trainer.evaluate": [], "trainer.checkpoint.every_seconds": None, "trainer.measure_input": False,
}
HOOKS = ("start", "advance", "train_log", "validation", "epoch_end", "finish", "line", "notice", "result")


class Timed:
    """Times every call into a sink."""

    def __init__(self, sink):
        self.sink, self.seconds, self.calls = sink, 0.0, 0

    def __getattr__(self, name):
        method = getattr(self.sink, name)
        if name not in HOOKS:
            return method

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self.calls += 1

        return timed


def make(kind: str, devnull):
    from trainkit.training import sinks

    if kind == "plain":
        return sinks.PlainSink(devnull)
    if kind == "terminal":
        return sinks.TerminalSink(devnull)
    from IPython.core.interactiveshell import InteractiveShell

    InteractiveShell.instance()
    return sinks.NotebookSink()


def run_once(kind: str, epochs: int, workdir: Path, steps_per_execution) -> dict:
    import trainkit
    from trainkit.serving.export import export_trained, record_inputs
    from trainkit.training.lifecycle import train_run

    overrides = {**OVERRIDES, "trainer.epochs": epochs, "trainer.steps_per_execution": steps_per_execution}
    recipe = trainkit.load_recipe("digits_mlp", overrides=overrides)
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(io.StringIO()):
        sink = Timed(make(kind, devnull))
        train_run(recipe, workdir / kind, sink=sink, record_inputs=record_inputs, export=export_trained)
    status = json.loads((workdir / kind / "run.json").read_text())
    return {"sink_seconds": sink.seconds, "calls": sink.calls, "train_seconds": status["train_seconds"], "steps": status["step"]}


def main() -> None:
    parser = options.parser(__doc__)
    parser.add_argument("--repeats", type=options.count, default=3)
    parser.add_argument("--epochs", type=options.count, default=10)
    parser.add_argument("--steps-per-execution", default="1", help="1 (the sink after every step) or auto")
    args = parser.parse_args()
    spe = int(args.steps_per_execution) if args.steps_per_execution.isdigit() else args.steps_per_execution
    results = {}
    for kind in ("plain", "terminal", "notebook"):
        shares, per_call = [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                r = run_once(kind, args.epochs, Path(tmp), spe)
            shares.append(r["sink_seconds"] / r["train_seconds"])
            per_call.append(r["sink_seconds"] / r["calls"] * 1e6)
            step_ms = r["train_seconds"] / r["steps"] * 1e3
        results[kind] = {
            "share_of_training": round(statistics.median(shares), 5),
            "microseconds_per_call": round(statistics.median(per_call), 1),
            "step_ms": round(step_ms, 3),
        }
        print(f"{kind:>9}: {statistics.median(shares):.3%} of training time "
              f"({statistics.median(per_call):.1f} us per sink call, {step_ms:.2f} ms per step)", flush=True)
    out = ROOT / "benchmarks" / "display_cost.json"
    stored = json.loads(out.read_text()) if out.is_file() else {}
    stored[f"steps_per_execution={spe}"] = results
    out.write_text(json.dumps(stored, indent=2) + "\n")


if __name__ == "__main__":
    options.run(main)
