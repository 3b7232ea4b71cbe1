"""Fixtures: a migrated user database (SQLite, and Postgres when configured) and the app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from authbus.core.migrate import upgrade_async
from authbus.core.settings import Settings, UserSettings
from authbus.user.app import create_app
from tests.support.tokens import TokenMinter

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def migrated_url(database_url: str) -> str:
    """The `database_url` with the user service's migrations applied."""
    await upgrade_async(database_url, "user")
    return database_url


@pytest.fixture
def settings(migrated_url: str, tmp_path: Path) -> Settings:
    # Cheap argon2 keeps the suite fast; UserSettings' defaults stay OWASP-grade.
    return Settings(
        data_dir=tmp_path,
        redis_url=None,
        user=UserSettings(
            database_url=migrated_url,
            argon2_memory_kib=1024,
            argon2_time_cost=1,
            throttle_free_attempts=3,
        ),
    )


@pytest.fixture
def minter() -> TokenMinter:
    return TokenMinter()


@pytest.fixture
async def app(settings: Settings, minter: TokenMinter) -> AsyncIterator[FastAPI]:
    app = create_app(settings, token_validator=minter.validator())
    # httpx.ASGITransport does not run the lifespan; run it around the test.
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 4321))
    async with httpx.AsyncClient(transport=transport, base_url="http://user.test") as c:
        yield c


@pytest.fixture
def admin(minter: TokenMinter) -> dict[str, str]:
    """Headers of an administrator's client token (users:admin)."""
    token = minter.mint("authbus-admin", ["users:admin"], client_id="authbus-admin")
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def verifier(minter: TokenMinter) -> dict[str, str]:
    """Headers of the token service's own token (users:verify)."""
    token = minter.mint("token-service", ["users:verify"], client_id="token-service")
    return {"Authorization": f"Bearer {token}"}
