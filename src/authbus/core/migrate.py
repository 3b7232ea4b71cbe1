"""Alembic, driven programmatically: each service has its own history and version table.

`upgrade(url, "user")` applies the user service's migrations to `url`. Each service's
`migrations/env.py` calls `run_env(metadata)`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection

from authbus.core.db import create_engine


def alembic_config(url: str, service: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", f"authbus.{service}:migrations")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["service"] = service
    return cfg


def version_table(service: str) -> str:
    # One table per service, so services may share a Postgres database in a pinch.
    return f"alembic_version_{service}"


def upgrade(url: str, service: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url, service), revision)


def downgrade(url: str, service: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url, service), revision)


async def upgrade_async(url: str, service: str, revision: str = "head") -> None:
    """Upgrade from async code (Alembic's env runs its own loop, so it goes to a thread)."""
    await asyncio.to_thread(upgrade, url, service, revision)


def run_env(metadata: MetaData) -> None:
    """Body of every service's `migrations/env.py` (online mode, async engine)."""
    from alembic import context

    cfg = context.config
    url = cfg.get_main_option("sqlalchemy.url")
    assert url is not None
    service = cfg.attributes.get("service") or metadata.info.get("service", "authbus")
    opts: dict[str, Any] = {
        "target_metadata": metadata,
        "version_table": version_table(service),
        "render_as_batch": url.startswith("sqlite"),
        "compare_type": True,
    }

    if context.is_offline_mode():
        context.configure(url=url, literal_binds=True, **opts)
        with context.begin_transaction():
            context.run_migrations()
        return

    def do_run(connection: Connection) -> None:
        context.configure(connection=connection, **opts)
        with context.begin_transaction():
            context.run_migrations()

    async def main() -> None:
        engine = create_engine(url, poolclass=pool.NullPool)
        async with engine.connect() as conn:
            await conn.run_sync(do_run)
            await conn.commit()
        await engine.dispose()

    asyncio.run(main())
