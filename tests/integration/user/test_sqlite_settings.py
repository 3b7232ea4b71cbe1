"""SQLite as the services use it: every connection runs in WAL mode (readers beside the one
writer) with foreign keys enforced, whether it comes from the async engine
(`authbus.core.db.create_engine`) or from a `SqlRunner` thread, and the database files the
services create stay in WAL mode."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from authbus.core.db import SqlRunner, create_engine
from authbus.core.migrate import upgrade_async
from authbus.core.settings import Settings, UserSettings
from authbus.event.app import create_app as create_event_app
from authbus.token.app import create_app as create_token_app
from authbus.user.app import create_app as create_user_app
from tests.support.tokens import TokenMinter


def _pragmas(conn: Connection) -> tuple[str, int]:
    journal = conn.execute(text("PRAGMA journal_mode")).scalar_one()
    foreign_keys = conn.execute(text("PRAGMA foreign_keys")).scalar_one()
    return str(journal).lower(), int(foreign_keys)


def _dangling_permission(conn: Connection) -> None:
    # user_permissions.user_id references users.id; no such user exists.
    conn.execute(
        text("INSERT INTO user_permissions (user_id, permission) VALUES (:id, 'orders:read')"),
        {"id": uuid.uuid4().hex},
    )


def _permission_rows(conn: Connection) -> int:
    return int(conn.execute(text("SELECT count(*) FROM user_permissions")).scalar_one())


@pytest.fixture
async def user_db(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated user database in a SQLite file, through the services' engine factory."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'user.db'}"
    await upgrade_async(url, "user")
    engine = create_engine(url)
    yield engine
    await engine.dispose()


async def test_engine_connections_use_wal_and_foreign_keys(user_db: AsyncEngine) -> None:
    async with user_db.connect() as conn:
        assert await conn.run_sync(_pragmas) == ("wal", 1)


async def test_engine_refuses_a_row_that_references_nothing(user_db: AsyncEngine) -> None:
    with pytest.raises(IntegrityError, match="FOREIGN KEY"):
        async with user_db.begin() as conn:
            await conn.run_sync(_dangling_permission)
    async with user_db.connect() as conn:
        assert await conn.run_sync(_permission_rows) == 0


@pytest.mark.parametrize("write", [True, False], ids=["writer", "reader"])
async def test_sql_runner_connections_use_wal_and_foreign_keys(
    user_db: AsyncEngine, write: bool
) -> None:
    runner = SqlRunner(user_db)
    try:
        assert await runner.run(_pragmas, write=write) == ("wal", 1)
    finally:
        await runner.close()


async def test_sql_runner_refuses_a_row_that_references_nothing(user_db: AsyncEngine) -> None:
    runner = SqlRunner(user_db)
    try:
        with pytest.raises(IntegrityError, match="FOREIGN KEY"):
            await runner.run(_dangling_permission)
        assert await runner.run(_permission_rows, write=False) == 0
    finally:
        await runner.close()


def _journal_mode_of(path: Path) -> str:
    """The journal mode stored in the file, read with a plain sqlite3 connection (WAL is a
    property of the database file; the rollback modes are not, and read back as `delete`)."""
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    finally:
        conn.close()


async def test_the_database_files_the_services_create_are_in_wal_mode(tmp_path: Path) -> None:
    # What `authbus up` does on embedded defaults: one SQLite file per service under the
    # data directory, migrated, then each service started on it.
    settings = Settings(
        data_dir=tmp_path,
        redis_url=None,
        user=UserSettings(argon2_memory_kib=1024, argon2_time_cost=1),
    )
    for service in ("user", "token", "event"):
        await upgrade_async(settings.database_url(service), service)
    minter = TokenMinter()
    no_user_service = httpx.MockTransport(lambda request: httpx.Response(503))
    apps = [
        create_user_app(settings, token_validator=minter.validator()),
        create_token_app(settings, user_transport=no_user_service),
        create_event_app(settings, token_validator=minter.validator()),
    ]
    for app in apps:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://svc.test") as c:
                ready = await c.get("/readyz")
                assert ready.status_code == 200, ready.text
    for service in ("user", "token", "event"):
        path = tmp_path / f"{service}.db"
        assert path.exists(), f"{service}.db was not created under the data directory"
        assert _journal_mode_of(path) == "wal", service
