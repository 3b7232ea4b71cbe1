"""The event service's migration history builds exactly the schema its models describe,
unwinds to nothing, and builds it again, on SQLite and Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from authbus.core.db import create_engine
from authbus.core.migrate import downgrade, upgrade_async, version_table
from authbus.event.models import metadata

SERVICE = "event"
T = TypeVar("T")


async def _run(url: str, fn: Callable[[Connection], T]) -> T:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def _diff(conn: Connection) -> list[Any]:
    ctx = MigrationContext.configure(
        conn, opts={"compare_type": True, "version_table": version_table(SERVICE)}
    )
    return list(compare_metadata(ctx, metadata))


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def _revision(conn: Connection) -> str | None:
    ctx = MigrationContext.configure(conn, opts={"version_table": version_table(SERVICE)})
    return ctx.get_current_revision()


async def test_migrations_match_the_models(database_url: str) -> None:
    await upgrade_async(database_url, SERVICE)
    assert await _run(database_url, _diff) == []
    assert await _run(database_url, _tables) >= set(metadata.tables)


async def test_downgrade_removes_every_table(database_url: str) -> None:
    await upgrade_async(database_url, SERVICE)
    await asyncio.to_thread(downgrade, database_url, SERVICE)
    assert await _run(database_url, _tables) <= {version_table(SERVICE)}
    assert await _run(database_url, _revision) is None


async def test_upgrade_after_a_full_downgrade_builds_the_same_schema(database_url: str) -> None:
    await upgrade_async(database_url, SERVICE)
    head = await _run(database_url, _revision)
    await asyncio.to_thread(downgrade, database_url, SERVICE)
    await upgrade_async(database_url, SERVICE)
    assert head is not None
    assert await _run(database_url, _revision) == head
    assert await _run(database_url, _diff) == []
