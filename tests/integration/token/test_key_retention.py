"""`authbus keys rotate` keeps the retired public key in the JWKS for as long as the longest-lived
token it signed is valid, even when a client's access tokens live longer than the default
(DESIGN.md: "key rotation keeps retired public keys in the JWKS until the last token they
signed has expired")."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from sqlalchemy import select

from authbus.core.db import create_engine, create_sessionmaker
from authbus.token.clients import ClientSpec
from authbus.token.models import SigningKeyRow

from .conftest import ISSUER, Env, FakeUserService, make_settings, start_env

LONG_TTL_S = 3 * 3600  # longer than the default access-token lifetime (900 s)


@pytest.fixture
async def env(tmp_path: Path, database_url: str, users: FakeUserService) -> AsyncIterator[Env]:
    """A running token service (SQLite, Postgres) that re-reads its keys every 0.1 s, with a
    client whose access tokens live three hours."""
    settings = make_settings(tmp_path, database_url)
    async for e in start_env(settings, users, key_reload_interval_s=0.1):
        _, secret = await e.service.clients.create(
            ClientSpec(
                "reports",
                "Nightly reports",
                grant_types=("client_credentials",),
                scopes=("events:read",),
                access_token_ttl_s=LONG_TTL_S,
            )
        )
        assert secret is not None
        e.secrets["reports"] = secret
        yield e


def kid_of(token: str) -> str:
    kid: str = pyjwt.get_unverified_header(token)["kid"]
    return kid


def rotate_with_the_cli(env: Env) -> subprocess.CompletedProcess[str]:
    """`authbus keys rotate`, a process of its own on the service's token database."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHBUS_")}
    child_env.update(
        AUTHBUS_DATA_DIR=str(env.settings.data_dir),
        AUTHBUS_TOKEN__DATABASE_URL=env.settings.database_url("token"),
    )
    return subprocess.run(
        [sys.executable, "-m", "authbus", "keys", "rotate"],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def key_rows(env: Env) -> dict[str, SigningKeyRow]:
    engine = create_engine(env.settings.database_url("token"))
    try:
        async with create_sessionmaker(engine)() as session:
            rows = (await session.scalars(select(SigningKeyRow))).all()
        return {row.kid: row for row in rows}
    finally:
        await engine.dispose()


def aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


async def jwks(env: Env) -> dict[str, Any]:
    resp = await env.http.get("/.well-known/jwks.json")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def verify_with(jwks_doc: dict[str, Any], token: str) -> dict[str, Any]:
    """What a resource server does: find the token's kid in the JWKS and check the token."""
    keys = {k["kid"]: k for k in jwks_doc["keys"]}
    kid = kid_of(token)
    assert kid in keys, f"kid {kid} is not in the JWKS {sorted(keys)}"
    key = pyjwt.PyJWK.from_dict(keys[kid])
    claims: dict[str, Any] = pyjwt.decode(
        token, key.key, algorithms=["ES256", "EdDSA"], audience="authbus", issuer=ISSUER
    )
    return claims


async def test_rotation_keeps_the_old_key_until_the_longest_token_expires(env: Env) -> None:
    long_lived = await env.client_token("reports")
    old_kid = kid_of(long_lived)
    exp = verify_with(await jwks(env), long_lived)["exp"]
    assert exp - time.time() > LONG_TTL_S - 60  # the client's lifetime, not the default

    rotated_at = datetime.now(UTC)
    result = await asyncio.to_thread(rotate_with_the_cli, env)
    assert result.returncode == 0, result.stdout + result.stderr

    rows = await key_rows(env)
    assert len(rows) == 2
    retired = rows[old_kid]
    assert retired.retired_at is not None and retired.not_after is not None
    not_after = aware(retired.not_after)
    assert not_after >= rotated_at + timedelta(seconds=LONG_TTL_S)
    assert not_after >= datetime.fromtimestamp(exp, UTC), (not_after, exp)
    (new_kid,) = set(rows) - {old_kid}
    assert rows[new_kid].retired_at is None

    # The running service switches to the new key (it re-reads keys every 0.1 s) ...
    deadline = time.monotonic() + 30
    while kid_of(fresh := await env.client_token("reports")) != new_kid:
        assert time.monotonic() < deadline, "the running service never signed with the new key"
        await asyncio.sleep(0.05)
    # ... and publishes both keys: the token signed before the rotation still verifies.
    after = await jwks(env)
    assert {k["kid"] for k in after["keys"]} == {old_kid, new_kid}
    assert verify_with(after, long_lived)["sub"] == "reports"
    assert verify_with(after, fresh)["sub"] == "reports"
    introspected = await env.http.post(
        "/introspect", data={"token": long_lived}, headers=env.basic("admin")
    )
    assert introspected.json()["active"] is True

    # The ring still publishes the retired key a second before that token expires.
    just_before_expiry = datetime.fromtimestamp(exp - 1, UTC)
    published = {k.kid for k in env.service.keys.published(just_before_expiry)}
    assert old_kid in published
    # And drops it once its not_after has passed.
    assert old_kid not in {
        k.kid for k in env.service.keys.published(not_after + timedelta(seconds=1))
    }


async def test_rotation_without_long_lived_clients_still_covers_the_default_lifetime(
    env: Env,
) -> None:
    await env.service.clients.delete("reports")
    token = await env.client_token("svc")
    old_kid = kid_of(token)
    exp = verify_with(await jwks(env), token)["exp"]
    result = await asyncio.to_thread(rotate_with_the_cli, env)
    assert result.returncode == 0, result.stdout + result.stderr
    retired = (await key_rows(env))[old_kid]
    assert retired.not_after is not None
    assert aware(retired.not_after) >= datetime.fromtimestamp(exp, UTC)
