"""SQL engine and sessions (SQLAlchemy 2 async): SQLite locally, Postgres in production."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import sqlalchemy
from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Declarative base; each service declares its own `MetaData` via a subclass."""


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine; SQLite gets WAL, foreign keys and a busy timeout on every connection."""
    if is_sqlite(url):
        path = make_url(url).database
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
    return create_async_engine(url, **kwargs)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


T = TypeVar("T")


class SqlRunner:
    """Runs units of work (plain functions of a SQLAlchemy `Connection`), each in one
    transaction that commits when the function returns and rolls back when it raises.

    On SQLite the whole unit runs in a thread on the synchronous sqlite3 driver: one thread
    hop per unit instead of one per statement through aiosqlite, about a quarter of the CPU
    for a short transaction (docs/performance.md). Writes go to one writer thread, which is
    also SQLite's single writer, so they never sleep in its busy handler; reads go to two
    reader threads (WAL lets them run beside the writer). On Postgres the unit runs on the
    async engine through `AsyncConnection.run_sync` (asyncpg; no threads).

        runner = SqlRunner(engine)
        n = await runner.run(lambda conn: conn.scalar(select(func.count()).select_from(t)),
                             write=False)
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._sync: Engine | None = None
        # Made at first use (and again after `close()`, like a disposed engine's pool).
        self._pools: dict[bool, ThreadPoolExecutor] = {}
        if self.dialect == "sqlite":
            self._sync = sqlalchemy.create_engine(
                engine.url.set(drivername="sqlite"),
                connect_args={"timeout": 30, "check_same_thread": False},
            )
            event.listen(self._sync, "connect", _sqlite_pragmas)

    async def run(self, work: Callable[[Connection], T], *, write: bool = True) -> T:
        """`work(connection)` in a transaction; its result, or what it raised."""
        if self._sync is None:
            async with self.engine.begin() as conn:
                return await conn.run_sync(work)
        pool = self._pools.get(write)
        if pool is None:
            name = "authbus-sql-writer" if write else "authbus-sql-reader"
            pool = self._pools[write] = ThreadPoolExecutor(1 if write else 2, name)
        return await asyncio.get_running_loop().run_in_executor(pool, self._transaction, work)

    def _transaction(self, work: Callable[[Connection], T]) -> T:
        assert self._sync is not None
        with self._sync.begin() as conn:
            return work(conn)

    async def close(self) -> None:
        """Let running units finish, then release the threads and connections."""
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await asyncio.to_thread(pool.shutdown)
        if self._sync is not None:
            self._sync.dispose()
