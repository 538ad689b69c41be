"""How much of training waited for input, and what to do about it.

Training runs many steps inside one ``tf.function`` with the input prefetched
alongside, so the wait cannot be timed from Python step by step. The training
loop times it inside the graph instead (:class:`~trainkit.training.loop.Trainer`
brackets each ``next(iterator)`` with ``tf.timestamp``): the seconds a step
spent blocked on its batch, over the seconds the loops ran. It is measured on
the run itself, every step, at the cost of two timestamp ops per step; nothing
runs after training to estimate it.
"""

from __future__ import annotations

from dataclasses import dataclass

BOTTLENECK_FRACTION = 0.2
#: At or below this wait per step, the wait is handing a ready batch to the step
#: (``IteratorGetNext``): ~40 µs on an idle core, 0.2-0.3 ms on this 2-core
#: machine under load (benchmarks/input_wait.py's "handover floor").
HANDOVER_SECONDS = 0.0005


@dataclass
class InputWait:
    fraction: float
    """Share of a step spent waiting for input (0..1)."""
    step_seconds: float
    """Seconds per step, inside the training loop."""
    compute_seconds: float
    """Seconds per step not spent waiting for a batch."""
    steps: int
    """Steps measured."""

    def summary(self) -> str:
        return (
            f"input wait: {self.fraction:.0%} of training "
            f"({self.step_seconds * 1000:.2f} ms per step, {self.compute_seconds * 1000:.2f} ms of it not waiting for a batch; "
            f"over {self.steps} steps)"
        )

    @property
    def wait_seconds(self) -> float:
        """Seconds per step spent waiting for a batch."""
        return self.step_seconds - self.compute_seconds

    def hint(self, data) -> str | None:
        """What the user can change when input is the bottleneck, else None.

        Only changes that keep the results come first; one that changes them
        says so. When the wait is no more than handing a ready batch to the step
        (HANDOVER_SECONDS), the pipeline keeps up and no data setting shortens
        it: nothing needs changing, so there is no hint (a larger batch would
        change the experiment). A short run's steps are that short.
        """
        if self.fraction < BOTTLENECK_FRACTION:
            return None
        section = data.section
        in_memory = data.kind("train") == "arrays"
        mapped = bool(section.transforms or section.augment or not in_memory)
        # A cached split (asked for, or a tokenized split kept by default) runs the
        # stages before its cache in the first epoch only: neither a cache nor a
        # preprocessed copy of the files shortens the epochs after it.
        cached = data.cached("train")  # (never an in-memory split: those are gathered, not cached)
        fixes = []
        if not in_memory and not cached:
            off = "; the recipe's data.cache: none turns it off" if section.cache == "none" else ""
            fixes.append(f"cache decoded examples (data.cache: memory, or a path for files{off})")
        if mapped and section.parallel_calls != "auto":
            fixes.append("let tf.data pick the parallelism (data.parallel_calls: auto)")
        if not section.prefetch:
            fixes.append("turn prefetching on (data.prefetch: true)")
        if not in_memory and not cached and section.source.type not in ("tfrecord", "tfds"):
            fixes.append("store preprocessed examples as TFRecord")
        if section.augment:
            fixes.append("move heavy augmentation into the model as Keras preprocessing layers (they run on the accelerator)")
        reorder = mapped and section.deterministic
        if self.wait_seconds <= HANDOVER_SECONDS or not (fixes or reorder):
            # (In memory with no per-example work, the pipeline is one gather a
            # batch: what is left of the wait is the handover, whatever it costs.)
            return None
        text = ("input is the bottleneck: " + "; ".join(fixes) + " (results unchanged)") if fixes else "input is the bottleneck"
        if reorder:
            text += "; data.deterministic: false lets parallel maps finish out of order (faster, but the order of examples, and so the results, change)"
        return text


def from_trainer(trainer) -> InputWait | None:
    """The input wait over every training call of ``trainer`` so far; None before any."""
    if not trainer.steps_run or trainer.loop_seconds <= 0:
        return None
    fraction = max(0.0, min(1.0, trainer.input_seconds / trainer.loop_seconds))
    step_seconds = trainer.loop_seconds / trainer.steps_run
    return InputWait(
        fraction=fraction,
        step_seconds=step_seconds,
        compute_seconds=step_seconds * (1.0 - fraction),
        steps=trainer.steps_run,
    )
