"""An event service app on a real database and Redis, called in-process through httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from authbus.core.migrate import upgrade
from authbus.core.settings import EventSettings, Settings
from authbus.event.app import create_app
from tests.support.tokens import TokenMinter

ALL_SCOPES = ("events:publish", "events:read", "events:admin")


@pytest.fixture
def event_db(database_url: str) -> str:
    """The parametrized database (SQLite, Postgres), migrated to head."""
    upgrade(database_url, "event")
    return database_url


@pytest.fixture
def minter() -> TokenMinter:
    return TokenMinter()


@pytest.fixture
def settings(event_db: str, redis_url: str, redis_prefix: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        event=EventSettings(
            database_url=event_db, dispatch_interval_s=0.05, max_payload_bytes=8192
        ),
    )


@pytest.fixture
async def app(settings: Settings, minter: TokenMinter) -> AsyncIterator[FastAPI]:
    application = create_app(settings, token_validator=minter.validator())
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://event.test") as client:
        yield client


@pytest.fixture
def bearer(minter: TokenMinter) -> Callable[..., dict[str, str]]:
    """Authorization headers for a token holding `scopes` (all event scopes by default)."""

    def make(*scopes: str, client_id: str = "shop") -> dict[str, str]:
        token = minter.mint(client_id, scopes or ALL_SCOPES, client_id=client_id)
        return {"Authorization": f"Bearer {token}"}

    return make
