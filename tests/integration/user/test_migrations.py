"""The migration history builds exactly the schema the models describe, and unwinds."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from authbus.core.db import create_engine
from authbus.core.migrate import downgrade, upgrade_async
from authbus.user.models import metadata


async def _run(url: str, fn: Any) -> Any:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def _diff(conn: Connection) -> list[Any]:
    ctx = MigrationContext.configure(
        conn, opts={"compare_type": True, "version_table": "alembic_version_user"}
    )
    return list(compare_metadata(ctx, metadata))


async def test_migrations_match_the_models(database_url: str) -> None:
    await upgrade_async(database_url, "user")
    assert await _run(database_url, _diff) == []


async def test_downgrade_removes_every_table(database_url: str) -> None:
    await upgrade_async(database_url, "user")
    await asyncio.to_thread(downgrade, database_url, "user")
    tables = await _run(database_url, lambda c: inspect(c).get_table_names())
    assert set(tables) <= {"alembic_version_user"}
