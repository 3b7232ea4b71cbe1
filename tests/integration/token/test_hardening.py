"""Attacks on the token service's own endpoints, dependency failures, metrics, settings.

Forged tokens reuse a real token's claims (its jti is live in the store), so only the
signature, algorithm and time checks stand between them and acceptance.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from authbus.core.db import create_engine, create_sessionmaker
from authbus.core.migrate import upgrade_async
from authbus.core.settings import Settings
from authbus.token.app import create_app
from authbus.token.clients import ClientSpec
from authbus.token.keys import ensure_signing_key, rotate_signing_key
from authbus.token.models import SigningKeyRow, utcnow
from authbus.token.service import TokenService
from authbus.token.store import Json, MemoryTokenStore
from tests.conftest import free_port

from .conftest import (
    ISSUER,
    Env,
    FakeUserService,
    auth_params,
    fragment_of,
    make_settings,
    start_env,
    submit_login,
)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], hs256_key: bytes | None) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = (
        hmac.new(hs256_key, signing_input.encode(), hashlib.sha256).digest() if hs256_key else b""
    )
    return f"{signing_input}.{_b64(signature)}"


async def introspected(env: Env, token: str) -> dict[str, Any]:
    resp = await env.http.post("/introspect", data={"token": token}, headers=env.basic("svc"))
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def admin_status(env: Env, token: str) -> int:
    resp = await env.http.get("/v1/clients", headers={"Authorization": f"Bearer {token}"})
    return resp.status_code


async def public_key_forms(env: Env) -> list[bytes]:
    """The signing key as an attacker would feed it to HS256: PEM, DER and JWK JSON."""
    jwk = (await env.http.get("/.well-known/jwks.json")).json()["keys"][0]
    public = pyjwt.PyJWK.from_dict(jwk).key
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return [pem, der, json.dumps(jwk).encode()]


# --- forged and out-of-date tokens ---------------------------------------------------------


async def test_alg_none_token_is_refused(env: Env) -> None:
    real = await env.client_token("admin", "clients:admin")
    header = pyjwt.get_unverified_header(real)
    claims = pyjwt.decode(real, options={"verify_signature": False})
    for alg in ("none", "None", "NONE"):
        forged = forge({**header, "alg": alg}, claims, None)
        assert await introspected(env, forged) == {"active": False}
        assert await admin_status(env, forged) == 401
    assert await admin_status(env, real) == 200  # the genuine token still works


async def test_hs256_signed_with_the_public_key_is_refused(env: Env) -> None:
    real = await env.client_token("admin", "clients:admin")
    header = pyjwt.get_unverified_header(real)
    claims = pyjwt.decode(real, options={"verify_signature": False})
    for key in await public_key_forms(env):
        forged = forge({**header, "alg": "HS256"}, claims, key)
        assert await introspected(env, forged) == {"active": False}
        assert await admin_status(env, forged) == 401


async def test_expired_token_is_inactive_and_refused(env: Env) -> None:
    issuer = env.service.issuer
    issuer.clock = lambda: time.time() - 3600  # minted an hour ago, 15 min lifetime
    try:
        old = await env.client_token("admin", "clients:admin")
    finally:
        issuer.clock = time.time
    assert await introspected(env, old) == {"active": False}
    assert await admin_status(env, old) == 401


async def test_not_yet_valid_token_is_inactive_and_refused(env: Env) -> None:
    issuer = env.service.issuer
    issuer.clock = lambda: time.time() + 600  # a replica whose clock runs 10 min ahead
    try:
        early = await env.client_token("admin", "clients:admin")
    finally:
        issuer.clock = time.time
    assert pyjwt.decode(early, options={"verify_signature": False})["nbf"] > time.time()
    assert await introspected(env, early) == {"active": False}
    assert await admin_status(env, early) == 401


async def test_token_for_another_audience_is_refused_by_the_admin_api(env: Env) -> None:
    _, secret = await env.service.clients.create(
        ClientSpec(
            "orders-admin",
            "Orders admin",
            grant_types=("client_credentials",),
            scopes=("clients:admin",),
            audience="https://orders.example.com",
        )
    )
    assert secret is not None
    resp = await env.http.post(
        "/token",
        data={"grant_type": "client_credentials"},
        headers=env.basic("orders-admin", secret),
    )
    token = resp.json()["access_token"]
    assert pyjwt.decode(token, options={"verify_signature": False})["aud"] == (
        "https://orders.example.com"
    )
    assert await admin_status(env, token) == 401


async def test_resource_outside_the_known_audiences_is_invalid_target(env: Env) -> None:
    resp = await env.http.post(
        "/token",
        data={"grant_type": "client_credentials", "resource": "https://evil.example.com"},
        headers=env.basic("svc"),
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_target"


# --- dependencies down ---------------------------------------------------------------------


class UnreachableStore(MemoryTokenStore):
    """The in-memory store with a switch that makes it fail like a dropped connection."""

    def __init__(self) -> None:
        super().__init__(warn=False)
        self.failure: OSError | None = None

    async def add_access_token(
        self,
        jti: str,
        info: Json,
        ttl_s: float,
        family: str | None = None,
        subject: str | None = None,
    ) -> None:
        if self.failure is not None:
            raise self.failure
        await super().add_access_token(jti, info, ttl_s, family, subject)


async def test_connection_failure_is_503_with_retry_after_then_recovers(
    tmp_path: Path, database_url: str, users: FakeUserService
) -> None:
    store = UnreachableStore()
    async for env in start_env(make_settings(tmp_path, database_url), users, store=store):
        form = {"grant_type": "client_credentials"}
        for failure in (
            ConnectionResetError(104, "Connection reset by peer"),
            OSError("Multiple exceptions: [Errno 111] Connect call failed"),
            TimeoutError(),
        ):
            store.failure = failure
            resp = await env.http.post("/token", data=form, headers=env.basic("svc"))
            assert resp.status_code == 503, resp.text
            assert resp.json()["error"] == "temporarily_unavailable"
            assert resp.headers["retry-after"].isdigit()
        store.failure = None
        assert (await env.http.post("/token", data=form, headers=env.basic("svc"))).is_success


async def test_file_system_error_is_a_plain_500_not_a_503(
    tmp_path: Path, database_url: str, users: FakeUserService
) -> None:
    store = UnreachableStore()
    store.failure = PermissionError(13, "Permission denied")
    async for env in start_env(make_settings(tmp_path, database_url), users, store=store):
        # ASGITransport re-raises server errors by default; a real server answers 500.
        transport = httpx.ASGITransport(app=env.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
            resp = await http.post(
                "/token", data={"grant_type": "client_credentials"}, headers=env.basic("svc")
            )
        assert resp.status_code == 500
        assert resp.json()["error"] == "server_error"
        assert "Permission" not in resp.text


@pytest.fixture
async def no_user_service(tmp_path: Path, database_url: str) -> AsyncIterator[Env]:
    """The token service with the user service's port closed (a real refused connection)."""
    settings = make_settings(tmp_path, database_url)
    settings = settings.model_copy(update={"user_url": f"http://127.0.0.1:{free_port()}"})
    await upgrade_async(settings.database_url("token"), "token")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        svc: TokenService = app.state.token
        _, secret = await svc.clients.create(
            ClientSpec(
                "web",
                "Web app",
                redirect_uris=("https://app.example.com/cb",),
                scopes=("orders:read",),
                first_party=True,
            )
        )
        assert secret is not None
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
            yield Env(app, http, FakeUserService(), {"web": secret}, settings)


