"""A sidecar evaluator: each new checkpoint of a run evaluated once, beside its training.

``trainkit eval RUN_DIR --watch`` (and the ``evaluator`` task of a cluster,
``trainkit launch --evaluator``) polls ``RUN_DIR/checkpoints/`` and evaluates
every checkpoint it has not evaluated yet, oldest first, while the workers go
on training. What it writes, all inside the run directory::

    eval_history.jsonl        one line per evaluated checkpoint: step, split, metrics, checkpoint
    tensorboard/eval/         the same numbers for TensorBoard
    checkpoints/best_eval/    the best checkpoint by the recipe's trainer.checkpoint.monitor
    .eval.lock                held while an evaluator watches (one per run directory)

What a sidecar meets, and what it does:

- A checkpoint is read only once complete. TensorFlow writes ``ckpt-N_temp/``,
  renames its files to ``ckpt-N.*`` and lists them in ``checkpoints/checkpoint``
  after: a checkpoint counts as written once it is listed, once a newer one
  exists, or once the run has ended. Before reading, its files are pinned with
  hard links (``checkpoints/.eval_reading/``), so the rotation (``keep``)
  deleting it meanwhile cannot tear the read; and each tensor's CRC is checked.
- A checkpoint deleted by the rotation before it was pinned is skipped, with a line
  (one deleted before the first look at the run was never seen, and is not named).
- Killed and started again, it continues after the last step in
  ``eval_history.jsonl`` (rewritten whole, atomically, after each evaluation):
  nothing is lost and nothing evaluated twice. A training that restarts goes on
  writing higher steps; the ones already evaluated are not evaluated again.

The model is built once; each checkpoint only swaps its weights in, so the
evaluation function is traced once.

What it costs the training beside it, on the same machine: by default the
evaluator's process runs TensorFlow (and its ``tf.data`` pipeline) on one
thread and at nice 10 (the training's threads come first when both want a core),
see :func:`limit_process`; a pass
that finds nothing changed (by ``stat`` of the checkpoint folder, its list,
``run.json`` and ``config.yaml``) reads and parses nothing; and the history is
read from disk once, when the evaluator starts (it is the only writer).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from trainkit.console import say, warn
from trainkit.errors import ConfigError, RunDirError
from trainkit.files import read_regular, write_text_atomic
from trainkit.recipe import Recipe
from trainkit.rundir import RunDir, load_run_recipe
from trainkit.rundir.checkpoints import (
    PREFIX,
    candidates,
    reason,
    restore_model_weights,
    step_of,
    write_state,
)
from trainkit.rundir.lock import RunLock

HISTORY = "eval_history.jsonl"
BEST = "best_eval"
READING = ".eval_reading"
LOCK = ".eval.lock"
#: How often a cluster's ``evaluator`` task looks for new checkpoints.
EVALUATOR_POLL_SECONDS = 2.0
#: The longest ``--every-seconds``: a day.
MAX_EVERY_SECONDS = 86_400
#: TensorFlow's threads in an evaluator's process (intra-op, inter-op and tf.data's
#: pool): the training beside it keeps the rest of the cores. 0: TensorFlow's default.
DEFAULT_THREADS = 1
#: An evaluator's priority: a ``nice`` level (1..19 lower) or ``idle`` (Linux's
#: ``SCHED_IDLE``: only CPU time nothing else wants). Measured with
#: ``benchmarks/sidecar_cost.py`` on 2 cores, nice 10 cost the training less than idle
#: (likely: an idle evaluator preempted while it holds something a training thread waits
#: for stalls that thread), so idle is an option, not the default.
IDLE = "idle"
DEFAULT_NICE: int | str = 10
# A stat signature whose newest time is this close to the pass that read it might
# hide a change made in the same clock tick: the next poll reads everything again.
_RACY_SECONDS = 2.0
_limited: list[tuple[int, int | str]] = []  # what limit_process set in this process (once)


def limit_process(threads: int = DEFAULT_THREADS, nice: int | str = DEFAULT_NICE) -> None:
    """Make this process a modest neighbour of the training: TensorFlow on ``threads``
    intra-op and inter-op threads (0 leaves TensorFlow's defaults, one per core), and its
    priority lowered to ``nice`` (``"idle"``, or 1..19 lower; 0 keeps it), for every thread
    it has and will start. Call it before TensorFlow runs anything:
    the thread counts are fixed when TensorFlow starts (then they stay as they are, with
    a warning). Once per process: a second call changes nothing."""
    nice = check_limits(threads, nice)
    if _limited:
        return
    _limited.append((threads, nice))
    lower_priority(nice)
    if not threads:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow has started in this process: its pools are made
        warn(f"warning: --threads {threads}: TensorFlow had started already; it keeps its own thread counts")


def lower_priority(nice: int | str) -> None:
    """Lower this process's priority: ``"idle"`` (``SCHED_IDLE``; where the system has no
    such policy, nice 19 with a warning) or by ``nice`` levels. Linux keeps a priority
    per thread, and new threads inherit their creator's: every thread running now is
    changed, and the ones started later follow."""
    threads = [int(tid) for tid in os.listdir("/proc/self/task")] if os.path.isdir("/proc/self/task") else [0]
    if nice == IDLE and not hasattr(os, "SCHED_IDLE"):
        warn("warning: --nice idle: this system has no idle scheduling policy; running at nice 19 instead")
        nice = 19
    for tid in threads:
        try:
            if nice == IDLE:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            elif nice:
                os.setpriority(os.PRIO_PROCESS, tid, min(os.getpriority(os.PRIO_PROCESS, tid) + nice, 19))
        except ProcessLookupError:  # a thread that ended meanwhile
            continue


def warm_up() -> None:
    """Import what evaluating takes (TensorFlow and Keras: seconds of CPU) ahead of the
    first checkpoint: an evaluator started with the training pays it while the training
    starts up too, not while it takes its steps."""
    import trainkit.data.pipeline  # noqa: F401
    import trainkit.models.build  # noqa: F401
    import trainkit.training.loop  # noqa: F401


def check_limits(threads: int, nice: int | str) -> int | str:
    """Refuse a thread count or priority the evaluator cannot use (before any work);
    the priority as :func:`limit_process` takes it (``"idle"`` or an int)."""
    if threads < 0:
        raise ConfigError(f"--threads: must be 0 (TensorFlow's default: one per core) or more, got {threads}")
    return parse_nice(nice)


def parse_nice(value: int | str) -> int | str:
    """``--nice``'s value: ``idle``, or a niceness 0..19 (a number given as text too)."""
    text = str(value).strip().lower()
    if text == IDLE:
        return IDLE
    try:
        number = int(text)
    except ValueError:
        number = -1
    if not 0 <= number <= 19:
        raise ConfigError(
            f"--nice: must be 0 (keep the priority), 1..19 (lower it) or idle (only CPU time nothing "
            f"else wants), got {value}"
        )
    return number


