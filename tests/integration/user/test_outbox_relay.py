"""User changes reach the event service through the outbox (channel `users`)."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from authbus.core.migrate import upgrade_async
from authbus.core.settings import EventSettings, Settings
from authbus.user.app import create_app
from authbus.user.domain import OutboxEvent
from authbus.user.outbox import EventServicePublisher
from tests.integration.user.conftest import PASSWORD
from tests.support.tokens import TokenMinter


async def wait_for(condition: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if await condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_created_user_is_published_by_the_running_app(
    settings: Settings, minter: TokenMinter, admin: dict[str, str]
) -> None:
    published: list[OutboxEvent] = []

    async def publish(event: OutboxEvent) -> None:
        published.append(event)

    app = create_app(settings, token_validator=minter.validator(), event_publisher=publish)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://user.test") as c:
            r = await c.post(
                "/v1/users", json={"username": "alice", "password": PASSWORD}, headers=admin
            )
            assert r.status_code == 201

            async def relayed() -> bool:
                return bool(published)

            await wait_for(relayed)
    assert [(e.channel, e.type, e.aggregate_id) for e in published] == [
        ("users", "user.created", r.json()["id"])
    ]


class _Bearer(httpx.Auth):
    """The user service's token for the event service (minted locally in this test)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


async def test_outbox_events_land_in_the_event_log_once(
    settings: Settings, minter: TokenMinter, admin: dict[str, str], tmp_path: Path
) -> None:
    from authbus.event.app import create_app as create_event_app

    event_url = f"sqlite+aiosqlite:///{tmp_path / 'event.db'}"
    await upgrade_async(event_url, "event")
    event_settings = settings.model_copy(
        update={"event": EventSettings(database_url=event_url), "redis_url": None}
    )
    event_app: FastAPI = create_event_app(event_settings, token_validator=minter.validator())
    token = minter.mint("user-service", ["events:publish"], client_id="user-service")
    reader = {"Authorization": f"Bearer {minter.mint('reader', ['events:read'])}"}
    async with event_app.router.lifespan_context(event_app):
        publisher = EventServicePublisher(
            "http://event.test", _Bearer(token), transport=httpx.ASGITransport(app=event_app)
        )
        sent: list[OutboxEvent] = []

        async def publish(event: OutboxEvent) -> None:
            await publisher(event)
            sent.append(event)

        user_app = create_app(settings, token_validator=minter.validator(), event_publisher=publish)
        async with user_app.router.lifespan_context(user_app):
            transport = httpx.ASGITransport(app=user_app)
            async with httpx.AsyncClient(transport=transport, base_url="http://user.test") as c:
                r = await c.post(
                    "/v1/users", json={"username": "alice", "password": PASSWORD}, headers=admin
                )
                assert r.status_code == 201
            relay = user_app.state.outbox_relay

            async def relayed() -> bool:
                return not await relay.repository.pending_events(10)

            await wait_for(relayed)
        events_transport = httpx.ASGITransport(app=event_app)
        async with httpx.AsyncClient(
            transport=events_transport, base_url="http://event.test"
        ) as ev:

            async def stored() -> bool:
                got = await ev.get("/v1/channels/users/events", headers=reader)
                return bool(got.status_code == 200 and got.json()["events"])

            await wait_for(stored)
            # A relay that crashed before marking the row publishes it again: still one event.
            await publisher(sent[0])
            page = (await ev.get("/v1/channels/users/events", headers=reader)).json()
        await publisher.aclose()
    (event,) = page["events"]
    assert event["type"] == "user.created"
    assert event["data"]["id"] == r.json()["id"]
    assert event["data"]["username"] == "alice"
