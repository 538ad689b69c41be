"""The run directory as data: everything one run wrote, and nothing outside it.

Layer 2 (docs/architecture.md): it reads and writes a run directory -- the
recipe, the status, the lock (:mod:`trainkit.rundir.lock`), the checkpoint list,
checkpoint selection and weight reading (:mod:`trainkit.rundir.checkpoints`) --
and imports nothing above the recipe layer.

Layout::

    RUN_DIR/
      config.yaml      the resolved recipe (loads back to the same recipe and hash)
      run.json         status, versions, command, seed, the run's identity (recipe_hash), times, speed
      metrics.jsonl    one JSON object per log event (step, epoch, split, metrics)
      tensorboard/     summaries for TensorBoard
      checkpoints/     the last K checkpoints, best/, final/ (docs/checkpoints.md)
      eval.json        final metrics of each evaluated split
      model.keras      the final model
      .lock            locked by the process training into it (PID inside)

A directory that holds a run of the same recipe is resumed; one that holds a
different recipe is refused (the differing keys are listed) unless only keys in
:data:`trainkit.recipe.RESUMABLE_KEYS` differ.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any

from trainkit.errors import ConfigError, RunDirError, TrainkitError, first_line
from trainkit.files import read_regular, write_json_atomic, write_text_atomic
from trainkit.recipe import Recipe, diff, is_resumable_change
from trainkit.rundir.lock import RunLock, now
from trainkit.version import __version__


class RunDir:
    """One run's directory. Use :meth:`open` to create or resume it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = RunLock(self.lock_file, self.path)

    config = property(lambda self: self.path / "config.yaml")
    run_json = property(lambda self: self.path / "run.json")
    metrics_log = property(lambda self: self.path / "metrics.jsonl")
    checkpoints = property(lambda self: self.path / "checkpoints")
    tensorboard = property(lambda self: self.path / "tensorboard")
    eval_json = property(lambda self: self.path / "eval.json")
    model_file = property(lambda self: self.path / "model.keras")
    lock_file = property(lambda self: self.path / ".lock")

    def in_use(self) -> bool | None:
        """Whether a live process trains into this directory now (:meth:`RunLock.in_use`)."""
        return self._lock.in_use()

    def exists(self) -> bool:
        return self.config.is_file()

    def read_recipe(self) -> Recipe:
        """The run's recipe; a damaged ``config.yaml`` is one line saying how to recover."""
        from trainkit.loader import parse_yaml

        recover = (
            "restore it from a copy, or train with --restart to start over (the old run is kept aside)"
        )
        try:
            text = read_regular(self.config).decode("utf-8")
            data = parse_yaml(text, source=self.config.name)
            if not isinstance(data, dict):
                raise ValueError(f"it holds {'nothing' if data is None else 'a ' + type(data).__name__}, not a recipe")
            return Recipe.model_validate(data)
        except UnicodeDecodeError:
            reason = "it is not UTF-8 text"
        except (TrainkitError, ValueError, OSError) as err:
            reason = _os_reason(err)
        raise RunDirError(f"{self.config} cannot be read back ({reason}); {recover}")

    def read_status(self) -> dict[str, Any]:
        """run.json as a dict (``{}`` when there is none); a damaged one is one line."""
        try:
            raw = read_regular(self.run_json)
        except FileNotFoundError:
            return {}
        except OSError as err:
            raise RunDirError(f"{self.run_json} cannot be read ({_os_reason(err)})") from None
        try:
            status = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            status = None
        if not isinstance(status, dict):
            raise RunDirError(
                f"{self.run_json} is not trainkit's status (JSON object) file; delete it (the run's "
                "config.yaml and checkpoints still resume) or restore it from a copy"
            )
        return status

    def check_same_data(self, sizes: dict[str, int]) -> None:
        """Refuse to resume on data of other sizes than the run started with.

        A file cut exactly between two records, or images removed, reads as a
        smaller dataset without any error: the count recorded at the start is
        the only witness.
        """
        if not self.exists():
            return
        recorded = self.read_status().get("examples")
        if not isinstance(recorded, dict):
            return  # a run from before the count was recorded
        changed = [f"{split} {recorded.get(split, 0)} -> {n}" for split, n in sizes.items() if recorded.get(split, 0) != n]
        if changed:
            raise RunDirError(
                f"{self.path} was trained on data of other sizes (examples per split: {', '.join(changed)}); "
                "a data file was cut short or changed: restore it, or use --restart to train on the data as it is now"
            )

    def check_place(self) -> None:
        """Refuse, before anything is built or written, a run directory that could
        not be written: under a regular file, on a read-only file system, with a
        name too long for the file system, or holding symbolic links."""
        for part in self.path.parts:
            if len(os.fsencode(part)) > 255:
                raise RunDirError(
                    f"--run-dir {self.path}: the name '{part[:24]}...' is {len(os.fsencode(part))} bytes long; "
                    "file systems allow at most 255 per name"
                )
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"--run-dir {self.path}: it is a file, not a folder; choose another --run-dir")
        if self.path.exists() and Path.cwd().resolve().is_relative_to(self.path.resolve()):
            # --restart would move the working directory aside (EBUSY), and a run
            # would mix its files with whatever else is there.
            raise RunDirError(
                f"--run-dir {self.path}: it is the working directory or holds it; a run directory is a folder "
                "of its own (e.g. runs/NAME)"
            )
        resolved = self.path.resolve()
        for system in _SYSTEM_FOLDERS:
            if resolved == system or system in resolved.parents:
                raise RunDirError(f"--run-dir {self.path}: {system} is the kernel's, not a place for files; choose another --run-dir")
        ancestor = self.path.absolute()
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise RunDirError(f"--run-dir {self.path}: {ancestor} is a file, so no folder can be made under it")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            why = "a read-only file system" if _read_only(ancestor) else "not writable by this user"
            raise RunDirError(f"--run-dir {self.path}: {ancestor} is {why}; choose another --run-dir")
        self.refuse_symlinks()

    def check_existing(self) -> None:
        """For a verb that reads a run (eval, export, predict, plot, compare): refuse a folder
        that is not a run directory, or that holds a symbolic link (its files could point anywhere)."""
        if not self.exists():
            if not os.path.lexists(self.path):
                raise RunDirError(f"{self.path} does not exist (a run directory is made by trainkit train)")
            raise RunDirError(f"{self.path} is not a trainkit run directory (no config.yaml)")
        self.refuse_symlinks()

    def refuse_symlinks(self) -> None:
        """Refuse a run directory with a symbolic link anywhere inside it.

        trainkit writes files in a run directory (a lock, logs, checkpoints) that
        a copied or shared directory could otherwise point elsewhere: a link
        named ``.lock`` or ``metrics.jsonl`` would have trainkit overwrite or
        append to its target. The directory itself may be a link (``runs ->
        /data/runs``); what is inside it may not.
        """
        if not self.path.is_dir():
            return
        for root, dirs, files in os.walk(self.path):
            for name in [*dirs, *files]:
                entry = Path(root) / name
                if entry.is_symlink():
                    raise RunDirError(
                        f"{self.path} holds a symbolic link, {entry}; trainkit never writes through links "
                        "in a run directory: replace it with the file itself, or use another --run-dir"
                    )

    def check_compatible(self, recipe: Recipe) -> list[str]:
        """Raise if ``recipe`` may not continue the run here; return the allowed changes."""
        self.check_place()
        if not self.exists():
            if self.path.exists() and any(p for p in self.path.iterdir() if p.name != ".lock"):
                raise RunDirError(
                    f"{self.path} exists and is not a trainkit run directory (no config.yaml); "
                    "choose another --run-dir"
                )
            return []
        old = self.read_recipe()
        self.read_status()  # a damaged run.json is refused now, before anything is built
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
        """Take the directory's lock (:mod:`trainkit.rundir.lock`); refuse at once if a
        live process holds it, and take over a killed one's stale lock."""
        self.refuse_symlinks()
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()

    def release(self) -> None:
        self._lock.release()

    def set_aside(self) -> Path:
        """Move an old run out of the way (for ``--restart``); returns where it went."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.old-{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.old-{stamp}-{n}")
            n += 1
        os.replace(self.path, target)
        self._lock.release(moved_to=target)  # our lock moved with the old run: drop it there
        return target

    # -- writing ----------------------------------------------------------------

    def write_config(self, recipe: Recipe) -> None:
        write_text_atomic(self.config, recipe.to_yaml())

    def update_status(self, **fields: Any) -> dict[str, Any]:
        status = self.read_status()
        status.update(fields)
        write_json_atomic(self.run_json, status)
        return status

    def start(
        self, recipe: Recipe, *, identity: str, command: list[str], recipe_source: str | None, resumed: bool,
        trained_past: bool = False,
    ) -> None:
        """Write the recipe and a running status; ``identity``: the run's
        (:class:`trainkit.recipe.RunIdentity`), kept as ``recipe_hash``.
        ``trained_past``: the run already went past this recipe's budget (it is
        only evaluated again), so its recorded recipe, the one it was trained
        with, stays."""
        import keras
        import tensorflow as tf

        previous = self.read_status()
        if trained_past and self.config.is_file():
            identity = previous.get("recipe_hash", identity)
        else:
            self.write_config(recipe)
        self.update_status(
            status="running",
            name=recipe.name,
            recipe_hash=identity,
            recipe_source=recipe_source,
            seed=recipe.seed,
            command=command,
            versions={
                "trainkit": __version__,
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "python": platform.python_version(),
            },
            host=socket.gethostname(),
            started=previous.get("started", now()) if resumed else now(),
            resumed_at=[*_list_of(previous.get("resumed_at")), now()] if resumed else [],
            ended=None,
        )


def _list_of(value: Any) -> list:
    """A run.json list field as a list: an edited or damaged value is not a crash on resume."""
    return list(value) if isinstance(value, list) else []


def load_run_recipe(run_dir: str | os.PathLike, *, recipe_file: str | os.PathLike | None = None) -> Recipe:
    """The recipe of a run directory (its ``config.yaml``).

    A run directory is data: it never makes trainkit run code, whatever its
    run.json says (a copied or edited run directory must not be able to). A run
    whose recipe registered its own components needs them registered again:
    either already in this process (a notebook that trained it), or by the
    recipe file the caller names in ``recipe_file`` (``trainkit eval --recipe``),
    which is imported because the caller chose it.
    """
    directory = RunDir(run_dir)
    directory.check_existing()
    if recipe_file is not None:
        from trainkit.loader import import_recipe_file

        import_recipe_file(Path(recipe_file), option="--recipe")
    return directory.read_recipe()


def with_recipe_file_hint(directory: RunDir, err: ConfigError) -> ConfigError:
    """``err`` with a hint when the run came from a Python recipe that was not named."""
    source = directory.read_status().get("recipe_source")
    if not source or "unknown " not in str(err):  # only a component the recipe file would register
        return err
    return ConfigError(
        f"{err}; this run was trained from the recipe file {source}, whose components a run directory "
        f"never imports by itself: name it with --recipe {source} (recipe_file= in Python)"
    )


def check_output(output: str | os.PathLike, option: str, *, folder: bool = False, suffixes: tuple[str, ...] = ()) -> None:
    """Refuse, before any work, an output path that cannot be written: its folder missing,
    read-only or not a folder, (for a file) a folder at its name, or what a run directory
    holds (:func:`refuse_run_files`; ``suffixes``: the files the command writes)."""
    refuse_run_files(output, option, folder=folder, suffixes=suffixes)
    path = Path(output)
    if folder:
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{option} {output}: a file is there; name a folder for the exported files")
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
    else:
        if path.is_dir():
            raise ConfigError(f"{option} {output}: it is a folder; name a file in it (e.g. {path / 'out'}{path.suffix})")
        existing = path.parent
        if not existing.is_dir():
            raise ConfigError(f"{option} {output}: the folder {existing} does not exist; create it first")
    if not existing.is_dir():
        raise ConfigError(f"{option} {output}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        read_only = _read_only(existing)
        raise ConfigError(f"{option} {output}: {existing} is {'on a read-only file system' if read_only else 'not writable'}")


def refuse_run_files(output: str | os.PathLike, option: str, *, folder: bool = False, suffixes: tuple[str, ...] = ()) -> None:
    """Refuse an output that would replace what a run directory holds.

    A file output (``suffixes``: what the command writes) may be a new file
    anywhere, and may replace a file of its own kind, but not another file of a
    run -- ``-o RUN/config.yaml`` would leave the run unreadable. A folder output
    (an export) may not be a run directory itself -- its ``model.keras`` and
    ``export.json`` are its training's -- nor a folder of one that holds files
    but no export (``checkpoints/``).
    """
    target = Path(output).absolute()
    run = next((d for d in (target, *target.parents) if RunDir(d).exists() and RunDir(d).run_json.is_file()), None)
    if run is None:
        return
    if folder and target == run:
        raise ConfigError(
            f"{option} {output}: it is a run directory, whose model.keras and export.json are its training's; "
            f"name another folder (by default an export goes to {Path(output) / 'export-CHECKPOINT'})"
        )
    if folder and target.is_dir() and any(target.iterdir()) and not (target / "export.json").is_file():
        raise ConfigError(f"{option} {output}: a folder of the run directory {run} that holds no export; name a new folder")
    if not folder and target.exists() and target.suffix.lower() not in suffixes:
        kind = " or ".join(suffixes) + " " if suffixes else ""
        raise ConfigError(f"{option} {output}: a file of the run directory {run}; name a new {kind}file")


_SYSTEM_FOLDERS = (Path("/proc"), Path("/sys"), Path("/dev"))
"""Pseudo file systems: writes there reach the kernel, not a disk."""


def _read_only(path: Path) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def _os_reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.errno == errno.ELOOP:
        return "it is a symbolic link"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return first_line(err, limit=300)


def command_line() -> list[str]:
    return [Path(sys.argv[0]).name, *sys.argv[1:]]