def describe_priority(nice: int | str) -> str:
    """The evaluator's priority in words, for its start line."""
    return "idle priority" if nice == IDLE else f"nice {nice}" if nice else "the training's priority"


def read_history(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``eval_history.jsonl`` (``[]`` when there is none)."""
    path = Path(run_dir) / HISTORY
    try:
        lines = read_regular(path, limit=1 << 28).decode("utf-8").splitlines()
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as err:
        raise RunDirError(f"{path} cannot be read ({err})") from None
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError:
            raise RunDirError(f"{path}: line {number} is not JSON; remove that line to go on") from None
        if isinstance(record, dict):
            records.append(record)
    return records


@dataclass(frozen=True)
class Monitor:
    """The metric the best checkpoint is chosen by, as named in the evaluated metrics."""

    name: str
    mode: str

    def value(self, metrics: dict[str, float]) -> float | None:
        value = metrics.get(self.name)
        return value if isinstance(value, int | float) and math.isfinite(value) else None

    def better(self, value: float, best: float | None) -> bool:
        return best is None or (value < best if self.mode == "min" else value > best)


def monitor_for(recipe: Recipe, split: str) -> Monitor | None:
    """The recipe's ``trainer.checkpoint.monitor`` as a metric of ``split``'s evaluation
    (``val_loss`` is ``loss`` on the validation split); None without one."""
    from trainkit.training.checkpoint import better_mode

    policy = recipe.trainer.checkpoint
    monitor = policy.monitor
    if not monitor or monitor == "auto":
        return None
    name = monitor.removeprefix("val_") if split == "validation" else monitor
    return Monitor(name, better_mode(monitor, policy.mode))


class Evaluator:
    """The run's model and evaluation, restored once (:func:`trainkit.plan.restore_plan`,
    in one process); each checkpoint only swaps the weights in."""

    def __init__(self, run_dir: Path, split: str, *, recipe_file: str | os.PathLike | None = None, threads: int = 0):
        from trainkit.plan import restore_plan

        self.built = restore_plan(run_dir, None, recipe_file=recipe_file)
        self.built.data._check_split(split)
        self.built.data.threads = threads or None  # before its first dataset is made
        self.split = split

    def evaluate(self, checkpoint: str) -> dict[str, float]:
        """Metrics of ``checkpoint``'s weights; raises if it does not read back whole."""
        restore_model_weights(self.built.model, checkpoint)
        return self.built.trainer.evaluate_split(self.built.data, self.split)


