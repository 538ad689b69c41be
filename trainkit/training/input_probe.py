"""How much of a training step waits for input, measured by a short probe.

Training runs many steps inside one ``tf.function`` with the input prefetched
alongside, so the wait for input cannot be timed from Python step by step.
The probe instead times the same work twice, after the training loop ends
(so the first step is not delayed, and a cached pipeline is measured warm):

1. ``steps`` gradient computations fed by the real training pipeline (a separate
   iterator of the same stream: the stream is a pure function of (seed, epoch),
   so training's own position is untouched);
2. the same number fed by one batch already in memory, repeated.

The difference is the time spent waiting for input; divided by the first, it is
``input_wait_fraction``. The probe changes nothing: it runs the model in
inference mode (no dropout draws, no batch-norm updates) and applies no gradient.
It costs a few dozen steps. A split's base pipeline is built once per run, so a
memory cache that training filled is reused and the probe sees the steady state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import tensorflow as tf

BOTTLENECK_FRACTION = 0.2
ROUNDS = 3


@dataclass
class InputWait:
    fraction: float
    """Share of a step spent waiting for input (0..1)."""
    step_seconds: float
    """Seconds per step with the real pipeline."""
    compute_seconds: float
    """Seconds per step with the input already in memory."""
    steps: int

    def summary(self) -> str:
        return (
            f"input wait: {self.fraction:.0%} of each step "
            f"({self.step_seconds * 1000:.1f} ms per step, {self.compute_seconds * 1000:.1f} ms of it without input; "
            f"probe of {self.steps} steps)"
        )

    def hint(self, data) -> str | None:
        """The likely fix when input is the bottleneck, else None."""
        if self.fraction < BOTTLENECK_FRACTION:
            return None
        section = data.section
        fixes = []
        kind = data.kind("train")
        if kind != "arrays" and section.cache is False:
            fixes.append("cache decoded examples (data.cache: memory, or a path for files)")
        if section.parallel_calls != "auto":
            fixes.append("let tf.data pick the parallelism (data.parallel_calls: auto)")
        if not section.prefetch:
            fixes.append("turn prefetching on (data.prefetch: true)")
        if section.augment:
            fixes.append("move heavy augmentation into the model as Keras preprocessing layers (they run on the accelerator)")
        if section.deterministic:
            fixes.append("allow out-of-order parallel maps (data.deterministic: false)")
        fixes.append("store preprocessed examples as TFRecord")
        return "input is the bottleneck: " + "; ".join(fixes)


def measure(built, *, steps: int = 10, max_seconds: float = 3.0) -> InputWait | None:
    """Probe ``built`` (from :func:`trainkit.build.build`); None if it cannot run."""
    strategy, trainer, data = built.strategy, built.trainer, built.data
    model = trainer.model

    def grad_step(batch):
        x, y = batch
        with tf.GradientTape() as tape:
            y_pred = model(x, training=False)
            loss, _ = trainer.compute_loss(x, y, y_pred)
        gradients = tape.gradient(loss, model.trainable_variables)
        return tf.add_n([tf.reduce_sum(tf.cast(g, tf.float32)) for g in gradients if g is not None] or [loss])

    @tf.function
    def run(iterator, n):
        total = tf.constant(0.0)
        for _ in tf.range(n):
            out = strategy.run(grad_step, args=(next(iterator),))
            total += strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)
        return total

    def timed(iterator, n: int) -> float:
        start = time.perf_counter()
        run(iterator, tf.constant(n)).numpy()
        return time.perf_counter() - start

    stream = data.training_stream()
    # The one-batch iterator is read and gone before the real one starts: a file
    # cache that is not complete yet takes one writing iterator at a time.
    first = next(iter(stream))
    real = iter(strategy.experimental_distribute_dataset(stream))
    fixed = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(first).repeat()))
    # Warm up (trace) and size the probe to the time budget.
    timed(fixed, 2)
    per_step = max(timed(fixed, 2) / 2, 1e-6)
    n = int(max(3, min(steps, (max_seconds / 2 / ROUNDS) / per_step)))
    # A shared machine's noise only ever adds time: keep the fastest round of each.
    without = min(timed(fixed, n) / n for _ in range(ROUNDS))
    # The real pipeline filled its prefetch buffers while the fixed rounds ran:
    # drain them first, then time steps back to back. Input can arrive in bursts
    # (a shuffle buffer fills, then serves many batches at once), so this is the
    # mean over a span of steps, not its fastest step; of two spans the faster
    # one is kept (noise from other processes only adds time).
    timed(real, 2 * n + 2)
    with_input = min(timed(real, 2 * n) / (2 * n) for _ in range(2))
    fraction = max(0.0, min(1.0, (with_input - without) / with_input)) if with_input > 0 else 0.0
    return InputWait(fraction=fraction, step_seconds=with_input, compute_seconds=without, steps=n * (ROUNDS + 6))
