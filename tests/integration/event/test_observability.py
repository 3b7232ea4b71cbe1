"""Delivery lag, visible: `GET /v1/channels`, `GET /v1/channels/{channel}` and `/metrics`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from fastapi import FastAPI

from authbus.common._keys import ChannelKeys
from authbus.core.settings import EventSettings, Settings
from authbus.event.app import create_app
from authbus.event.metrics import DeliveryMetrics
from tests.support.tokens import TokenMinter

Bearer = Callable[..., dict[str, str]]


async def _setup(http: httpx.AsyncClient, bearer: Bearer, redis_url: str, prefix: str) -> None:
    """billing: 2 waiting, 1 processing, 1 dead, one live instance; shipping: never seen."""
    for name in ("billing", "shipping"):
        await http.put(f"/v1/channels/orders/subscribers/{name}", headers=bearer())
    for i in range(3):
        await http.post("/v1/channels/orders/events", json={"type": f"t{i}"}, headers=bearer())
    keys = ChannelKeys(prefix, "orders")
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await client.lmove(keys.published("billing"), keys.processing("billing"), "RIGHT", "LEFT")
        await client.lpush(keys.dead("billing"), "garbage")
        server_s, _ = await client.time()
        await client.zadd(keys.instances("billing"), {"billing-1": int(server_s) * 1000})
    finally:
        await client.aclose()


def _sample(text: str, name: str, subscriber: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and f'subscriber="{subscriber}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} for {subscriber} not in /metrics")


async def test_channel_list_and_stats_report_lag_per_subscriber(
    http: httpx.AsyncClient, bearer: Bearer, redis_url: str, redis_prefix: str
) -> None:
    await _setup(http, bearer, redis_url, redis_prefix)

    listing = (await http.get("/v1/channels", headers=bearer("events:read"))).json()
    one = (await http.get("/v1/channels/orders", headers=bearer("events:read"))).json()

    assert listing["delivery"] == "ok"
    [orders] = listing["channels"]
    figures = ("name", "waiting", "processing", "dead", "stale", "lagging_since_position")
    assert [{k: s[k] for k in figures} for s in orders["subscribers"]] == [
        {k: s[k] for k in figures} for s in one["subscribers"]
    ]
    billing, shipping = one["subscribers"]
    assert (billing["waiting"], billing["processing"], billing["dead"]) == (2, 1, 1)
    assert billing["oldest_waiting_age_s"] >= 0
    assert billing["stale"] is False
    [instance] = billing["instances"]
    assert instance["id"] == "billing-1" and instance["last_seen_at"]
    assert shipping["waiting"] == 3 and shipping["stale"] is True and shipping["instances"] == []


async def test_metrics_show_delivery_lag_per_subscriber(
    http: httpx.AsyncClient, bearer: Bearer, app: FastAPI, redis_url: str, redis_prefix: str
) -> None:
    await _setup(http, bearer, redis_url, redis_prefix)
    lag: DeliveryMetrics = app.state.delivery_metrics

    await lag.refresh()  # what the background task does every 15 s
    text = (await http.get("/metrics")).text

    assert _sample(text, "authbus_event_subscriber_waiting", "billing") == 2
    assert _sample(text, "authbus_event_subscriber_processing", "billing") == 1
    assert _sample(text, "authbus_event_subscriber_dead", "billing") == 1
    assert _sample(text, "authbus_event_subscriber_instances", "billing") == 1
    assert _sample(text, "authbus_event_subscriber_stale", "shipping") == 1
    assert _sample(text, "authbus_event_subscriber_lagging", "shipping") == 0
    assert _sample(text, "authbus_event_subscriber_oldest_waiting_age_seconds", "shipping") >= 0
    assert 'authbus_events_published_total{channel="orders"} 3.0' in text

    await http.delete("/v1/channels/orders/subscribers/shipping", headers=bearer())
    await lag.refresh()
    text = (await http.get("/metrics")).text
    assert 'subscriber="shipping"' not in text  # an unsubscribed name disappears


async def test_without_redis_the_channel_list_still_answers_from_the_log(
    event_db: str, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, event=EventSettings(database_url=event_db))
    minter = TokenMinter()
    headers = {"Authorization": f"Bearer {minter.mint('shop', ['events:publish', 'events:read'])}"}
    app = create_app(settings, token_validator=minter.validator())
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://event.test") as http,
    ):
        await http.post("/v1/channels/orders/events", json={"type": "a"}, headers=headers)
        r = await http.get("/v1/channels", headers=headers)

    assert r.status_code == 200
    assert r.json()["delivery"] == "unavailable"
    assert r.json()["channels"][0]["subscribers"] is None
