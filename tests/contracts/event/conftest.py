"""Event log backends for the contract suite: the in-memory fake, SQLite, Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from authbus.core.db import create_engine, create_sessionmaker
from authbus.core.migrate import upgrade
from authbus.event.log import EventLog, SqlEventLog
from authbus.event.memory_log import InMemoryEventLog


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def log_backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """'memory', or a migrated database URL (built outside the test's event loop)."""
    if request.param == "memory":
        return "memory"
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"
    else:
        factory: Callable[[], str] = request.getfixturevalue("postgres_url_factory")
        url = factory()
    upgrade(url, "event")
    return url


@pytest.fixture
async def event_log(log_backend: str) -> AsyncIterator[EventLog]:
    if log_backend == "memory":
        yield InMemoryEventLog()
        return
    engine = create_engine(log_backend)
    log = SqlEventLog(create_sessionmaker(engine))
    yield log
    await log.close()
    await engine.dispose()
