"""Key rotation without restart: running replicas pick up a key rotated in the database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import jwt as pyjwt

from authbus.core.db import create_engine, create_sessionmaker
from authbus.token.keys import KeyReloader, rotate_signing_key

from .conftest import Env, FakeUserService, make_settings, start_env


def kid_of(token: str) -> str:
    kid: str = pyjwt.get_unverified_header(token)["kid"]
    return kid


async def rotate(env: Env) -> str:
    """What `authbus keys rotate` does: a new key in the database, the old one retired."""
    engine = create_engine(env.settings.database_url("token"))
    try:
        return await rotate_signing_key(create_sessionmaker(engine), "ES256", None, 900)
    finally:
        await engine.dispose()


async def introspect(env: Env, token: str) -> bool:
    resp = await env.http.post("/introspect", data={"token": token}, headers=env.basic("svc"))
    assert resp.status_code == 200, resp.text
    active: bool = resp.json()["active"]
    return active


async def test_running_replica_signs_with_rotated_key_after_reload_interval(
    tmp_path: Path, database_url: str, users: FakeUserService
) -> None:
    settings = make_settings(tmp_path, database_url)
    async for env in start_env(settings, users, key_reload_interval_s=0.1):
        before = await env.client_token("svc")
        new_kid = await rotate(env)
        deadline = time.monotonic() + 5
        while kid_of(token := await env.client_token("svc")) != new_kid:
            assert time.monotonic() < deadline, "the new key was not picked up"
            await asyncio.sleep(0.05)
        kids = {k["kid"] for k in (await env.http.get("/.well-known/jwks.json")).json()["keys"]}
        assert kids == {kid_of(before), new_kid}  # the retired key stays published
        assert await introspect(env, before)  # tokens of the retired key stay valid
        assert await introspect(env, token)


async def test_unknown_kid_makes_another_replica_reload_at_once(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str, users: FakeUserService
) -> None:
    # Replicas share the token store (Redis) and the database, as in production.
    settings = make_settings(tmp_path, database_url, redis_url=redis_url, redis_prefix=redis_prefix)
    async for first in start_env(settings, users, key_reload_interval_s=0.1):
        # The second replica's timer is far off: only the unknown kid can make it reload.
        async for second in start_env(settings, users, clients=False, key_reload_interval_s=3600):
            second.secrets.update(first.secrets)
            new_kid = await rotate(first)
            deadline = time.monotonic() + 5
            while kid_of(token := await first.client_token("svc")) != new_kid:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert await introspect(second, token)
            jwks = (await second.http.get("/.well-known/jwks.json")).json()
            assert new_kid in {k["kid"] for k in jwks["keys"]}
            assert kid_of(await second.client_token("svc")) == new_kid


async def test_forged_kids_do_not_hammer_the_database(
    tmp_path: Path, database_url: str, users: FakeUserService
) -> None:
    settings = make_settings(tmp_path, database_url)
    async for env in start_env(settings, users, key_reload_interval_s=3600):
        reloader: KeyReloader = env.app.state.key_reloader
        reloads = 0

        async def counting_reload(
            original: Callable[[], Awaitable[bool]] = reloader.reload,
        ) -> bool:
            nonlocal reloads
            reloads += 1
            return await original()

        reloader.reload = counting_reload  # type: ignore[method-assign]
        results = [await reloader.reload_for_kid(f"forged-{i}") for i in range(20)]
        assert results == [False] * 20
        assert reloads == 1  # then at most one per min_gap_s
        assert await reloader.reload_for_kid(reloader.ring.active.kid)  # known: no reload
        assert reloads == 1
