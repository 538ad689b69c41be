"""The lock that lets one process at a time train into a run directory.

An advisory ``flock`` on ``RUN_DIR/.lock`` through the ``filelock`` package; the
file also holds the holder's PID, host and start time for the refusal message.
The kernel drops a ``flock`` when its process dies however it dies (SIGKILL
included), so a ``.lock`` left by a killed run is stale by construction and is
taken over (with a note); no PID-liveness guess (and no PID reuse) is involved.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from trainkit.console import warn
from trainkit.errors import RunDirError
from trainkit.files import open_regular, read_regular

#: How long taking the lock waits before it refuses: longer than a status probe holds it.
PROBE_GRACE_SECONDS = 0.2


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class RunLock:
    """The lock file ``path`` of the run directory ``owner`` (named in messages)."""

    def __init__(self, path: Path, owner: Path):
        self.path, self.owner = path, owner
        self._lock: Any = None

    @property
    def held(self) -> bool:
        return self._lock is not None

    def acquire(self) -> None:
        """Take the lock, or refuse at once (one line) if a live process holds it."""
        import filelock

        # thread_local off: a training in a notebook's background thread may end in another thread.
        # No soft (marker-file) fallback: only a kernel lock is dropped when its process is killed.
        # A short wait, not none: a status probe (in_use) holds a shared lock for microseconds,
        # and must not have a training refused; a live holder holds it for the whole run.
        lock = filelock.FileLock(self.path, timeout=PROBE_GRACE_SECONDS, thread_local=False, fallback_to_soft=False)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise RunDirError(self._in_use()) from None
        except OSError as err:
            if err.errno == errno.ELOOP:  # a link made since the run directory was checked
                raise RunDirError(f"{self.path} is a symbolic link; remove it") from None
            raise
        stale = self.holder()
        self._write_holder()
        self._lock = lock
        if stale and stale.get("pid") != os.getpid():
            warn(
                f"note: {self.owner} had a stale lock of process {stale.get('pid')} "
                f"(since {stale.get('since', '?')}), which no longer holds it; taken over"
            )

    def _in_use(self) -> str:
        holder = self.holder() or {}
        pid = holder.get("pid", "unknown")
        where = f" on {holder['host']}" if holder.get("host") not in (None, socket.gethostname()) else ""
        return (
            f"{self.owner} is in use by process {pid}{where} (since {holder.get('since', '?')}); "
            "wait for it to finish or stop it"
        )

    def _write_holder(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_NOFOLLOW)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": now()}).encode())
        finally:
            os.close(fd)

    def holder(self) -> dict[str, Any] | None:
        """The PID, host and start time written by the process that took the lock last."""
        try:
            holder = json.loads(read_regular(self.path))
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) else None

    def in_use(self) -> bool | None:
        """Whether a live process holds the lock, probed without taking it: a shared
        ``flock`` that a live holder's exclusive one refuses, let go at once. False
        where there is no lock file; None where another host took it (a ``flock``
        over a network file system tells nothing of that host's processes)."""
        import fcntl

        holder = self.holder()
        if holder is not None and holder.get("host") not in (None, socket.gethostname()):
            return None
        try:
            fd = open_regular(self.path)
        except FileNotFoundError:
            return False
        except OSError:  # a link, a FIFO, ...
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return None
        finally:
            os.close(fd)  # (closing it lets go of the probe's lock)
        return False

    def release(self, *, moved_to: Path | None = None) -> None:
        """Let go; the file goes first (no one locks a dying file). ``moved_to``: the
        run directory was moved (``--restart``) and the lock file with it."""
        if self._lock is None:
            return
        file = moved_to / self.path.name if moved_to is not None else self.path
        file.unlink(missing_ok=True)
        self._lock.release(force=True)
        self._lock = None
