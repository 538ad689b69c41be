"""A full disk while writing a run: one line saying where and how much, nothing half-written.

TensorFlow reports ``ENOSPC`` at a checkpoint save as a ``ResourceExhaustedError``
(``...; No space left on device [Op:SaveV2]``); Python writes (run.json, the
exported model) raise ``OSError(ENOSPC)``, often chained several deep. Both
become a :class:`DiskFullError`: the file system, its free space, how much the
write needed, exit code :data:`DISK_FULL_EXIT_CODE`. The half-written files are
removed; the checkpoints already saved stay, so training again resumes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from trainkit.console import size_text
from trainkit.errors import TrainkitError

DISK_FULL_EXIT_CODE = 5

_NO_SPACE = ("No space left on device", "Disk quota exceeded")


class DiskFullError(TrainkitError):
    """The run directory's file system filled up; free space and train again to resume."""

    exit_code = DISK_FULL_EXIT_CODE


def is_disk_full(err: BaseException | None) -> bool:
    """Whether ``err`` (or an exception it was raised from) is a full disk."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = getattr(err, "message", None) or str(err)
        if any(marker in text for marker in _NO_SPACE):
            return True
        err = err.__cause__ or err.__context__
    return False


def remove_partial_files(run_dir: Path) -> list[Path]:
    """Delete what an interrupted write left in ``run_dir``: temporary files
    (``.NAME.PID.RANDOM.tmp``, ``.model.tmp.keras``) and checkpoints TensorFlow had not
    finished (``ckpt-N_temp/``). Returns what it removed."""
    removed: list[Path] = []
    if not run_dir.is_dir():
        return removed
    for folder in [run_dir, run_dir / "checkpoints", *(run_dir / "checkpoints").glob("*/")]:
        if not folder.is_dir() or folder.is_symlink():
            continue
        for entry in folder.iterdir():
            partial = (entry.name.startswith(".") and ".tmp" in entry.name) or entry.name.endswith("_temp")
            if not partial or entry.is_symlink():
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def describe(run_dir: Path, *, writing: str, needed: int | None) -> DiskFullError:
    """The one line for a full disk under ``run_dir`` while writing ``writing``."""
    where = _mount_point(run_dir)
    try:
        free = shutil.disk_usage(run_dir).free
    except OSError:
        free = None
    have = f"{size_text(free)} free" if free is not None else "no space left"
    need = f"; it needs about {size_text(needed)}: free space" if needed else "; free some space"
    return DiskFullError(
        f"the disk is full: {where} ({have}) could not take {writing} of {run_dir}{need}, "
        " and train again to resume from the last checkpoint"
    )


@contextlib.contextmanager
def writing(target: str | os.PathLike, what: str, *, option: str) -> Iterator[None]:
    """A block that writes ``what`` to ``target`` (named by the command-line ``option``):
    a full disk becomes one line (exit 5), any other failure to write one line (exit 2).
    The writes inside are atomic, so nothing half-written stays behind."""
    try:
        yield
    except TrainkitError:
        raise
    except Exception as err:
        if is_disk_full(err):
            where = Path(target).absolute().parent
            try:
                free = f"{size_text(shutil.disk_usage(where).free)} free"
            except OSError:
                free = "no space left"
            raise DiskFullError(
                f"the disk is full: {_mount_point(where)} ({free}) could not take {what} {target}; "
                "free some space and run the command again (nothing was left half-written)"
            ) from None
        if isinstance(err, OSError):
            raise OutputError(f"{option} {target}: cannot write {what}: {err.strerror or err}") from None
        raise


class OutputError(TrainkitError):
    """An output path that cannot be written (read-only, not a folder, ...)."""

    exit_code = 2


def _mount_point(path: Path) -> str:
    path = Path(os.path.abspath(path))
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return str(path)
