"""Every change the user service makes to a user's rights or password ends that user's grants.

The user service's own code (`UserService` on its in-memory repository) makes each change and
writes its events to the outbox, exactly the events it publishes; they are fanned out to the
token service as the event service does, and the token service revokes in its real store
(Redis, followed by its own subscriber).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from authbus.common._envelope import Event, format_delivery
from authbus.common._scripts import DeliveryOps
from authbus.user.domain import utcnow
from authbus.user.memory_repository import InMemoryUserRepository
from authbus.user.passwords import PasswordHasher
from authbus.user.service import UserService
from authbus.user.throttle import LoginThrottle

from .conftest import Env, FakeUser, FakeUserService, auth_params, query_of, submit_login
from .test_api import exchange
from .test_consistency import introspect, subscribed_env, wait_inactive

PASSWORD = "Correct-Horse-9-staple"
NEW_PASSWORD = "Another-Horse-8-battery"


@dataclass
class UserSide:
    """The user service's rules and outbox, delivering to the token service's Redis."""

    service: UserService
    repo: InMemoryUserRepository
    redis_url: str
    prefix: str

    async def deliver(self) -> list[str]:
        """Fan every pending outbox event out on `users`; their types."""
        client = aioredis.Redis.from_url(self.redis_url)
        types = []
        try:
            ops = DeliveryOps(client, self.prefix, "users")
            for pending in await self.repo.pending_events(1000):
                event = Event(
                    id=str(pending.event_id),
                    position=int(time.time() * 1000) + pending.id,
                    channel=pending.channel,
                    type=pending.type,
                    data=pending.data,
                    aggregate_type=pending.aggregate_type,
                    aggregate_id=pending.aggregate_id,
                )
                delivered, _ = await ops.fanout(
                    [format_delivery(event)], first_position=event.position
                )
                assert delivered == 1  # the token service is subscribed
                await self.repo.mark_published([pending.id], utcnow())
                types.append(event.type)
        finally:
            await client.aclose()
        return types


@pytest.fixture
async def token_env(
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    users: FakeUserService,
) -> AsyncIterator[Env]:
    async for env in subscribed_env(tmp_path, database_url, redis_url, redis_prefix, users):
        yield env


@pytest.fixture
def user_side(redis_url: str, redis_prefix: str) -> UserSide:
    repo = InMemoryUserRepository()
    service = UserService(
        repo,
        PasswordHasher(memory_kib=1024, time_cost=1, parallelism=1),
        throttle=LoginThrottle(free_attempts=3, base_delay_s=1.0, max_delay_s=60.0),
    )
    return UserSide(service, repo, redis_url, redis_prefix)


Change = Callable[[UserService, uuid.UUID], Awaitable[object]]


async def _remove_permission(s: UserService, uid: uuid.UUID) -> object:
    return await s.set_permissions(uid, {"orders:read"}, actor="admin")  # reports:read goes


async def _revoke_permission(s: UserService, uid: uuid.UUID) -> object:
    return await s.revoke_permissions(uid, {"orders:read"}, actor="admin")


async def _change_role(s: UserService, _uid: uuid.UUID) -> object:
    return await s.update_role("writers", actor="admin", permissions=[])


async def _delete_role(s: UserService, _uid: uuid.UUID) -> object:
    return await s.delete_role("writers", actor="admin")


async def _unassign_role(s: UserService, uid: uuid.UUID) -> object:
    return await s.set_roles(uid, [], actor="admin")


async def _reset_password(s: UserService, uid: uuid.UUID) -> object:
    return await s.reset_password(uid, NEW_PASSWORD, actor="admin")


async def _change_password(s: UserService, uid: uuid.UUID) -> object:
    return await s.change_password(uid, PASSWORD, NEW_PASSWORD)


async def _disable(s: UserService, uid: uuid.UUID) -> object:
    return await s.update_user(uid, actor="admin", disabled=True)


async def _delete(s: UserService, uid: uuid.UUID) -> object:
    return await s.delete_user(uid, actor="admin")


@pytest.mark.parametrize(
    "change",
    [
        _remove_permission,
        _revoke_permission,
        _change_role,
        _delete_role,
        _unassign_role,
        _reset_password,
        _change_password,
        _disable,
        _delete,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
async def test_user_service_change_revokes_the_grants_the_user_holds(
    token_env: Env, user_side: UserSide, change: Change
) -> None:
    env = token_env
    await user_side.service.create_role("writers", actor="admin", permissions=["orders:write"])
    profile = await user_side.service.create_user(
        username="erin",
        password=PASSWORD,
        actor="admin",
        permissions=["orders:read", "reports:read"],
        roles=["writers"],
    )
    uid = profile.user.id
    env.users.users["erin"] = FakeUser(
        str(uid), "erin", PASSWORD, frozenset(profile.effective_permissions)
    )
    await user_side.deliver()  # role.created, user.created: nothing to revoke
    login = await submit_login(
        env.http, auth_params(scope="orders:read orders:write"), "erin", PASSWORD
    )
    assert login.status_code == 302, login.text
    tokens = (await exchange(env, query_of(login.headers["location"])["code"])).json()
    assert tokens["scope"] == "orders:read orders:write"
    assert await introspect(env, tokens["access_token"])

    await change(user_side.service, uid)
    assert await user_side.deliver(), "the user service published nothing"

    await wait_inactive(env, tokens["access_token"])
    refreshed = await env.http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=env.basic("web"),
    )
    assert refreshed.status_code == 400, refreshed.text
    assert refreshed.json()["error"] == "invalid_grant"
    # The SSO session ended too: the next authorization shows the sign-in form.
    again = await env.http.get("/authorize", params=auth_params())
    assert again.status_code == 200
    assert "Sign in" in again.text


async def test_an_email_change_ends_nothing(token_env: Env, user_side: UserSide) -> None:
    env = token_env
    profile = await user_side.service.create_user(
        username="erin", password=PASSWORD, actor="admin", permissions=["orders:read"]
    )
    env.users.users["erin"] = FakeUser(
        str(profile.user.id), "erin", PASSWORD, frozenset({"orders:read"})
    )
    login = await submit_login(env.http, auth_params(), "erin", PASSWORD)
    tokens = (await exchange(env, query_of(login.headers["location"])["code"])).json()
    subscriber = env.app.state.user_events
    await user_side.service.update_user(profile.user.id, actor="admin", email="erin@example.com")
    assert "user.updated" in await user_side.deliver()
    deadline = time.monotonic() + 10
    while subscriber.processed_count < 2:  # user.created and user.updated
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert await introspect(env, tokens["access_token"])
