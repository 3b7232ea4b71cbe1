"""`authbus up`'s supervisor: who may remove runtime.json, and how a child's end is told."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from authbus.core.settings import EventSettings, Settings, TokenSettings, UserSettings
from authbus.core.supervisor import RUNTIME_FILE, Stack, describe_exit, run_stack
from tests.conftest import free_port

RUNNING_STACK = {
    "redis_url": "redis://127.0.0.1:8379/0",
    "redis_prefix": "ab",
    "user_url": "http://127.0.0.1:8081",
    "token_url": "http://127.0.0.1:8082",
    "event_url": "http://127.0.0.1:8083",
    "pid": 1,  # not this process
}


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something (the running stack) listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def settings_on(tmp_path: Path, user_port: int) -> Settings:
    return Settings(
        data_dir=tmp_path,
        user=UserSettings(port=user_port),
        token=TokenSettings(port=free_port()),
        event=EventSettings(port=free_port()),
    )


def test_a_second_up_on_taken_ports_leaves_the_running_stacks_runtime_file(
    tmp_path: Path, busy_port: int
) -> None:
    runtime = tmp_path / RUNTIME_FILE
    runtime.write_text(json.dumps(RUNNING_STACK))
    lines: list[str] = []

    code = run_stack(settings_on(tmp_path, busy_port), redis_port=free_port(), out=lines.append)

    assert code == 1
    assert any(f"port already in use: user service port {busy_port}" in line for line in lines)
    assert runtime.exists(), "the failed start removed the running stack's runtime.json"
    assert json.loads(runtime.read_text()) == RUNNING_STACK


def test_the_stack_that_wrote_runtime_json_removes_it_when_it_stops(tmp_path: Path) -> None:
    stack = Stack(settings_on(tmp_path, free_port()), out=lambda _line: None)
    stack.redis_url = "redis://127.0.0.1:1/0"
    stack.write_runtime()
    written = json.loads((tmp_path / RUNTIME_FILE).read_text())
    assert written["pid"] == os.getpid()

    stack.stop()

    assert not (tmp_path / RUNTIME_FILE).exists()


def test_a_stack_leaves_a_runtime_json_another_process_wrote_since(tmp_path: Path) -> None:
    stack = Stack(settings_on(tmp_path, free_port()), out=lambda _line: None)
    stack.write_runtime()
    # Another `authbus up` on this data directory took over (this one lost its ports, say).
    (tmp_path / RUNTIME_FILE).write_text(json.dumps(RUNNING_STACK))

    stack.stop()

    assert json.loads((tmp_path / RUNTIME_FILE).read_text()) == RUNNING_STACK


@pytest.mark.parametrize(
    ("returncode", "said"),
    [
        (0, "exited with code 0"),
        (3, "exited with code 3"),
        (-signal.SIGKILL, "was killed by SIGKILL"),
        (-signal.SIGTERM, "was killed by SIGTERM"),
        (-signal.SIGSEGV, "was killed by SIGSEGV"),
        (-99, "was killed by signal 99"),
    ],
)
def test_a_childs_end_is_told_by_code_or_signal_name(returncode: int, said: str) -> None:
    assert describe_exit(returncode) == said
