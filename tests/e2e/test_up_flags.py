"""`authbus up --postgres URL --redis URL --ports U,T,E --data-dir D` runs the stack on the
servers it is given: the services' tables are in that Postgres database, the token store is
in that Redis, no embedded Redis is started and no SQLite file is written; SIGTERM then stops
every process it started."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import jwt as pyjwt
import pytest
import redis

from authbus.common._keys import TokenStoreKeys
from authbus.core import credentials
from authbus.core.supervisor import RUNTIME_FILE
from tests.conftest import RedisServer, free_port
from tests.e2e.test_stack import (
    READY_TIMEOUT_S,
    RunningStack,
    clean_env,
    pid_alive,
    stop_stack,
)

pytestmark = pytest.mark.e2e

PREFIX = "ab"  # the default `AUTHBUS_REDIS_PREFIX`


def plain_postgres_url(url: str) -> str:
    """The URL as an operator types it (`postgresql://`), not SQLAlchemy's driver form."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def start_up(tmp_path: Path, *args: str) -> tuple[RunningStack, int]:
    """`authbus up ARGS --ports ... --data-dir ... --redis-port R`; returns the stack once
    its ready line is out, and R (where an embedded Redis would listen: a free port)."""
    ports = (free_port(), free_port(), free_port())
    embedded_port = free_port()
    data_dir = tmp_path / "var"
    env = clean_env()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "authbus",
            "up",
            *args,
            "--ports",
            ",".join(map(str, ports)),
            "--data-dir",
            str(data_dir),
            "--redis-port",
            str(embedded_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    stack = RunningStack(proc, data_dir, ports, env)
    stack.pumper = threading.Thread(target=stack.pump, daemon=True)
    stack.pumper.start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not stack.ready.wait(0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_stack(stack)
            pytest.fail(f"authbus up did not become ready:\n{stack.output()[-6000:]}")
    return stack, embedded_port


def listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def postgres_rows(url: str, sql: str) -> list[asyncpg.Record]:
    async def fetch() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(plain_postgres_url(url), timeout=10)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(fetch())


@pytest.fixture
def own_redis(redis_server_factory: Callable[[], RedisServer]) -> Iterator[RedisServer]:
    """A Redis server of this test's own: no other test (or test run) touches its keys."""
    yield redis_server_factory()


@pytest.fixture
def own_redis_client(own_redis: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(own_redis.url)
    yield client
    client.close()


def test_up_uses_the_given_postgres_and_redis_and_stops_everything_on_sigterm(
    tmp_path: Path,
    postgres_url_factory: Callable[[], str],
    own_redis: RedisServer,
    own_redis_client: redis.Redis,
) -> None:
    pg_url = plain_postgres_url(postgres_url_factory())
    redis_url = own_redis.url
    keys = own_redis_client
    stack, embedded_port = start_up(tmp_path, "--postgres", pg_url, "--redis", redis_url)
    user_port, token_port, event_port = stack.ports
    try:
        ready = next(line for line in stack.lines if line.startswith("authbus ready"))
        assert f"user http://127.0.0.1:{user_port}" in ready
        assert f"token http://127.0.0.1:{token_port}" in ready
        assert f"event http://127.0.0.1:{event_port}" in ready
        assert f"redis {redis_url}" in ready

        # No embedded Redis: three children, all services; nothing on the embedded port.
        children = stack.child_pids()
        assert len(children) == 3, [cmdline(p) for p in children]
        for pid in children:
            assert " authbus serve " in f" {cmdline(pid)} ", cmdline(pid)
        assert not listening(embedded_port)
        assert not (stack.data_dir / "redis").exists()
        # ... and no SQLite database beside the credentials file.
        assert not list(stack.data_dir.glob("*.db")), list(stack.data_dir.iterdir())

        # A token from the token service, a user created through the user service's API.
        creds = credentials.load(stack.data_dir / "credentials.json")
        assert creds is not None
        admin_secret = creds["clients"][credentials.ADMIN_CLIENT_ID]
        token_resp = httpx.post(
            f"http://127.0.0.1:{token_port}/token",
            data={"grant_type": "client_credentials", "scope": "users:admin"},
            auth=(credentials.ADMIN_CLIENT_ID, admin_secret),
            timeout=30,
        )
        assert token_resp.status_code == 200, token_resp.text
        access = token_resp.json()["access_token"]
        made = httpx.post(
            f"http://127.0.0.1:{user_port}/v1/users",
            json={"username": "pg-flag-user", "password": "correct horse battery staple"},
            headers={"Authorization": f"Bearer {access}"},
            timeout=30,
        )
        assert made.status_code == 201, made.text

        # The user is in the given Postgres database's users table.
        rows = postgres_rows(pg_url, "SELECT id, username FROM users")
        by_name = {r["username"]: str(r["id"]) for r in rows}
        assert by_name.get("pg-flag-user") == made.json()["id"], by_name
        # All three services migrated into that one database.
        tables = {
            r["table_name"]
            for r in postgres_rows(
                pg_url,
                "SELECT table_name FROM information_schema.tables WHERE table_schema='public'",
            )
        }
        assert {"users", "clients", "signing_keys", "events"} <= tables, tables

        # The token store is in the given Redis: the access token's record is there.
        jti = pyjwt.decode(access, options={"verify_signature": False})["jti"]
        assert keys.exists(TokenStoreKeys(PREFIX).access(jti)) == 1
        assert keys.keys(f"{PREFIX}:*"), "no authbus key in the given Redis"

        runtime = stack.data_dir / RUNTIME_FILE
        assert runtime.exists()
    finally:
        code = stop_stack(stack)
    assert code == 0, stack.output()[-4000:]
    deadline = time.monotonic() + 30
    while any(pid_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in children if pid_alive(p)], "children outlived authbus up"
    assert "authbus: stopping" in stack.output()
    assert not (stack.data_dir / RUNTIME_FILE).exists()
    # The given servers were not stopped with the stack.
    assert keys.ping()
    assert postgres_rows(pg_url, "SELECT 1 AS one")[0]["one"] == 1


def test_an_unreachable_redis_given_to_up_is_a_clear_error(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "authbus",
            "up",
            "--redis",
            dead,
            "--ports",
            f"{free_port()},{free_port()},{free_port()}",
            "--data-dir",
            str(tmp_path / "var"),
            "--redis-port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"cannot reach Redis at {dead}" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