async def test_user_service_unreachable_shows_temporarily_unavailable_page(
    no_user_service: Env,
) -> None:
    resp = await submit_login(no_user_service.http, auth_params())
    assert resp.status_code == 503
    assert "temporarily unavailable" in resp.text
    assert resp.headers["retry-after"].isdigit()
    assert "location" not in resp.headers
    # The rest of the service is unaffected.
    assert (await no_user_service.http.get("/.well-known/jwks.json")).status_code == 200


# --- metrics -------------------------------------------------------------------------------


def metric(text: str, name: str, **labels: str) -> float:
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{selector}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_tokens_by_grant_type_and_errors_by_code(env: Env) -> None:
    await env.client_token("svc")
    await env.client_token("svc")
    bad = await env.http.post(
        "/token", data={"grant_type": "client_credentials"}, headers=env.basic("svc", "wrong")
    )
    assert bad.status_code == 401
    await env.http.post("/token", data={"grant_type": "password"}, headers=env.basic("svc"))
    implicit = auth_params(
        response_type="token",
        client_id="spa",
        redirect_uri="https://spa.example.com/cb",
        code_challenge="",
        code_challenge_method="",
    )
    resp = await submit_login(env.http, implicit)
    assert "access_token" in fragment_of(resp.headers["location"])

    text = (await env.http.get("/metrics")).text
    assert metric(text, "authbus_tokens_issued_total", grant_type="client_credentials") == 2
    assert metric(text, "authbus_tokens_issued_total", grant_type="implicit") == 1
    assert metric(text, "authbus_token_endpoint_errors_total", error="invalid_client") == 1
    assert metric(text, "authbus_token_endpoint_errors_total", error="unsupported_grant_type") == 1
    # No secret or token value ever becomes a label.
    assert env.secrets["svc"] not in text


# --- settings ------------------------------------------------------------------------------


async def test_key_reload_interval_comes_from_the_settings(
    tmp_path: Path, database_url: str, users: FakeUserService
) -> None:
    settings = make_settings(tmp_path, database_url, token={"key_reload_interval_s": 2.5})
    async for env in start_env(settings, users):
        assert env.app.state.key_reloader.interval_s == 2.5


def test_key_reload_interval_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTHBUS_TOKEN__KEY_RELOAD_INTERVAL_S", "42")
    assert Settings().token.key_reload_interval_s == 42.0
    monkeypatch.setenv("AUTHBUS_TOKEN__KEY_RELOAD_INTERVAL_S", "0")
    with pytest.raises(ValueError, match="greater than 0"):
        Settings()


async def test_retired_key_stays_published_past_the_reload_interval(
    tmp_path: Path, database_url: str
) -> None:
    # Replicas sign with the retired key until their next reload, so it must outlive that.
    await upgrade_async(database_url, "token")
    engine = create_engine(database_url)
    sessionmaker = create_sessionmaker(engine)
    try:
        await ensure_signing_key(sessionmaker, "ES256", None)
        before = utcnow()
        await rotate_signing_key(sessionmaker, "ES256", None, 900, reload_interval_s=120)
        async with sessionmaker() as session:
            retired = (
                await session.scalars(
                    select(SigningKeyRow).where(SigningKeyRow.retired_at.is_not(None))
                )
            ).one()
        assert retired.not_after is not None
        not_after = retired.not_after.replace(tzinfo=before.tzinfo)
        assert not_after - before >= timedelta(seconds=900 + 120 + 60 - 1)
    finally:
        await engine.dispose()
