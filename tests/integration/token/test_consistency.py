"""Consistency across services: user events on the `users` channel lock a user out at once.

The events are fanned out into Redis with the same Lua script the event service uses, and
consumed by the token service's own `EventSubscriber`, started by its lifespan.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from authbus.common._envelope import Event, format_delivery, uuid7
from authbus.common._scripts import DeliveryOps
from authbus.token.consistency import UserEventsSubscriber

from .conftest import Env, FakeUserService, auth_params, make_settings, start_env
from .test_api import exchange, login_code

LOCKOUT_DEADLINE_S = 10.0


async def publish(redis_url: str, prefix: str, event_type: str, data: dict[str, Any]) -> None:
    """Fan a user event out to the `users` subscribers, as the event service delivers it."""
    event = Event(
        id=uuid7(),
        position=int(time.time() * 1000),
        channel="users",
        type=event_type,
        data=data,
        aggregate_type="user",
        aggregate_id=str(data.get("id", "")),
    )
    client = aioredis.Redis.from_url(redis_url)
    try:
        ops = DeliveryOps(client, prefix, "users")
        delivered, _ = await ops.fanout([format_delivery(event)], first_position=event.position)
        assert delivered == 1  # the token service is subscribed
    finally:
        await client.aclose()


async def introspect(env: Env, token: str) -> bool:
    resp = await env.http.post("/introspect", data={"token": token}, headers=env.basic("web"))
    assert resp.status_code == 200, resp.text
    active: bool = resp.json()["active"]
    return active


async def wait_inactive(env: Env, token: str) -> float:
    """Seconds until introspection says inactive; fails after the deadline."""
    start = time.monotonic()
    while await introspect(env, token):
        assert time.monotonic() - start < LOCKOUT_DEADLINE_S, "still active"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def subscribed_env(
    tmp_path: Path, database_url: str, redis_url: str, prefix: str, users: FakeUserService
) -> Any:
    settings = make_settings(tmp_path, database_url, redis_url=redis_url, redis_prefix=prefix)
    async for env in start_env(settings, users):
        subscriber: UserEventsSubscriber = env.app.state.user_events
        assert await subscriber.wait_ready(10)
        yield env


@pytest.mark.parametrize(
    ("event_type", "data"),
    [
        ("user.disabled", {"id": "id-alice"}),
        ("user.deleted", {"id": "id-alice", "actor": "admin"}),
        ("user.permissions_changed", {"id": "id-alice"}),
        ("user.updated", {"id": "id-alice", "disabled": True, "actor": "admin"}),
        ("user.permissions_set", {"id": "id-alice", "permissions": []}),
    ],
)
async def test_user_event_revokes_tokens_and_session(
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    users: FakeUserService,
    event_type: str,
    data: dict[str, Any],
) -> None:
    async for env in subscribed_env(tmp_path, database_url, redis_url, redis_prefix, users):
        tokens = (await exchange(env, await login_code(env))).json()
        service_token = await env.client_token("svc")
        assert await introspect(env, tokens["access_token"])

        await publish(redis_url, redis_prefix, event_type, data)

        await wait_inactive(env, tokens["access_token"])
        refreshed = await env.http.post(
            "/token",
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
            headers=env.basic("web"),
        )
        assert refreshed.status_code == 400
        assert refreshed.json()["error"] == "invalid_grant"
        # The SSO session ended too: the next authorization asks for the password again.
        again = await env.http.get("/authorize", params=auth_params())
        assert again.status_code == 200
        # Client-credentials tokens (the subject is a client, not the user) are untouched.
        assert await introspect(env, service_token)


async def test_unrelated_events_and_redelivery_change_nothing_more(
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    users: FakeUserService,
) -> None:
    async for env in subscribed_env(tmp_path, database_url, redis_url, redis_prefix, users):
        subscriber: UserEventsSubscriber = env.app.state.user_events
        first = (await exchange(env, await login_code(env))).json()
        await publish(redis_url, redis_prefix, "user.updated", {"id": "id-alice", "email": "a@x"})
        await publish(redis_url, redis_prefix, "user.disabled", {"id": "id-someone-else"})
        deadline = time.monotonic() + LOCKOUT_DEADLINE_S
        while subscriber.processed_count < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert await introspect(env, first["access_token"])

        # The same event twice (at-least-once delivery): the second revokes nothing, no error.
        await publish(redis_url, redis_prefix, "user.disabled", {"id": "id-alice"})
        await wait_inactive(env, first["access_token"])
        await publish(redis_url, redis_prefix, "user.disabled", {"id": "id-alice"})
        while subscriber.processed_count < 4:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        # A login after the event (the user service enables the user again) works normally.
        second = (await exchange(env, await login_code(env))).json()
        assert await introspect(env, second["access_token"])


async def test_users_channel_is_followed_only_with_redis(env: Env) -> None:
    # Event delivery needs Redis; the dict store lives in one process anyway.
    if env.settings.redis_url is None:
        assert env.app.state.user_events is None
    else:
        assert isinstance(env.app.state.user_events, UserEventsSubscriber)
