"""The token service with Redis (and Redis going down), key handling, bootstrap, migrations."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
import redis.asyncio as aioredis
from sqlalchemy import select

from authbus.common._keys import token_key
from authbus.core.db import create_engine, create_sessionmaker
from authbus.core.migrate import downgrade, upgrade_async
from authbus.token.bootstrap import ensure_clients
from authbus.token.keys import (
    ensure_signing_key,
    load_key_ring,
    reseal_signing_keys,
    rotate_signing_key,
)
from authbus.token.models import SigningKeyRow

from .conftest import FakeUserService, auth_params, hidden_fields, make_settings, start_env

MASTER_KEY = "_gRHWvAq8SAD3zNc2Gdj5JnpiHed0bqeWuVtf_OSYaM"


async def test_redis_store_records_tokens_for_other_services(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str, users: FakeUserService
) -> None:
    settings = make_settings(tmp_path, database_url, redis_url=redis_url, redis_prefix=redis_prefix)
    async for env in start_env(settings, users):
        token = await env.client_token("svc")
        jti = pyjwt.decode(token, options={"verify_signature": False})["jti"]
        red = aioredis.Redis.from_url(redis_url)
        try:
            assert await red.exists(token_key(redis_prefix, jti)) == 1
            await env.http.post("/revoke", data={"token": token}, headers=env.basic("svc"))
            assert await red.exists(token_key(redis_prefix, jti)) == 0
        finally:
            await red.aclose()
        ready = await env.http.get("/readyz")
        assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}


async def test_redis_down_gives_503_and_recovers(
    tmp_path: Path,
    database_url: str,
    redis_server_factory: Callable[[], Any],
    users: FakeUserService,
) -> None:
    server = redis_server_factory()
    settings = make_settings(tmp_path, database_url, redis_url=server.url)
    async for env in start_env(settings, users):
        await env.client_token("svc")
        server.stop()
        try:
            resp = await env.http.post(
                "/token", data={"grant_type": "client_credentials"}, headers=env.basic("svc")
            )
            assert resp.status_code == 503
            assert resp.json()["error"] == "temporarily_unavailable"
            assert "retry-after" in resp.headers
            assert (await env.http.get("/readyz")).status_code == 503
        finally:
            server.start()
        await env.client_token("svc")


async def test_key_rotation_keeps_old_key_in_jwks(
    tmp_path: Path, database_url: str, users: FakeUserService
) -> None:
    settings = make_settings(tmp_path, database_url)
    async for env in start_env(settings, users):
        old_kid = env.service.keys.active.kid
        engine = create_engine(database_url)
        sm = create_sessionmaker(engine)
        new_kid = await rotate_signing_key(sm, "ES256", None, 900)
        ring = await load_key_ring(sm, None)
        await engine.dispose()
        assert ring.active.kid == new_kid != old_kid
        assert {k["kid"] for k in ring.jwks()["keys"]} == {old_kid, new_kid}


async def test_eddsa_and_encrypted_keys(
    tmp_path: Path, database_url: str, users: FakeUserService
) -> None:
    settings = make_settings(
        tmp_path, database_url, token={"signing_alg": "EdDSA", "master_key": MASTER_KEY}
    )
    async for env in start_env(settings, users):
        token = await env.client_token("svc")
        header = pyjwt.get_unverified_header(token)
        assert header["alg"] == "EdDSA"
        jwks = (await env.http.get("/.well-known/jwks.json")).json()
        key = pyjwt.PyJWKSet.from_dict(jwks)[header["kid"]]
        pyjwt.decode(token, key.key, algorithms=["EdDSA"], audience="authbus")
    engine = create_engine(database_url)
    async with create_sessionmaker(engine)() as session:
        (row,) = (await session.scalars(select(SigningKeyRow))).all()
    await engine.dispose()
    assert row.private_jwk.startswith("enc:v2:")
    assert '"d"' not in row.private_jwk


async def test_bootstrap_creates_builtin_clients_once(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url)
    await upgrade_async(database_url, "token")
    secrets = {"authbus-admin": "a" * 43, "token-service": "t" * 43}
    created = await ensure_clients(settings, secrets)
    assert set(created) == {"authbus-admin", "user-service", "token-service", "event-service"}
    assert await ensure_clients(settings, secrets) == []
    engine = create_engine(database_url)
    ring = await load_key_ring(create_sessionmaker(engine), None)
    await engine.dispose()
    assert ring.active.alg == "ES256"


async def test_bootstrap_admin_client_gets_tokens(
    tmp_path: Path, database_url: str, users: FakeUserService
) -> None:
    settings = make_settings(tmp_path, database_url)
    await upgrade_async(database_url, "token")
    await ensure_clients(settings, {"authbus-admin": "a" * 43})
    async for env in start_env(settings, users):
        env.secrets["authbus-admin"] = "a" * 43
        token = await env.client_token("authbus-admin")
        scopes = set(pyjwt.decode(token, options={"verify_signature": False})["scope"].split())
        assert {"clients:admin", "users:admin", "events:admin"} <= scopes


async def test_migration_round_trip(database_url: str) -> None:
    await upgrade_async(database_url, "token")
    await asyncio.to_thread(downgrade, database_url, "token")
    await upgrade_async(database_url, "token")


async def test_https_cookies_are_secure_and_host_prefixed(
    tmp_path: Path, database_url: str, users: FakeUserService
) -> None:
    settings = make_settings(tmp_path, database_url).model_copy(
        update={"token_url": "https://token.test"}
    )
    async for env in start_env(settings, users):
        transport = httpx.ASGITransport(app=env.app)
        async with httpx.AsyncClient(transport=transport, base_url="https://token.test") as http:
            page = await http.get("/authorize", params=auth_params())
            assert "__Host-authbus_csrf=" in page.headers["set-cookie"]
            assert "Secure" in page.headers["set-cookie"]
            form = hidden_fields(page.text)
            form.update(username="alice", password="alice-pw")
            resp = await http.post("/authorize", data=form)
            assert resp.status_code == 302
            cookie = resp.headers["set-cookie"]
            assert cookie.startswith("__Host-authbus_sso=")
            assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie


async def test_reseal_keys_under_new_master_key(tmp_path: Path, database_url: str) -> None:
    await upgrade_async(database_url, "token")
    engine = create_engine(database_url)
    sm = create_sessionmaker(engine)
    kid = await ensure_signing_key(sm, "ES256", None)
    assert await reseal_signing_keys(sm, None, MASTER_KEY) == 1
    with pytest.raises(ValueError):
        await load_key_ring(sm, None)
    ring = await load_key_ring(sm, MASTER_KEY)
    await engine.dispose()
    assert ring.active.kid == kid
