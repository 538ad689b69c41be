"""Run the trainkit CLI with a fault injected at a chosen moment (for tests only).

    python tests/_fault_runner.py FAULT [FAULT ...] -- train RECIPE ...

Faults (each patches one seam, then the real CLI runs in this process):

- ``kill-after-train:N``   SIGKILL once the training calls have run N or more steps
- ``signal-after-train:N:SIG``  send SIG (TERM, INT) to itself at that point instead
- ``kill-in-eval:K``       SIGKILL inside the K-th evaluation call (validation)
- ``kill-in-save:N``       SIGKILL after ckpt-N's files are written, before
                           TensorFlow's ``checkpoint`` list names it
- ``torn-save:N``          the same, with ckpt-N.index cut in half first (a kill
                           in the middle of writing it)
- ``slow:SECONDS``         sleep this long after each training call (keeps a run
                           alive long enough for a signal from outside)
- ``enospc-in-export``     the exported model's file write fails half-way with
                           ENOSPC (a full disk), as ``zipfile`` would see it

Steps counted here are those run by this process (a resumed process starts at 0).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


def install(faults: list[str]) -> None:
    from trainkit.training import loop

    steps_run = 0
    evals = 0
    original_train = loop.Trainer.train
    original_evaluate = loop.Trainer.evaluate

    def train(self, iterator, num_steps):
        nonlocal steps_run
        results = original_train(self, iterator, num_steps)
        steps_run += num_steps
        for fault in faults:
            kind, *args = fault.split(":")
            if kind == "kill-after-train" and steps_run >= int(args[0]):
                os.kill(os.getpid(), signal.SIGKILL)
            if kind == "signal-after-train" and steps_run >= int(args[0]) and not getattr(train, "sent", False):
                train.sent = True
                os.kill(os.getpid(), getattr(signal, f"SIG{args[1]}"))
            if kind == "slow":
                time.sleep(float(args[0]))
        return results

    original_evaluate_split = loop.Trainer.evaluate_split
    inside_split = False

    def count_evaluation():
        nonlocal evals
        evals += 1
        for fault in faults:
            kind, *args = fault.split(":")
            if kind == "kill-in-eval" and evals == int(args[0]):
                os.kill(os.getpid(), signal.SIGKILL)

    def evaluate(self, dataset):
        if not inside_split:  # (evaluate_split may evaluate through this: one call)
            count_evaluation()
        return original_evaluate(self, dataset)

    def evaluate_split(self, data, split, *, take=None):
        nonlocal inside_split
        count_evaluation()
        inside_split = True
        try:
            return original_evaluate_split(self, data, split, take=take)
        finally:
            inside_split = False

    loop.Trainer.train = train
    loop.Trainer.evaluate = evaluate
    loop.Trainer.evaluate_split = evaluate_split

    if any(f.startswith(("kill-in-save:", "torn-save:")) for f in faults):
        from tensorflow.python.checkpoint import checkpoint_management

        original_update = checkpoint_management.update_checkpoint_state_internal

        def update(save_dir, model_checkpoint_path, *args, **kwargs):
            # Only the main list (not best/ or final/), when it would name ckpt-N.
            name = Path(model_checkpoint_path).name
            for fault in faults:
                kind, *fargs = fault.split(":")
                if kind in ("kill-in-save", "torn-save") and name == f"ckpt-{fargs[0]}" and Path(save_dir).name == "checkpoints":
                    if kind == "torn-save":
                        index = Path(save_dir) / f"{name}.index"
                        os.truncate(index, index.stat().st_size // 2)
                    os.kill(os.getpid(), signal.SIGKILL)
            return original_update(save_dir, model_checkpoint_path, *args, **kwargs)

        checkpoint_management.update_checkpoint_state_internal = update

    if "enospc-in-export" in faults:
        import errno

        import keras

        def save(self, filepath, *args, **kwargs):
            Path(filepath).write_bytes(b"PK\x03\x04 half a zip")  # what a full disk leaves behind
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError as inner:  # chained, as the real failure is
                raise OSError(errno.ENOSPC, f"No space left on device: {filepath}") from inner

        keras.Model.save = save


if __name__ == "__main__":
    split = sys.argv.index("--")
    install(sys.argv[1:split])
    from trainkit.cli import main

    sys.exit(main(sys.argv[split + 1 :]))
