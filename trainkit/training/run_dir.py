"""The run directory: everything one run wrote, and nothing outside it.

Layout::

    RUN_DIR/
      config.yaml      the resolved recipe (loads back to the same recipe and hash)
      run.json         status, versions, command, seed, recipe hash, times, speed
      metrics.jsonl    one JSON object per log event (step, epoch, split, metrics)
      tensorboard/     summaries for TensorBoard
      checkpoints/     the last K checkpoints, best/, final/ (docs/checkpoints.md)
      eval.json        final metrics of each evaluated split
      model.keras      the final model
      .lock            flock-ed by the process training into it (PID inside)

A directory that holds a run of the same recipe is resumed; one that holds a
different recipe is refused (the differing keys are listed) unless only keys in
:data:`trainkit.recipe.RESUMABLE_KEYS` differ.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any

from trainkit.errors import RunDirError
from trainkit.recipe import Recipe, diff, is_resumable_change
from trainkit.training.sinks import warn


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so a reader never sees half a file (write, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunDir:
    """One run's directory. Use :meth:`open` to create or resume it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock_fd: int | None = None

    config = property(lambda self: self.path / "config.yaml")
    run_json = property(lambda self: self.path / "run.json")
    metrics_log = property(lambda self: self.path / "metrics.jsonl")
    checkpoints = property(lambda self: self.path / "checkpoints")
    tensorboard = property(lambda self: self.path / "tensorboard")
    eval_json = property(lambda self: self.path / "eval.json")
    model_file = property(lambda self: self.path / "model.keras")
    lock_file = property(lambda self: self.path / ".lock")

    def exists(self) -> bool:
        return self.config.is_file()

    def read_recipe(self) -> Recipe:
        return Recipe.from_yaml(self.config.read_text())

    def read_status(self) -> dict[str, Any]:
        return json.loads(self.run_json.read_text()) if self.run_json.is_file() else {}

    def check_compatible(self, recipe: Recipe) -> list[str]:
        """Raise if ``recipe`` may not continue the run here; return the allowed changes."""
        if not self.exists():
            if self.path.exists() and any(p for p in self.path.iterdir() if p.name != ".lock"):
                raise RunDirError(
                    f"{self.path} exists and is not a trainkit run directory (no config.yaml); "
                    "choose another --run-dir"
                )
            return []
        old = self.read_recipe()
        changed = diff(old, recipe)
        forbidden = [key for key in changed if not is_resumable_change(key)]
        if forbidden:
            shown = ", ".join(forbidden[:8]) + (f", ... ({len(forbidden)} in all)" if len(forbidden) > 8 else "")
            raise RunDirError(
                f"{self.path} holds a run of a different recipe (differs in: {shown}); "
                "use another --run-dir, or --restart to start over (the old run is kept aside)"
            )
        return changed

    def acquire(self) -> None:
        """Take the directory's lock; refuse at once if a live process holds it.

        The lock is an advisory ``flock`` on ``.lock``, which also holds the
        holder's PID, host and start time for the message. The kernel drops a
        ``flock`` when its process dies however it dies (SIGKILL included), so a
        ``.lock`` left by a killed run is stale by construction and is taken
        over; no PID-liveness guess (and no PID reuse) is involved.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = self._lock_holder() or {}
                pid = holder.get("pid", "unknown")
                where = f" on {holder['host']}" if holder.get("host") not in (None, socket.gethostname()) else ""
                raise RunDirError(
                    f"{self.path} is in use by process {pid}{where} (since {holder.get('since', '?')}); "
                    "wait for it to finish or stop it"
                ) from None
            # The previous holder may have removed the file between our open and
            # our lock; then we locked an orphan: try again on the current file.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock_file).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            stale = self._lock_holder()
            os.ftruncate(fd, 0)
            info = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}
            os.write(fd, json.dumps(info).encode())
            self._lock_fd = fd
            if stale and stale.get("pid") != os.getpid():
                warn(
                    f"note: {self.path} had a stale lock of process {stale.get('pid')} "
                    f"(since {stale.get('since', '?')}), which no longer holds it; taken over",
                )
            return

    def _lock_holder(self) -> dict[str, Any] | None:
        try:
            holder = json.loads(self.lock_file.read_text())
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) else None

    def release(self) -> None:
        fd = self._lock_fd
        if fd is not None:
            self.lock_file.unlink(missing_ok=True)  # before unlocking: no one locks a dying file
            os.close(fd)
            self._lock_fd = None

    def set_aside(self) -> Path:
        """Move an old run out of the way (for ``--restart``); returns where it went."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.old-{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.old-{stamp}-{n}")
            n += 1
        os.replace(self.path, target)
        fd = self._lock_fd
        if fd is not None:  # our lock moved with the old run: drop it there
            (target / self.lock_file.name).unlink(missing_ok=True)
            os.close(fd)
            self._lock_fd = None
        return target

    # -- writing ----------------------------------------------------------------

    def write_config(self, recipe: Recipe) -> None:
        tmp = self.path / ".config.yaml.tmp"
        tmp.write_text(recipe.to_yaml())
        os.replace(tmp, self.config)

    def update_status(self, **fields: Any) -> dict[str, Any]:
        status = self.read_status()
        status.update(fields)
        write_json_atomic(self.run_json, status)
        return status

    def start(self, recipe: Recipe, *, command: list[str], recipe_source: str | None, resumed: bool) -> None:
        import keras
        import tensorflow as tf

        import trainkit

        previous = self.read_status()
        self.write_config(recipe)
        self.update_status(
            status="running",
            name=recipe.name,
            recipe_hash=recipe.hash,
            recipe_source=recipe_source,
            seed=recipe.seed,
            command=command,
            versions={
                "trainkit": trainkit.__version__,
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "python": platform.python_version(),
            },
            host=socket.gethostname(),
            started=previous.get("started", _now()) if resumed else _now(),
            resumed_at=[*previous.get("resumed_at", []), _now()] if resumed else [],
            ended=None,
        )


def command_line() -> list[str]:
    return [Path(sys.argv[0]).name, *sys.argv[1:]]
