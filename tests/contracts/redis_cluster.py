"""A throwaway 3-master Redis Cluster on loopback ports, shared by every test of one run.

    url = shared_cluster(request).url     # 'redis://127.0.0.1:23456/0?cluster=true'

Started once per pytest run (on first use) and stopped, by the pids it started, when the run
ends. Needs `redis-server` and `redis-cli` on PATH; without them the tests that ask for it
are skipped (failed under CI=true, like the other servers in tests/conftest.py).
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import IN_CI

_STASH_KEY = pytest.StashKey["RedisClusterProcesses"]()


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_port() -> int:
    # A node also listens on port + 10000 (the cluster bus): both must be free and valid.
    for _ in range(200):
        port = random.randint(20_000, 45_000)
        if _bindable(port) and _bindable(port + 10_000):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisClusterProcesses:
    """Three `redis-server --cluster-enabled yes` processes joined by `redis-cli --cluster`."""

    def __init__(self, masters: int = 3) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="authbus-cluster-"))
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.masters = masters

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0?cluster=true"

    def start(self) -> None:
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        assert server and cli
        for _ in range(self.masters):
            port = _cluster_port()
            node_dir = self.dir / str(port)
            node_dir.mkdir()
            self.procs.append(
                subprocess.Popen(
                    [
                        server,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "5000",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(node_dir),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            self.ports.append(port)
        for port in self.ports:
            self._wait(lambda p=port: self._cli(cli, p, "PING") == "PONG")
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for port in self.ports:
            self._wait(lambda p=port: "cluster_state:ok" in self._cli(cli, p, "CLUSTER", "INFO"))

    @staticmethod
    def _cli(cli: str, port: int, *args: str) -> str:
        done = subprocess.run(
            [cli, "-h", "127.0.0.1", "-p", str(port), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return done.stdout.strip()

    @staticmethod
    def _wait(ready: object, timeout: float = 30.0) -> None:
        assert callable(ready)
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not come up")
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs:  # only the processes started here, by their pid
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


def shared_cluster(request: pytest.FixtureRequest) -> RedisClusterProcesses:
    """The run's cluster, started on first use and stopped when the run ends."""
    config = request.config
    found = config.stash.get(_STASH_KEY, None)
    if found is not None:
        return found
    if not (shutil.which("redis-server") and shutil.which("redis-cli")):
        reason = "redis-server/redis-cli are not installed: no Redis Cluster to test against"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    cluster = RedisClusterProcesses()
    config.add_cleanup(cluster.stop)
    cluster.start()
    config.stash[_STASH_KEY] = cluster
    return cluster
