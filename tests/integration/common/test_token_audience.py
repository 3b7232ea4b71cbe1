"""`TokenAuth(audience=...)` / `AsyncTokenAuth(audience=...)` against the real token service:
the audience is asked for as RFC 8707 `resource`, so the token is minted for it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import pytest
import uvicorn

from authbus.common import AsyncTokenAuth, InvalidTokenError, TokenAuth, TokenError, TokenValidator
from authbus.core.migrate import upgrade_async
from authbus.core.settings import Settings, TokenSettings
from authbus.token.app import create_app
from authbus.token.bootstrap import ensure_clients
from tests.conftest import free_port
from tests.integration.token.conftest import ISSUER, Env, FakeUserService, make_settings, start_env

AUDIENCES = ["authbus", "billing"]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'token.db'}"
    settings = make_settings(tmp_path, database_url, accepted_audiences=AUDIENCES)
    async for e in start_env(settings, FakeUserService()):
        yield e


def asgi(env: Env) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=env.app)


def validator(env: Env, audiences: list[str]) -> TokenValidator:
    return TokenValidator(
        issuer=ISSUER,
        audiences=audiences,
        jwks_url=f"{ISSUER}/.well-known/jwks.json",
        transport=asgi(env),
    )


def aud_of(token: str) -> object:
    return jwt.decode(token, options={"verify_signature": False})["aud"]


async def test_async_token_auth_audience_is_minted_into_the_token(env: Env) -> None:
    auth = AsyncTokenAuth(
        "svc", env.secrets["svc"], issuer=ISSUER, audience="billing", transport=asgi(env)
    )
    token = await auth.get_token()
    assert aud_of(token) == "billing"
    caller = await validator(env, ["billing"]).validate(token)
    assert caller.client_id == "svc"
    # A service accepting only the default audience refuses it: it was minted for billing.
    with pytest.raises(InvalidTokenError):
        await validator(env, ["authbus"]).validate(token)


async def test_without_an_audience_the_default_is_minted(env: Env) -> None:
    auth = AsyncTokenAuth("svc", env.secrets["svc"], issuer=ISSUER, transport=asgi(env))
    assert aud_of(await auth.get_token()) == "authbus"


async def test_an_audience_the_token_service_does_not_know_is_invalid_target(env: Env) -> None:
    auth = AsyncTokenAuth(
        "svc", env.secrets["svc"], issuer=ISSUER, audience="nobody", transport=asgi(env)
    )
    with pytest.raises(TokenError) as caught:
        await auth.get_token()
    assert caught.value.error == "invalid_target"


def test_sync_token_auth_audience_over_real_http(tmp_path: Path) -> None:
    """requests + TokenAuth(audience=...) against the token service served by uvicorn."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = Settings(
        data_dir=tmp_path,
        token_url=base,
        user_url="http://user.test",
        accepted_audiences=AUDIENCES,
        token=TokenSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'token.db'}"),
    )
    secret = "s" * 43
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
        auth = TokenAuth(
            "user-service", secret, issuer=base, scopes=["events:publish"], audience="billing"
        )
        token = auth.get_token()
        assert aud_of(token) == "billing"
        checker = TokenValidator(
            issuer=base, audiences=["billing"], jwks_url=f"{base}/.well-known/jwks.json"
        )
        caller = asyncio.run(checker.validate(token))
        assert caller.client_id == "user-service"
        with pytest.raises(TokenError) as caught:
            TokenAuth("user-service", secret, issuer=base, audience="nobody").get_token()
        assert caught.value.error == "invalid_target"
        auth.close()
    finally:
        server.should_exit = True
        thread.join(10)
