"""The local launcher exposes nothing beyond loopback, and its workers die with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import checkout_env

from trainkit import private_network
from trainkit.errors import RunDirError
from trainkit.rundir import RunDir


def _worker_pids(log: Path, count: int) -> list[int]:
    lines = [line for line in log.read_text().splitlines() if line.startswith("[launch] worker ") and ": pid " in line]
    return [int(line.split("pid ")[1].split(",")[0]) for line in lines[:count]]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def _listening(pid: int) -> list[str]:
    """Local addresses of the TCP sockets listening in ``pid``'s network namespace."""
    found = []
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for row in list(f)[1:]:
                fields = row.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    found.append(fields[1])
    return found


def _private_networks_work() -> bool:
    network, _ = private_network.start()
    if network is None:
        return False
    network.close()
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _private_networks_work(), reason="this kernel allows no unprivileged user namespaces")
def test_launched_workers_see_only_loopback_and_die_with_a_killed_launcher(tmp_path):
    env = checkout_env()
    log = tmp_path / "launch.log"
    with open(log, "w") as out:
        job = subprocess.Popen(
            [sys.executable, "-m", "trainkit.cli", "launch", "-n", "2", "digits_mlp", "--run-dir", "run",
             "trainer.epochs=null", "trainer.steps=100000", "trainer.log_every_steps=1000"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        while "[worker 0] training digits_mlp" not in log.read_text():
            assert job.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the workers did not start within 180 s"
            time.sleep(0.2)
        assert "private network (loopback only)" in log.read_text()
        pids = _worker_pids(log, 2)
        ours = private_network.namespace_of(os.getpid())
        for pid in pids:
            # Another network namespace, whose only interface is lo: TF's servers bind
            # 0.0.0.0 there, which nothing outside the namespace can reach.
            assert private_network.namespace_of(pid) != ours
            with open(f"/proc/{pid}/net/dev") as f:
                interfaces = [line.split(":")[0].strip() for line in list(f)[2:]]
            assert interfaces == ["lo"]
            assert _listening(pid), "the worker's gRPC server should be listening (in its namespace)"
        # From the host's side no socket of the cluster listens at all.
        ports = {line.rsplit(":", 1)[1] for line in log.read_text().splitlines() if line.startswith("[launch] worker ")}
        host = {addr.rsplit(":", 1)[1] for addr in _listening(os.getpid())}
        assert not {f"{int(p):04X}" for p in ports} & host

        job.send_signal(signal.SIGKILL)  # a launcher that cannot clean up after itself
        job.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in pids if _alive(pid)], "workers outlived their launcher"
        # The lock is free again (once the dead workers' last threads are gone): a
        # relaunch is not refused.
        directory = RunDir(tmp_path / "run")
        deadline = time.monotonic() + 15
        while True:
            try:
                directory.acquire()
                break
            except RunDirError:
                assert time.monotonic() < deadline, "the dead workers' lock was never released"
                time.sleep(0.2)
        directory.release()
    finally:
        if job.poll() is None:
            job.kill()


def test_a_private_network_has_only_loopback_and_its_members_reach_each_other():
    if not _private_networks_work():
        pytest.skip("this kernel allows no unprivileged user namespaces")
    network, _ = private_network.start()
    try:
        probe = (
            "import socket, os; s = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen(); "
            "c = socket.create_connection(('127.0.0.1', s.getsockname()[1]), timeout=5); "
            "print([l.split(':')[0].strip() for l in open('/proc/self/net/dev').readlines()[2:]], os.getuid())"
        )
        result = subprocess.run([sys.executable, "-c", probe], preexec_fn=network.join(), capture_output=True, text=True, timeout=30)  # noqa: PLW1509
    finally:
        network.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["['lo']", str(os.getuid())]  # files it writes belong to the user
