"""The client library against the real token service (in-process, real database).

TokenAuth / AsyncTokenAuth obtain tokens from it, TokenValidator checks them with its
published JWKS, and revocation through Redis and RFC 7662 acts at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI
from redis.asyncio import Redis

from authbus.common import (
    AsyncTokenAuth,
    IntrospectionRevocationCheck,
    InvalidTokenError,
    RedisRevocationCheck,
    TokenAuth,
    TokenError,
    TokenValidator,
)
from authbus.common.security import Caller, requires
from authbus.core.app import install_error_handlers
from authbus.core.migrate import upgrade_async
from authbus.core.settings import Settings, TokenSettings
from authbus.token.app import create_app
from authbus.token.bootstrap import ensure_clients
from tests.conftest import free_port
from tests.integration.token.conftest import ISSUER, Env, FakeUserService, make_settings, start_env

JWKS = f"{ISSUER}/.well-known/jwks.json"


@pytest.fixture
async def env(tmp_path: Path, redis_url: str, redis_prefix: str) -> AsyncIterator[Env]:
    # The database is not under test here: SQLite only.
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'token.db'}"
    settings = make_settings(tmp_path, database_url, redis_url=redis_url, redis_prefix=redis_prefix)
    async for e in start_env(settings, FakeUserService()):
        yield e


def asgi(env: Env) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=env.app)


def validator_for(env: Env, **kw: object) -> TokenValidator:
    return TokenValidator(
        issuer=env.settings.issuer,
        audiences=env.settings.accepted_audiences,
        jwks_url=JWKS,
        transport=asgi(env),
        **kw,  # type: ignore[arg-type]
    )


async def test_async_token_auth_discovers_and_gets_a_valid_token(env: Env) -> None:
    auth = AsyncTokenAuth(
        "svc", env.secrets["svc"], issuer=ISSUER, scopes=["events:read"], transport=asgi(env)
    )
    token = await auth.get_token()
    caller = await validator_for(env).validate(token)
    assert caller.client_id == "svc"
    assert caller.subject == "svc"
    assert caller.scopes == {"events:read"}


async def test_wrong_secret_is_invalid_client(env: Env) -> None:
    auth = AsyncTokenAuth("svc", "not-the-secret", issuer=ISSUER, transport=asgi(env))
    with pytest.raises(TokenError) as caught:
        await auth.get_token()
    assert caught.value.error == "invalid_client"
    assert caught.value.status_code == 401


async def test_unknown_scope_is_a_typed_error(env: Env) -> None:
    auth = AsyncTokenAuth(
        "svc",
        env.secrets["svc"],
        token_url=f"{ISSUER}/token",
        scopes=["users:admin"],
        transport=asgi(env),
    )
    with pytest.raises(TokenError) as caught:
        await auth.get_token()
    assert caught.value.error == "invalid_scope"


async def test_protected_endpoint_accepts_token_auth_and_checks_scopes(env: Env) -> None:
    resource = FastAPI()
    install_error_handlers(resource)
    resource.state.token_validator = validator_for(env)

    @resource.get("/read")
    async def read(caller: Caller = Depends(requires("events:read"))) -> dict[str, str]:
        return {"client": str(caller.client_id)}

    @resource.get("/admin")
    async def admin(caller: Caller = Depends(requires("events:admin"))) -> dict[str, str]:
        return {}

    auth = AsyncTokenAuth("svc", env.secrets["svc"], issuer=ISSUER, transport=asgi(env))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=resource), base_url="http://resource.test", auth=auth
    ) as client:
        ok = await client.get("/read")
        denied = await client.get("/admin")
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"client": "svc"}
    assert denied.status_code == 403
    assert denied.json()["missing_scopes"] == ["events:admin"]


async def test_revocation_through_redis_is_immediate(env: Env, redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        validator = validator_for(
            env, revocation=RedisRevocationCheck(redis, env.settings.redis_prefix)
        )
        token = await env.client_token("svc")
        await validator.validate(token)
        revoked = await env.http.post("/revoke", data={"token": token}, headers=env.basic("svc"))
        assert revoked.status_code == 200
        with pytest.raises(InvalidTokenError, match="revoked"):
            await validator.validate(token)
    finally:
        await redis.aclose()


async def test_revocation_through_introspection(env: Env) -> None:
    check = IntrospectionRevocationCheck(
        f"{ISSUER}/introspect", "admin", env.secrets["admin"], transport=asgi(env)
    )
    validator = validator_for(env, revocation=check)
    token = await env.client_token("svc")
    await validator.validate(token)
    await env.http.post("/revoke", data={"token": token}, headers=env.basic("svc"))
    with pytest.raises(InvalidTokenError, match="revoked"):
        await validator.validate(token)
    await check.aclose()


def test_sync_token_auth_over_real_http(tmp_path: Path) -> None:
    """requests + TokenAuth against the token service served by uvicorn on a free port."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = Settings(
        data_dir=tmp_path,
        token_url=base,
        user_url="http://user.test",
        token=TokenSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'token.db'}"),
    )
    secret = "a secret: with odd characters & more"
    asyncio.run(upgrade_async(settings.database_url("token"), "token"))
    asyncio.run(ensure_clients(settings, {"user-service": secret}))
    app = create_app(settings, user_transport=httpx.MockTransport(FakeUserService().handle))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        auth = TokenAuth("user-service", secret, issuer=base, scopes=["events:publish"])
        token = auth.get_token()
        assert auth.get_token() == token
        assert auth.token_requests == 1
        validator = TokenValidator(
            issuer=base,
            audiences=settings.accepted_audiences,
            jwks_url=f"{base}/.well-known/jwks.json",
        )
        caller = asyncio.run(validator.validate(token))
        assert caller.client_id == "user-service"
        assert caller.scopes == frozenset({"events:publish"})
        with pytest.raises(TokenError) as caught:
            TokenAuth("user-service", "wrong", issuer=base).get_token()
        assert caught.value.error == "invalid_client"
        auth.close()
    finally:
        server.should_exit = True
        thread.join(10)
