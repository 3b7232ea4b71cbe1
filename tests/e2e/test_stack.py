"""The real stack as processes: `authbus up`, then `authbus demo` against it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.e2e

READY_TIMEOUT_S = 120


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHBUS_")}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class RunningStack:
    proc: subprocess.Popen[str]
    data_dir: Path
    ports: tuple[int, int, int]
    env: dict[str, str]
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    pumper: threading.Thread = field(init=False)

    def pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("authbus ready"):
                self.ready.set()

    def output(self) -> str:
        return "\n".join(self.lines)

    def child_pids(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in path.read_text().split()]


def start_stack(tmp_path: Path, **env: str) -> RunningStack:
    ports = (free_port(), free_port(), free_port())
    redis_port = free_port()
    data_dir = tmp_path / "var"
    full_env = clean_env(**env)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "authbus",
            "up",
            "--data-dir",
            str(data_dir),
            "--ports",
            ",".join(map(str, ports)),
            "--redis-port",
            str(redis_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=full_env,
    )
    stack = RunningStack(proc, data_dir, ports, full_env)
    stack.pumper = threading.Thread(target=stack.pump, daemon=True)
    stack.pumper.start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not stack.ready.wait(0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_stack(stack)
            pytest.fail(f"authbus up did not become ready:\n{stack.output()[-6000:]}")
    return stack


def stop_stack(stack: RunningStack) -> int:
    try:
        if stack.proc.poll() is None:
            stack.proc.send_signal(signal.SIGTERM)
            try:
                stack.proc.wait(30)
            except subprocess.TimeoutExpired:
                stack.proc.kill()
                stack.proc.wait()
                pytest.fail("authbus up did not stop within 30 s of SIGTERM")
        return stack.proc.returncode
    finally:
        # The pump thread ends at EOF; then the pipe can be closed (no ResourceWarning).
        stack.pumper.join(10)
        if stack.proc.stdout is not None:
            stack.proc.stdout.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


def run_demo(stack: RunningStack) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authbus", "demo", "--data-dir", str(stack.data_dir)],
        capture_output=True,
        text=True,
        env=stack.env,
        timeout=120,
    )


def _postgres_env(factory: Callable[[], str]) -> dict[str, str]:
    return {
        "AUTHBUS_USER__DATABASE_URL": factory(),
        "AUTHBUS_TOKEN__DATABASE_URL": factory(),
        "AUTHBUS_EVENT__DATABASE_URL": factory(),
    }


@pytest.fixture
def embedded_stack(tmp_path: Path) -> Iterator[RunningStack]:
    stack = start_stack(tmp_path)
    yield stack
    stop_stack(stack)


def test_demo_passes_on_embedded_defaults_and_sigterm_leaves_no_orphans(
    embedded_stack: RunningStack,
) -> None:
    stack = embedded_stack
    result = run_demo(stack)
    assert result.returncode == 0, result.stdout + result.stderr + stack.output()[-4000:]
    for step in range(1, 8):
        assert f"[{step}/7]" in result.stdout
    assert "access_denied" in result.stdout
    creds = stack.data_dir / "credentials.json"
    assert creds.stat().st_mode & 0o777 == 0o600

    # A second demo run against the same stack passes too (the demo is re-runnable).
    again = run_demo(stack)
    assert again.returncode == 0, again.stdout + again.stderr

    children = stack.child_pids()
    assert len(children) == 4  # redis + three services
    assert stop_stack(stack) == 0
    deadline = time.monotonic() + 5
    while any(pid_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in children if pid_alive(p)], "children outlived authbus up"
    assert "authbus: stopping" in stack.output()


def test_demo_passes_on_postgres_and_redis(
    tmp_path: Path, postgres_url_factory: Callable[[], str], redis_url: str
) -> None:
    stack = start_stack(
        tmp_path, AUTHBUS_REDIS_URL=redis_url, **_postgres_env(postgres_url_factory)
    )
    try:
        result = run_demo(stack)
        assert result.returncode == 0, result.stdout + result.stderr + stack.output()[-4000:]
        assert len(stack.child_pids()) == 3  # no embedded Redis when a URL is given
    finally:
        assert stop_stack(stack) == 0


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "authbus",
                "up",
                "--data-dir",
                str(tmp_path / "var"),
                "--ports",
                f"{port},{free_port()},{free_port()}",
                "--redis-port",
                str(free_port()),
            ],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=60,
        )
    assert result.returncode == 1
    assert f"port already in use: user service port {port}" in result.stdout


def test_a_child_that_dies_stops_the_stack_with_an_error(embedded_stack: RunningStack) -> None:
    stack = embedded_stack
    children = stack.child_pids()
    token_pid = children[2]  # redis, user, token, event: started in that order
    os.kill(token_pid, signal.SIGKILL)
    try:
        code = stack.proc.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail("authbus up kept running after a child died")
    assert code == 1
    # A signal's death is named, not given as a negative exit code.
    assert "the token process was killed by SIGKILL; stopping the stack" in stack.output()
    assert "exited with code -9" not in stack.output()
    deadline = time.monotonic() + 5
    while any(pid_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in children if pid_alive(p)]


def test_a_second_up_on_the_same_ports_leaves_the_running_stack_usable(
    embedded_stack: RunningStack,
) -> None:
    stack = embedded_stack
    runtime = stack.data_dir / "runtime.json"
    written = runtime.read_text()
    redis_port = int(written.split("redis://127.0.0.1:")[1].split("/")[0])
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "authbus",
            "up",
            "--data-dir",
            str(stack.data_dir),
            "--ports",
            ",".join(map(str, stack.ports)),
            "--redis-port",
            str(redis_port),
        ],
        capture_output=True,
        text=True,
        env=stack.env,
        timeout=60,
    )
    assert second.returncode == 1
    assert "port already in use" in second.stdout
    # The running stack's runtime.json is its own: the failed start leaves it, and the demo
    # still finds the stack's Redis through it.
    assert runtime.read_text() == written
    result = run_demo(stack)
    assert result.returncode == 0, result.stdout + result.stderr
