"""The run directory: everything one run wrote, and nothing outside it.

Layout::

    RUN_DIR/
      config.yaml      the resolved recipe (loads back to the same recipe and hash)
      run.json         status, versions, command, seed, recipe hash, times, speed
      metrics.jsonl    one JSON object per log event (step, epoch, split, metrics)
      tensorboard/     summaries for TensorBoard
      checkpoints/     tf.train.CheckpointManager checkpoints
      eval.json        final metrics of each evaluated split
      model.keras      the final model
      .lock            held by the process training into it

A directory that holds a run of the same recipe is resumed; one that holds a
different recipe is refused (the differing keys are listed) unless only keys in
:data:`trainkit.recipe.RESUMABLE_KEYS` differ.
"""

from __future__ import annotations

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
        """Take the directory's lock; refuse if a live process holds it."""
        self.path.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd = os.open(self.lock_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._lock_holder()
                if holder and holder.get("host") == socket.gethostname() and _alive(holder.get("pid")):
                    raise RunDirError(
                        f"{self.path} is in use by process {holder['pid']} (since {holder.get('since')}); "
                        "wait for it to finish or stop it"
                    ) from None
                # A stale lock from a process that died: take it over.
                self.lock_file.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}, f)
            return

    def _lock_holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.lock_file.read_text())
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        holder = self._lock_holder()
        if holder and holder.get("pid") == os.getpid():
            self.lock_file.unlink(missing_ok=True)

    def set_aside(self) -> Path:
        """Move an old run out of the way (for ``--restart``); returns where it went."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.old-{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.old-{stamp}-{n}")
            n += 1
        os.replace(self.path, target)
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


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def command_line() -> list[str]:
    return [Path(sys.argv[0]).name, *sys.argv[1:]]
