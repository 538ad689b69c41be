"""The one way trainkit writes a file, and the one way it reads a small one back.

Every file trainkit writes (a run directory's ``config.yaml``, ``run.json``,
``eval.json``, the checkpoint list, ``model.keras``, the exports, a plot, a
predictions CSV) goes through this module:

- **atomic**: written under a temporary name in the target's own folder, then
  renamed over the target (``os.replace``), so a reader sees the old file or the
  new one, never half of one, and a failure (a full disk) leaves the old file;
- **no-follow**: the temporary file is created new (``O_EXCL | O_NOFOLLOW``, or
  inside a fresh private folder for writers that need a path), and a symbolic
  link at the target's name is replaced, never written through. With
  ``within=RUN_DIR``, a linked folder between the run directory and the target
  is refused as well.

Reads of trainkit's own small files (:func:`read_regular`) never follow a link
and stop at a size limit.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from trainkit.errors import RunDirError

#: The most :func:`read_regular` reads by default: far more than trainkit writes in one small file.
READ_LIMIT = 1 << 20


def refuse_linked_folders(path: str | os.PathLike, within: str | os.PathLike | None) -> None:
    """Refuse a symbolic link among the folders from ``within`` (exclusive) down to ``path``'s parent.

    ``within`` itself may be a link (``runs -> /data/runs``); what is inside it may not.
    """
    if within is None:
        return
    root, folder = Path(within), Path(path).parent
    try:
        inside = folder.relative_to(root)
    except ValueError:
        return  # not under the run directory: nothing of the run's to guard
    current = root
    for part in inside.parts:
        current = current / part
        if current.is_symlink():
            raise RunDirError(
                f"{current} is a symbolic link; trainkit never writes through links in a run directory "
                "(replace it with the folder itself)"
            )


def _create_new(path: Path) -> int:
    """A new file at ``path`` for writing; whatever was there (a symlink too) is replaced, never followed."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, within: str | os.PathLike | None = None) -> None:
    """Write ``data`` so a reader never sees half of it (temporary file, fsync, rename).

    The temporary file is created new (``O_EXCL | O_NOFOLLOW``) and renamed over
    ``path``: a symlink at either name is replaced, its target never written. On
    any failure (a full disk) the temporary file is removed and ``path`` is untouched.
    Its name is this writer's own (``.NAME.PID.RANDOM.tmp``): processes that write
    the same file at once (a sweep's workers, its ``sweep.json``) each rename a
    whole file of theirs, the last one winning, instead of one renaming away the
    temporary file another is writing.
    """
    path = Path(path)
    refuse_linked_folders(path, within)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with os.fdopen(_create_new(tmp), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str, *, within: str | os.PathLike | None = None) -> None:
    """:func:`write_bytes_atomic` of ``text`` as UTF-8."""
    write_bytes_atomic(path, text.encode("utf-8"), within=within)


def write_json_atomic(path: str | os.PathLike, data: Any, *, within: str | os.PathLike | None = None) -> None:
    """:func:`write_bytes_atomic` of ``data`` as indented JSON."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n", within=within)


@contextmanager
def atomic_path(path: str | os.PathLike, *, within: str | os.PathLike | None = None) -> Iterator[Path]:
    """A temporary path for a writer that only takes a path (``model.save``,
    ``figure.savefig``, ``onnx.save``), renamed over ``path`` when the block ends.

    The temporary path has ``path``'s name (so writers that read the extension
    work) inside a fresh private folder beside ``path``: no link can be planted
    there. On an error nothing is renamed and the folder is removed.
    """
    path = Path(path)
    refuse_linked_folders(path, within)
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        tmp = scratch / path.name
        yield tmp
        if tmp.is_symlink() or not tmp.exists():
            raise RunDirError(f"{path}: the writer left no file behind")
        os.replace(tmp, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def atomic_folder(path: str | os.PathLike, *, within: str | os.PathLike | None = None) -> Iterator[Path]:
    """A fresh temporary folder beside ``path`` to fill; it replaces ``path`` when the block ends.

    An old folder at ``path`` is moved away first and removed after, so ``path``
    is never half written. On an error the old folder stays and the new one goes.
    """
    path = Path(path)
    refuse_linked_folders(path, within)
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield scratch
        old = None
        if path.is_symlink():
            path.unlink()  # the link itself, never what it points to
        elif path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(scratch, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def open_for_append(path: str | os.PathLike) -> IO[str]:
    """A text file opened for appending lines (line-buffered), refusing to follow a symlink at ``path``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise RunDirError(f"{path} is a symbolic link; trainkit never writes through one (remove it)") from None
        raise
    return os.fdopen(fd, "a", buffering=1)


def open_regular(path: str | os.PathLike) -> int:
    """A read-only descriptor of a regular file, never through a symlink.

    Raises ``OSError``: ``ELOOP`` for a link, ``FileNotFoundError``, ``EINVAL`` for
    what is not a regular file (a FIFO put there would block the open and every
    read forever, so it is opened without waiting).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return fd


def read_regular(path: str | os.PathLike, limit: int = READ_LIMIT) -> bytes:
    """The bytes of a small regular file (:func:`open_regular`), at most ``limit``.

    Raises ``OSError`` as :func:`open_regular` does, or ``ValueError`` for a file
    larger than ``limit``.
    """
    with os.fdopen(open_regular(path), "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"it is larger than {limit // 1024} KiB, far more than trainkit writes there")
    return data
