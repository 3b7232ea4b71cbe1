"""App wiring: default token validator, outages as 503, bootstrap of the admin user."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from authbus.common.security import RedisRevocationCheck, TokenValidator
from authbus.core.credentials import ADMIN_USERNAME
from authbus.core.settings import Settings, UserSettings
from authbus.user.app import create_app
from authbus.user.bootstrap import ADMIN_PERMISSIONS, ensure_admin
from authbus.user.errors import WeakPassword
from authbus.user.passwords import PasswordHasher
from tests.conftest import free_port
from tests.integration.user.conftest import PASSWORD
from tests.support.tokens import TokenMinter


def cheap(url: str, tmp_path: Path, **kw: object) -> Settings:
    return Settings(
        data_dir=tmp_path,
        user=UserSettings(database_url=url, argon2_memory_kib=1024, argon2_time_cost=1),
        **kw,  # type: ignore[arg-type]
    )


async def test_database_down_is_503_with_retry_after(tmp_path: Path) -> None:
    # Nothing listens on this port: every query fails to connect.
    url = f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/nothing"
    minter = TokenMinter()
    app = create_app(cheap(url, tmp_path), token_validator=minter.validator())
    token = minter.mint("authbus-admin", ["users:admin", "users:verify"])
    headers = {"Authorization": f"Bearer {token}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://user.test") as c:
            r = await c.get("/v1/users", headers=headers)
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "temporarily_unavailable"
            assert r.headers["Retry-After"]
            r = await c.post(
                "/v1/credentials/verify",
                json={"username": "alice", "password": PASSWORD},
                headers=headers,
            )
            assert r.status_code == 503
            ready = await c.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"].startswith("unavailable")


async def test_default_validator_uses_jwks_and_redis_revocation(
    tmp_path: Path, redis_url: str
) -> None:
    settings = cheap(
        f"sqlite+aiosqlite:///{tmp_path / 'u.db'}",
        tmp_path,
        redis_url=redis_url,
        redis_prefix="pfx",
        token_url="http://token.example:8082",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        validator = app.state.token_validator
        assert isinstance(validator, TokenValidator)
        assert validator.issuer == "http://token.example:8082"
        assert validator.jwks is not None
        assert isinstance(validator.revocation, RedisRevocationCheck)
        assert validator.revocation.prefix == "pfx"
        assert "redis" in app.state.readiness
        await app.state.readiness["redis"]()


async def test_default_validator_without_redis_has_no_revocation(tmp_path: Path) -> None:
    app = create_app(cheap(f"sqlite+aiosqlite:///{tmp_path / 'u.db'}", tmp_path))
    async with app.router.lifespan_context(app):
        assert app.state.token_validator.revocation is None
        assert "redis" not in app.state.readiness


async def test_ensure_admin_creates_once(settings: Settings) -> None:
    assert await ensure_admin(settings, ADMIN_USERNAME, PASSWORD) is True
    assert await ensure_admin(settings, ADMIN_USERNAME, "another long passphrase") is False
    minter = TokenMinter()
    app = create_app(settings, token_validator=minter.validator())
    async with app.router.lifespan_context(app):
        profile = await app.state.user_service.verify_credentials(
            ADMIN_USERNAME, PASSWORD, ADMIN_PERMISSIONS
        )
        assert profile.effective_permissions == set(ADMIN_PERMISSIONS)


async def test_ensure_admin_refuses_a_weak_password(settings: Settings) -> None:
    with pytest.raises(WeakPassword):
        await ensure_admin(settings, ADMIN_USERNAME, "admin")


async def test_argon2_parameters_come_from_settings(settings: Settings) -> None:
    hasher = PasswordHasher.from_settings(settings.user)
    assert (await hasher.hash(PASSWORD)).startswith("$argon2id$v=19$m=1024,t=1,p=1$")
