"""A network of its own for a local cluster, and workers that die with their launcher.

TensorFlow's gRPC server binds ``0.0.0.0:PORT`` whatever host the cluster spec
names (the address is fixed in ``grpc_server_lib.cc``), and it has no
authentication: a worker started on a shared machine would take orders from
anyone who can reach the port. So ``trainkit launch`` runs its tasks in a
private network namespace (a user namespace makes this possible without root)
whose only interface is loopback: the servers still bind every interface, but
the only interface there is ``lo``, which nothing outside the namespace reaches.

One small *holder* process creates the namespaces and keeps them alive; every
task joins them (``setns``) between ``fork`` and ``exec``. Linux only; where
user namespaces are disabled, :func:`start` says why and the caller decides.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
_SIOCSIFFLAGS = 0x8914
_IFF_UP, _IFF_LOOPBACK, _IFF_RUNNING = 0x1, 0x8, 0x40


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``signum`` to this process when its parent dies.

    Called in a child between fork and exec: a launcher killed by SIGKILL cannot
    stop its workers itself, and orphaned workers would keep the run's lock.
    """
    _check(_libc().prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() == 1:  # the parent died before prctl took effect
        os.kill(os.getpid(), signum)


def _create_namespaces() -> None:
    """In the holder, between fork and exec: new user + network namespaces, ``lo`` up."""
    die_with_parent()
    uid, gid = os.geteuid(), os.getegid()
    _check(_libc().unshare(_CLONE_NEWUSER | _CLONE_NEWNET), "unshare(CLONE_NEWUSER | CLONE_NEWNET)")
    # Map our own ids to themselves, so files the tasks write belong to the user.
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1")
    with socket.socket() as s:  # a new network namespace starts with lo down
        fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", _IFF_UP | _IFF_LOOPBACK | _IFF_RUNNING))


class PrivateNetwork:
    """The namespaces of one local cluster, held open by a holder process."""

    def __init__(self, holder: subprocess.Popen):
        self.holder = holder

    def join(self) -> Callable[[], None]:
        """A ``preexec_fn`` that moves a task into the namespaces and ties it to the launcher."""
        pid = self.holder.pid

        def enter() -> None:
            die_with_parent()
            libc = _libc()
            for kind, flag in (("user", _CLONE_NEWUSER), ("net", _CLONE_NEWNET)):
                fd = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY)
                try:
                    _check(libc.setns(fd, flag), f"setns({kind})")
                finally:
                    os.close(fd)

        return enter

    def close(self) -> None:
        if self.holder.stdin:
            self.holder.stdin.close()  # the holder reads its stdin until EOF, then exits
        try:
            self.holder.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.holder.kill()
            self.holder.wait()


def start() -> tuple[PrivateNetwork | None, str]:
    """A private loopback-only network for a local cluster, or ``(None, why not)``."""
    if not sys.platform.startswith("linux"):
        return None, f"network namespaces are Linux-only (this is {sys.platform})"
    try:
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_create_namespaces,  # noqa: PLW1509 - the launcher starts its threads after this
        )
    except (OSError, subprocess.SubprocessError) as err:
        return None, f"user namespaces are unavailable here ({err})"
    return PrivateNetwork(holder), ""


def namespace_of(pid: int, kind: str = "net") -> str:
    """The namespace ``pid`` is in (``net:[4026532…]``), for comparisons."""
    return os.readlink(f"/proc/{pid}/ns/{kind}")
