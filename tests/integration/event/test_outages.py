"""Redis or the database going away: publishes stay durable, delivery catches up."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from fastapi import FastAPI

from authbus.common._envelope import parse_delivery
from authbus.common._keys import ChannelKeys
from authbus.core.settings import EventSettings, Settings
from authbus.event.app import create_app
from authbus.event.delivery import Dispatcher
from tests.conftest import RedisServer, free_port
from tests.integration.event.helpers import eventually
from tests.support.tokens import TokenMinter

SCOPES = ["events:publish", "events:read", "events:admin"]


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://event.test")


async def test_publish_while_redis_is_down_is_durable_and_delivered_once_it_is_back(
    event_db: str, redis_server_factory: Callable[[], RedisServer], tmp_path: Path
) -> None:
    server = redis_server_factory()
    keys = ChannelKeys("ab", "orders")
    settings = Settings(
        data_dir=tmp_path,
        redis_url=server.url,
        event=EventSettings(database_url=event_db, dispatch_interval_s=3600),
    )
    minter = TokenMinter()
    headers = {"Authorization": f"Bearer {minter.mint('shop', SCOPES, client_id='shop')}"}
    app = create_app(settings, token_validator=minter.validator())
    async with app.router.lifespan_context(app), _client(app) as http:
        await http.put("/v1/channels/orders/subscribers/billing", headers=headers)
        server.stop()

        r = await http.post("/v1/channels/orders/events", json={"type": "a"}, headers=headers)
        ready = await http.get("/readyz")

        assert r.status_code == 201
        assert ready.status_code == 503 and ready.json()["checks"]["database"] == "ok"
        dispatcher: Dispatcher = app.state.dispatcher
        assert dispatcher.backlog
        # Published while the backlog exists: queued behind it, so order is kept.
        r2 = await http.post("/v1/channels/orders/events", json={"type": "b"}, headers=headers)
        assert r2.status_code == 201

        # Stop the loop so the pass below is the only one (deterministic test).
        dispatcher.stop()
        await app.state.dispatcher_task
        server.start()  # an empty server (no persistence in tests): re-register the subscriber
        client = aioredis.Redis.from_url(server.url, decode_responses=True)
        try:
            await client.sadd(keys.subscribers, "billing")
            assert await dispatcher.run_once() == 2
            items = await client.lrange(keys.published("billing"), 0, -1)
        finally:
            await client.aclose()
        assert [parse_delivery(i).event.type for i in reversed(items)] == ["a", "b"]
        assert await dispatcher.run_once() == 0  # nothing left: inline fan-out resumes
        assert not dispatcher.backlog
        assert await app.state.event_log.undispatched() == []


async def test_the_dispatcher_loop_delivers_by_itself(
    event_db: str, redis_server_factory: Callable[[], RedisServer], tmp_path: Path
) -> None:
    server = redis_server_factory()
    keys = ChannelKeys("ab", "orders")
    settings = Settings(
        data_dir=tmp_path,
        redis_url=server.url,
        event=EventSettings(database_url=event_db, dispatch_interval_s=0.5),
    )
    minter = TokenMinter()
    headers = {"Authorization": f"Bearer {minter.mint('shop', SCOPES, client_id='shop')}"}
    app = create_app(settings, token_validator=minter.validator())
    async with app.router.lifespan_context(app), _client(app) as http:
        server.stop()
        r = await http.post("/v1/channels/orders/events", json={"type": "a"}, headers=headers)
        assert r.status_code == 201
        server.start()
        client = aioredis.Redis.from_url(server.url, decode_responses=True)
        try:
            await client.sadd(keys.subscribers, "billing")

            async def delivered() -> bool:
                return bool(await client.llen(keys.published("billing")))

            await eventually(delivered)
        finally:
            await client.aclose()


async def test_a_database_outage_is_503_with_retry_after(redis_url: str, tmp_path: Path) -> None:
    dead_db = f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none"
    settings = Settings(
        data_dir=tmp_path, redis_url=redis_url, event=EventSettings(database_url=dead_db)
    )
    minter = TokenMinter()
    headers = {"Authorization": f"Bearer {minter.mint('shop', SCOPES, client_id='shop')}"}
    app = create_app(settings, token_validator=minter.validator())
    async with app.router.lifespan_context(app), _client(app) as http:
        r = await http.post("/v1/channels/orders/events", json={"type": "a"}, headers=headers)
        read = await http.get("/v1/channels/orders/events", headers=headers)
        ready = await http.get("/readyz")

    assert r.status_code == 503 and "Retry-After" in r.headers
    assert r.json()["error"] == "temporarily_unavailable"
    assert read.status_code == 503
    assert ready.status_code == 503 and ready.json()["checks"]["redis"] == "ok"


async def test_without_redis_publishing_works_and_delivery_admin_is_503(
    event_db: str, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, event=EventSettings(database_url=event_db))
    minter = TokenMinter()
    headers = {"Authorization": f"Bearer {minter.mint('shop', SCOPES, client_id='shop')}"}
    app = create_app(settings, token_validator=minter.validator())
    async with app.router.lifespan_context(app), _client(app) as http:
        r = await http.post("/v1/channels/orders/events", json={"type": "a"}, headers=headers)
        stats = await http.get("/v1/channels/orders", headers=headers)
        ready = await http.get("/readyz")
        metrics = (await http.get("/metrics")).text

    assert r.status_code == 201
    assert stats.status_code == 503 and stats.json()["error"] == "delivery_unavailable"
    assert ready.status_code == 200 and set(ready.json()["checks"]) == {"database"}
    assert "authbus_event_fanout_deferred_total 1.0" in metrics


async def test_a_full_subscriber_lags_then_catches_up_from_the_log_in_order(
    event_db: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        event=EventSettings(
            database_url=event_db, dispatch_interval_s=3600, max_waiting_per_subscriber=4
        ),
    )
    keys = ChannelKeys(redis_prefix, "orders")
    minter = TokenMinter()
    headers = {"Authorization": f"Bearer {minter.mint('shop', SCOPES, client_id='shop')}"}
    app = create_app(settings, token_validator=minter.validator())
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with app.router.lifespan_context(app), _client(app) as http:
            await http.put("/v1/channels/orders/subscribers/billing", headers=headers)
            for i in range(10):
                r = await http.post(
                    "/v1/channels/orders/events", json={"type": f"t{i}"}, headers=headers
                )
                assert r.status_code == 201

            assert await client.llen(keys.published("billing")) == 4  # bounded
            stats = (await http.get("/v1/channels/orders", headers=headers)).json()
            assert stats["subscribers"][0]["lagging_since_position"] is not None

            dispatcher: Dispatcher = app.state.dispatcher
            received: list[str] = []
            while True:
                # The subscriber consumes what it has; the dispatcher feeds it from the log.
                while item := await client.rpop(keys.published("billing")):
                    received.append(parse_delivery(str(item)).event.type)
                if not await client.hgetall(keys.lagging()):
                    break
                await dispatcher.catch_up_lagging()

            r = await http.post("/v1/channels/orders/events", json={"type": "t10"}, headers=headers)
            assert r.status_code == 201
            last = await client.rpop(keys.published("billing"))
    finally:
        await client.aclose()

    assert received == [f"t{i}" for i in range(10)]
    assert parse_delivery(str(last)).event.type == "t10"  # inline fan-out resumed
