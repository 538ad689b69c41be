"""Where a run's numbers go: the console, ``metrics.jsonl`` and TensorBoard.

Logging sits on the training hot path (every ``log_every_steps``), so it keeps
its files open and leaves flushing to TensorBoard's writer thread and to epoch
ends: a log event costs microseconds, not a disk sync.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

#: Set by the CLI when the process starts, to report the time to the first step.
PROCESS_STARTED: float | None = None


def format_metrics(values: dict[str, float], prefix: str = "") -> str:
    return "  ".join(f"{prefix}{k} {v:.4g}" for k, v in values.items())


class Reporter:
    """Sends each log event to every sink; prints only when ``progress`` is on."""

    def __init__(self, run_dir, *, progress: bool, total_steps: int, epochs: int | None):
        import tensorflow as tf

        self.run_dir = run_dir
        self.progress = progress
        self.total_steps = total_steps
        self.epochs = epochs
        self._writers = {
            split: tf.summary.create_file_writer(str(run_dir.tensorboard / split))
            for split in ("train", "validation")
        }
        self._last_time = time.perf_counter()
        self._last_step = 0
        self._events = open(run_dir.metrics_log, "a", buffering=1)  # one line, one write

    def say(self, text: str) -> None:
        if self.progress:
            print(text, file=sys.stdout, flush=True)

    def steps_per_second(self, step: int) -> float:
        now = time.perf_counter()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, step
        return rate

    def log(self, *, split: str, step: int, epoch: int, values: dict[str, float], **extra: Any) -> None:
        import tensorflow as tf

        event = {"time": round(time.time(), 3), "step": step, "epoch": epoch, "split": split, **values, **extra}
        self._events.write(json.dumps(event) + "\n")
        writer = self._writers.get(split)
        if writer is not None:
            with writer.as_default(step=step):
                for key, value in values.items():
                    tf.summary.scalar(key, value)
                for key, value in extra.items():
                    if isinstance(value, int | float):
                        tf.summary.scalar(key, value)

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()

    def train_progress(self, *, step: int, epoch: int, values: dict[str, float], rate: float) -> None:
        of_epochs = f"/{self.epochs}" if self.epochs else ""
        self.say(
            f"step {step}/{self.total_steps}  epoch {epoch + 1}{of_epochs}  "
            f"{format_metrics(values)}  ({rate:.1f} steps/s)"
        )

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._events.close()