class Sidecar:
    """Watches one run directory; :meth:`poll` evaluates what is new."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        split: str = "validation",
        recipe_file: str | os.PathLike | None = None,
        evaluate: Callable[[str], dict[str, float]] | None = None,
        report: Callable[[str], None] = say,
        ended_after: float | None = None,
        threads: int = 0,
    ):
        self.run = RunDir(run_dir)
        self.ended_after = ended_after
        self.split = split
        self.report = report
        self.recipe_file = recipe_file
        self.threads = threads
        self.recipe = load_run_recipe(run_dir, recipe_file=recipe_file)
        self._evaluate = evaluate
        self._writer = None
        self.monitor = monitor_for(self._resolved_recipe(), split)
        self._records: list[dict] | None = None  # eval_history.jsonl, read once: only this evaluator writes it
        self._unchanged: tuple | None = None  # what the last full pass saw, when it can be trusted
        self._finished = False

    def _resolved_recipe(self) -> Recipe:
        from trainkit.plan import resolve_monitor

        # auto is val_loss when there is a validation split, as in the training.
        return resolve_monitor(self.recipe, has_validation=self.split == "validation")

    @property
    def checkpoints(self) -> Path:
        return self.run.checkpoints

    def _ready(self) -> Callable[[str], dict[str, float]]:
        """The evaluation, restored on first use (a recipe or split that cannot be
        evaluated stops the evaluator: it is not a damaged checkpoint)."""
        if self._evaluate is None:
            self._evaluate = Evaluator(self.run.path, self.split, recipe_file=self.recipe_file, threads=self.threads).evaluate
        return self._evaluate

    # -- one pass ---------------------------------------------------------------

    def poll(self) -> tuple[int, bool]:
        """Evaluate every new checkpoint that is complete, oldest first.

        Returns ``(how many were evaluated, whether the run has ended and every
        checkpoint it kept is evaluated)``. A poll that finds nothing changed since
        the last pass (:meth:`_signature`) reads nothing else.
        """
        signature = self._signature()
        if signature == self._unchanged:
            return 0, self._finished
        started = time.time()
        evaluated, self._finished = self._pass()
        newest = max((mark[2] for mark in signature if mark is not None), default=0) / 1e9
        # Trusted next time only when its newest change is clearly older than the
        # reading that followed: a change in the same clock tick would not show.
        self._unchanged = signature if newest < started - _RACY_SECONDS else None
        return evaluated, self._finished

    def _signature(self) -> tuple:
        """What a pass depends on, by ``stat`` alone: the checkpoint folder (files made,
        renamed, deleted), TensorFlow's list in it, ``run.json`` (the run's end) and
        ``config.yaml`` (a restart with another recipe); each replaced by a rename."""
        marks = []
        for path in (self.checkpoints, self.checkpoints / "checkpoint", self.run.run_json, self.run.config):
            try:
                st = os.stat(path, follow_symlinks=False)
            except OSError:
                marks.append(None)
                continue
            marks.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(marks)

    def _pass(self) -> tuple[int, bool]:
        self._check_same_run()
        ended = self._run_ended()  # read before the listing: an ended run writes no more
        if self._records is None:
            self._records = read_history(self.run.path)
        records = self._records
        done = max((r["step"] for r in records if r.get("split") == self.split), default=-1)
        found = sorted((p for p in candidates(self.checkpoints) if step_of(p) > done), key=step_of)
        listed = self._listed()
        evaluated = 0
        for i, path in enumerate(found):
            written = ended or Path(path).name in listed or i + 1 < len(found)
            if not written:
                return evaluated, False  # still being written: next time
            pinned = pin_files(path, self.checkpoints / READING)
            if pinned is None:
                self.report(
                    f"skipped {Path(path).name}: deleted before it could be read "
                    "(trainer.checkpoint.keep rotates checkpoints)"
                )
                continue
            try:
                metrics = self._read(pinned)
                if metrics is not None:
                    records.append(self._record(step_of(path), path, metrics, records))
                    evaluated += 1
            finally:
                unpin(self.checkpoints / READING)
        return evaluated, ended

    def _check_same_run(self) -> None:
        """Refuse to go on when the run directory now holds a run of another recipe
        (``--restart`` with other settings): the model built here is not its model."""
        from trainkit.recipe import diff, is_resumable_change

        if not self.run.exists():
            return
        changed = [key for key in diff(self.recipe, self.run.read_recipe()) if not is_resumable_change(key)]
        if changed:
            raise RunDirError(
                f"{self.run.path} now holds a run of another recipe (differs in: {', '.join(changed[:5])}); "
                "start the evaluator again for it"
            )

    def _run_ended(self) -> bool:
        """Whether the run has ended (any status but ``running``): by ``ended_after``
        (``time.time()``), when given, so that the end of an earlier training of
        the run is not taken for the end of the one starting beside this evaluator."""
        status = self.run.read_status()
        if status.get("status") in (None, "running"):
            return False
        if self.ended_after is None:
            return True
        try:
            ended = datetime.strptime(str(status.get("ended")), "%Y-%m-%dT%H:%M:%S%z").timestamp()
        except ValueError:
            return False
        return ended >= self.ended_after - 1.0  # (run.json's times are whole seconds)

    def _listed(self) -> set[str]:
        import tensorflow as tf

        try:
            state = tf.train.get_checkpoint_state(str(self.checkpoints))
        except Exception:  # a list being replaced or damaged: the next pass reads it again
            return set()
        return {Path(p).name for p in state.all_model_checkpoint_paths} if state else set()

    def _read(self, pinned: str) -> dict[str, float] | None:
        """Metrics of the pinned checkpoint, or None (with a warning) when it is damaged."""
        evaluate = self._ready()
        try:
            return evaluate(pinned)
        except Exception as err:  # a damaged checkpoint: never evaluated, never fatal
            warn(f"warning: skipped {Path(pinned).name}: it cannot be read back ({reason(err)})")
            return None

    def _record(self, step: int, path: str, metrics: dict[str, float], records: list[dict]) -> dict:
        record = {
            "time": round(time.time(), 3),
            "step": step,
            "split": self.split,
            "metrics": metrics,
            "checkpoint": str(Path(path).relative_to(self.run.path)),
        }
        if self.monitor is not None and (value := self.monitor.value(metrics)) is not None:
            if self.monitor.better(value, self._best(records)):
                promote(self.checkpoints / READING, self.checkpoints / BEST, Path(path).name)
                record["best"] = True
        lines = [json.dumps(r) for r in [*records, record]]
        write_text_atomic(self.run.path / HISTORY, "\n".join(lines) + "\n", within=self.run.path)
        self._tensorboard(step, metrics)
        shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        self.report(f"step {step} ({Path(path).name}) {self.split}: {shown}{'  (best so far)' if record.get('best') else ''}")
        return record

    def _best(self, records: list[dict]) -> float | None:
        best = None
        for r in records:
            value = self.monitor.value(r.get("metrics") or {}) if r.get("split") == self.split else None
            if value is not None and self.monitor.better(value, best):
                best = value
        return best

    def _tensorboard(self, step: int, metrics: dict[str, float]) -> None:
        from trainkit.training.report import ScalarWriter

        if self._writer is None:
            self._writer = ScalarWriter(self.run.tensorboard / "eval")
        prefix = "" if self.split == "validation" else f"{self.split}_"
        self._writer.scalars(step, {f"{prefix}{k}": v for k, v in metrics.items()})
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def pin_files(path: str, pin: Path) -> str | None:
    """Hard links in ``pin`` to every file of checkpoint ``path``; the pinned prefix,
    or None when a file is missing (deleted by the rotation, or never finished)."""
    source = Path(path)
    pin.mkdir(parents=True, exist_ok=True)
    unpin(pin)  # what a pass killed mid-read left
    index = source.with_name(source.name + ".index")
    data = sorted(source.parent.glob(f"{source.name}.data-*-of-*"))
    shards = {f.name.rsplit("-of-", 1)[1] for f in data}
    if not index.is_file() or len(shards) != 1 or len(data) != int(shards.pop()):
        return None
    try:
        for file in [*data, index]:
            os.link(file, pin / file.name, follow_symlinks=False)
    except FileNotFoundError:
        unpin(pin)
        return None
    return str(pin / source.name)


def unpin(pin: Path) -> None:
    """Remove the links :func:`pin_files` made (the files stay where the rotation keeps them)."""
    for file in pin.iterdir() if pin.is_dir() else ():
        file.unlink(missing_ok=True)


def promote(pin: Path, best: Path, name: str) -> None:
    """Move the pinned checkpoint ``name`` into ``best`` as its only checkpoint."""
    best.mkdir(parents=True, exist_ok=True)
    for file in pin.glob(f"{name}.*"):
        os.replace(file, best / file.name)
    write_state(best, name, [name])  # the list after the files, as TensorFlow does
    for old in best.glob(f"{PREFIX}-*"):
        if not old.name.startswith(f"{name}."):
            old.unlink(missing_ok=True)


def _wait_for_run(directory: RunDir, threads: int, nice: int | str, every_seconds: float, report: Callable[[str], None]) -> None:
    """Wait for a training to make ``directory``, with TensorFlow imported meanwhile."""
    limit_process(threads, nice)
    warm_up()
    report(f"waiting for {directory.path} to be made (by its training)")  # a silent wait looks like a hang
    while not directory.exists():
        time.sleep(min(every_seconds, 1.0))


def watch(
    run_dir: str | os.PathLike,
    *,
    split: str = "validation",
    every_seconds: float = 30.0,
    until_finished: bool = False,
    recipe_file: str | os.PathLike | None = None,
    report: Callable[[str], None] = say,
    wait_for_run: bool = False,
    ended_after: float | None = None,
    threads: int = DEFAULT_THREADS,
    nice: int | str = DEFAULT_NICE,
) -> int:
    """Evaluate each new checkpoint of ``run_dir`` once, in order, as training writes them.

    Polls every ``every_seconds``; with ``until_finished``, returns once the run
    has ended and its last checkpoint is evaluated (else watches until stopped).
    ``wait_for_run``: wait for the run directory to be made (a cluster's
    evaluator task starts beside the workers); ``ended_after``: an
    end of the run recorded before this time is an earlier training's, not
    the end awaited. ``threads`` and ``nice``: this process's share of the
    machine (:func:`limit_process`; it is the evaluator's process). Returns how
    many checkpoints this call evaluated.
    """
    if not 0 < every_seconds <= MAX_EVERY_SECONDS:  # (NaN fails too; time.sleep refuses inf and overflows far below it)
        raise ConfigError(f"--every-seconds: must be a number above 0 and at most {MAX_EVERY_SECONDS:,} (a day), got {every_seconds:g}")
    nice = check_limits(threads, nice)
    directory = RunDir(run_dir)
    if wait_for_run and not directory.exists():  # the chief has not written the run directory yet
        _wait_for_run(directory, threads, nice, every_seconds, report)
    directory.refuse_symlinks()
    sidecar = Sidecar(
        directory.path, split=split, recipe_file=recipe_file, report=report, ended_after=ended_after, threads=threads,
    )
    limit_process(threads, nice)  # once the run is known to be one; before TensorFlow runs anything
    total = 0
    lock = RunLock(directory.path / LOCK, directory.path / LOCK)  # one evaluator per run directory
    lock.acquire()
    try:
        share = f"{threads} thread{'s' if threads != 1 else ''}" if threads else "TensorFlow's threads"
        report(
            f"watching {directory.path} for checkpoints to evaluate on {split} "
            f"(every {every_seconds:g} s; {share}, {describe_priority(nice)})"
        )
        try:
            while True:
                evaluated, finished = sidecar.poll()
                total += evaluated
                if finished and until_finished:
                    break
                time.sleep(every_seconds)
        finally:
            sidecar.close()
    finally:
        lock.release()
    report(f"evaluated {total} checkpoint(s); the run has ended" if until_finished else f"evaluated {total}")
    return total
