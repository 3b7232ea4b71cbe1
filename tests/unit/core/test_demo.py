"""`authbus demo` before its first step: what it says when it cannot tell where Redis is."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from authbus.core import credentials
from authbus.core.settings import Settings
from authbus.core.supervisor import RUNTIME_FILE
from authbus.demo import run_demo


class Ready(BaseHTTPRequestHandler):
    """Answers 200 to everything: three services that are ready."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ready_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def settings(tmp_path: Path, ready_url: str) -> Settings:
    settings = Settings(
        data_dir=tmp_path,
        redis_url=None,
        user_url=ready_url,
        token_url=ready_url,
        event_url=ready_url,
    )
    credentials.ensure(settings)
    return settings


def test_a_missing_runtime_file_is_named_not_taken_for_a_stack_without_redis(
    settings: Settings,
) -> None:
    lines: list[str] = []
    assert run_demo(settings, out=lines.append) == 1
    said = "\n".join(lines)
    assert "without Redis" not in said
    assert f"{settings.data_dir / RUNTIME_FILE} is missing" in said
    assert "AUTHBUS_REDIS_URL" in said


def test_a_runtime_file_naming_no_redis_says_the_stack_runs_without_it(
    settings: Settings,
) -> None:
    runtime = {
        "redis_url": "",
        "redis_prefix": "ab",
        "user_url": settings.user_url,
        "token_url": settings.token_url,
        "event_url": settings.event_url,
        "pid": 1,
    }
    (settings.data_dir / RUNTIME_FILE).write_text(json.dumps(runtime))
    lines: list[str] = []
    assert run_demo(settings, out=lines.append) == 1
    assert "the stack runs without Redis" in "\n".join(lines)
