"""Processes the bench starts: each one recorded by pid and stopped by pid at the end."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

HOST = "127.0.0.1"  # the bench never sends traffic anywhere else


def _die_with_parent() -> None:  # runs in the child before exec
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Procs:
    """Started processes, each in its own session so its children can be stopped with it."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            argv,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()
        self.started.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
        """SIGTERM the process (and the process group it leads), SIGKILL after `grace`."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # its own group: pgid == its pid
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        # Children left behind in its group (workers of a pool) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self.started = [(n, p) for n, p in self.started if p is not proc]

    def stop_all(self) -> None:
        for _name, proc in reversed(list(self.started)):
            self.stop(proc)


def wait_port(
    port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout:.0f} s")


def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code < 500:
                    return
            time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s")


def start_redis(procs: Procs, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A private Redis-compatible server on a free port (never the machine's 6379)."""
    try:
        from authbus.core.embedded_redis import find_server_binary

        binary = str(find_server_binary())
    except Exception:
        binary = "/usr/bin/redis-server"
    port = free_port()
    data = workdir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        HOST,
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(data),
        "--protected-mode",
        "yes",
    ]
    proc = procs.start("redis", argv)
    wait_port(port, proc, 15)
    return proc, f"redis://{HOST}:{port}/0"
