"""The event service's HTTP API, through httpx's ASGI transport, on SQLite/Postgres and Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI

from authbus.common._envelope import parse_delivery
from authbus.common._keys import ChannelKeys

Bearer = Callable[..., dict[str, str]]


async def test_publish_stores_the_event_and_fans_it_out(
    http: httpx.AsyncClient, bearer: Bearer, redis_url: str, redis_prefix: str
) -> None:
    keys = ChannelKeys(redis_prefix, "orders")
    r = await http.put("/v1/channels/orders/subscribers/billing", headers=bearer())
    assert r.status_code == 201

    r = await http.post(
        "/v1/channels/orders/events",
        json={"type": "order.placed", "data": {"id": "o-1"}, "correlation_id": "c-9"},
        headers=bearer("events:publish"),
    )

    assert r.status_code == 201, r.text
    body = r.json()
    assert body["type"] == "order.placed" and body["producer"] == "shop"
    assert body["position"] >= 1 and body["correlation_id"] == "c-9"
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    [item] = await client.lrange(keys.published("billing"), 0, -1)
    await client.aclose()
    delivery = parse_delivery(item)
    assert delivery.attempt == 1 and delivery.event.id == body["id"]


async def test_read_channel_replays_from_a_position(
    http: httpx.AsyncClient, bearer: Bearer
) -> None:
    for i in range(3):
        await http.post("/v1/channels/orders/events", json={"type": f"t{i}"}, headers=bearer())

    first = (await http.get("/v1/channels/orders/events?limit=2", headers=bearer())).json()
    rest = await http.get(
        f"/v1/channels/orders/events?after={first['next_after']}", headers=bearer("events:read")
    )

    assert [e["type"] for e in first["events"]] == ["t0", "t1"]
    assert [e["type"] for e in rest.json()["events"]] == ["t2"]


async def test_expected_version_conflict_is_409_with_the_current_version(
    http: httpx.AsyncClient, bearer: Bearer
) -> None:
    body = {"type": "order.placed", "aggregate_type": "order", "aggregate_id": "o-1"}
    ok = await http.post(
        "/v1/channels/orders/events", json={**body, "expected_version": 0}, headers=bearer()
    )
    late = await http.post(
        "/v1/channels/orders/events", json={**body, "expected_version": 0}, headers=bearer()
    )

    assert ok.status_code == 201 and ok.json()["aggregate_version"] == 1
    assert late.status_code == 409
    assert late.json()["error"] == "version_conflict"
    assert late.json()["current_version"] == 1


async def test_idempotency_key_returns_the_first_result_and_refuses_another_body(
    http: httpx.AsyncClient, bearer: Bearer
) -> None:
    headers = {**bearer(), "Idempotency-Key": "order-1"}
    first = await http.post("/v1/channels/orders/events", json={"type": "a"}, headers=headers)
    again = await http.post("/v1/channels/orders/events", json={"type": "a"}, headers=headers)
    other = await http.post("/v1/channels/orders/events", json={"type": "b"}, headers=headers)

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 409 and other.json()["error"] == "idempotency_key_reused"


async def test_batch_publish_is_one_transaction(http: httpx.AsyncClient, bearer: Bearer) -> None:
    agg = {"aggregate_type": "order", "aggregate_id": "o-1"}
    r = await http.post(
        "/v1/channels/orders/events/batch",
        json={"events": [{"type": "a", **agg}, {"type": "b", **agg}]},
        headers=bearer(),
    )
    bad = await http.post(
        "/v1/channels/orders/events/batch",
        json={"events": [{"type": "c"}, {"type": "d", **agg, "expected_version": 0}]},
        headers=bearer(),
    )

    assert r.status_code == 201
    assert [e["aggregate_version"] for e in r.json()["events"]] == [1, 2]
    assert bad.status_code == 409
    log = (await http.get("/v1/channels/orders/events", headers=bearer())).json()
    assert [e["type"] for e in log["events"]] == ["a", "b"]


async def test_aggregate_audit_trail(http: httpx.AsyncClient, bearer: Bearer) -> None:
    for t in ("created", "paid"):
        await http.post(
            "/v1/channels/orders/events",
            json={"type": t, "aggregate_type": "order", "aggregate_id": "o-7"},
            headers=bearer(),
        )

    r = await http.get("/v1/aggregates/order/o-7/events", headers=bearer("events:read"))

    assert r.status_code == 200
    assert r.json()["version"] == 2
    assert [e["type"] for e in r.json()["events"]] == ["created", "paid"]


async def test_subscribe_from_the_beginning_replays_the_log(
    http: httpx.AsyncClient, bearer: Bearer, redis_url: str, redis_prefix: str
) -> None:
    for i in range(3):
        await http.post("/v1/channels/orders/events", json={"type": f"t{i}"}, headers=bearer())

    r = await http.put(
        "/v1/channels/orders/subscribers/late", json={"start": "beginning"}, headers=bearer()
    )

    assert r.status_code == 201 and r.json()["replayed"] == 3
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    items = await client.lrange(ChannelKeys(redis_prefix, "orders").published("late"), 0, -1)
    await client.aclose()
    # Oldest at the consuming (right) end.
    assert [parse_delivery(i).event.type for i in reversed(items)] == ["t0", "t1", "t2"]


async def test_channel_stats_and_unsubscribe(http: httpx.AsyncClient, bearer: Bearer) -> None:
    await http.put("/v1/channels/orders/subscribers/billing", headers=bearer())
    await http.post("/v1/channels/orders/events", json={"type": "a"}, headers=bearer())

    stats = (await http.get("/v1/channels/orders", headers=bearer("events:read"))).json()
    channels = (await http.get("/v1/channels", headers=bearer("events:read"))).json()

    assert stats["events"] == 1
    [billing] = stats["subscribers"]
    assert (billing["name"], billing["waiting"], billing["processing"], billing["dead"]) == (
        "billing",
        1,
        0,
        0,
    )
    assert channels["channels"][0]["channel"] == "orders"
    gone = await http.delete("/v1/channels/orders/subscribers/billing", headers=bearer())
    again = await http.delete("/v1/channels/orders/subscribers/billing", headers=bearer())
    assert (gone.status_code, again.status_code) == (204, 404)


async def test_dead_letters_list_requeue_purge(
    http: httpx.AsyncClient, bearer: Bearer, redis_url: str, redis_prefix: str
) -> None:
    keys = ChannelKeys(redis_prefix, "orders")
    await http.put("/v1/channels/orders/subscribers/billing", headers=bearer())
    event = (
        await http.post("/v1/channels/orders/events", json={"type": "a"}, headers=bearer())
    ).json()
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    item = str(await client.rpop(keys.published("billing")))
    await client.lpush(keys.dead("billing"), item.replace("1:", "5:", 1))
    base = "/v1/channels/orders/subscribers/billing/dead-letters"

    listed = (await http.get(base, headers=bearer("events:read"))).json()
    requeued = await http.post(f"{base}/requeue", json={"event_id": event["id"]}, headers=bearer())
    waiting = await client.llen(keys.published("billing"))
    await client.lpush(keys.dead("billing"), "junk")
    purged = await http.delete(base, headers=bearer())
    await client.aclose()

    assert listed["dead_letters"][0]["attempt"] == 5
    assert listed["dead_letters"][0]["event"]["id"] == event["id"]
    assert requeued.json() == {"requeued": 1} and waiting == 1
    assert purged.json() == {"purged": 1}


# ------------------------------------------------------------------ bad input


async def test_malformed_json_is_400(http: httpx.AsyncClient, bearer: Bearer) -> None:
    r = await http.post(
        "/v1/channels/orders/events",
        content=b'{"type": ',
        headers={**bearer(), "Content-Type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


@pytest.mark.parametrize("channel", ["has%20space", "a:b", "%7Bx%7D", "-lead", "x" * 129])
async def test_a_bad_channel_name_is_422(
    http: httpx.AsyncClient, bearer: Bearer, channel: str
) -> None:
    r = await http.post(f"/v1/channels/{channel}/events", json={"type": "a"}, headers=bearer())
    assert r.status_code == 422 and r.json()["error"] == "validation_error"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"type": ""},
        {"type": "a", "data": [1, 2]},
        {"type": "a", "unknown": 1},
        {"type": "a", "aggregate_type": "order"},
        {"type": "a", "expected_version": 1},
        {"type": "a", "aggregate_type": "o", "aggregate_id": "1", "expected_version": -1},
    ],
)
async def test_an_invalid_event_is_422(
    http: httpx.AsyncClient, bearer: Bearer, body: dict[str, object]
) -> None:
    r = await http.post("/v1/channels/orders/events", json=body, headers=bearer())
    assert r.status_code == 422, r.text


async def test_a_missing_scope_is_403(http: httpx.AsyncClient, bearer: Bearer) -> None:
    r = await http.post(
        "/v1/channels/orders/events", json={"type": "a"}, headers=bearer("events:read")
    )
    admin = await http.put("/v1/channels/orders/subscribers/x", headers=bearer("events:read"))
    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"
    assert admin.status_code == 403


async def test_no_token_is_401(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/channels/orders/events", json={"type": "a"})
    assert r.status_code == 401 and "Bearer" in r.headers["WWW-Authenticate"]


async def test_an_oversized_body_is_413(http: httpx.AsyncClient, bearer: Bearer) -> None:
    big = {"type": "a", "data": {"blob": "x" * 10_000}}
    r = await http.post("/v1/channels/orders/events", json=big, headers=bearer())
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"


async def test_readiness_checks_database_and_redis(http: httpx.AsyncClient) -> None:
    r = await http.get("/readyz")
    assert r.status_code == 200
    assert r.json()["checks"] == {"database": "ok", "redis": "ok"}


async def test_metrics_count_published_events(
    http: httpx.AsyncClient, bearer: Bearer, app: FastAPI
) -> None:
    await http.post("/v1/channels/orders/events", json={"type": "a"}, headers=bearer())
    text = (await http.get("/metrics")).text
    assert 'authbus_events_published_total{channel="orders"} 1.0' in text


async def test_subscribe_from_a_position_catches_up_a_lagging_subscriber(
    app: FastAPI, http: httpx.AsyncClient, bearer: Bearer, redis_url: str, redis_prefix: str
) -> None:
    # Only the PUT below may feed the lagging subscriber: the background pass stops first.
    app.state.dispatcher.stop()
    await asyncio.wait([t for t in asyncio.all_tasks() if t.get_name() == "event-dispatcher"])
    keys = ChannelKeys(redis_prefix, "orders")
    positions = []
    for i in range(4):
        r = await http.post("/v1/channels/orders/events", json={"type": f"t{i}"}, headers=bearer())
        positions.append(r.json()["position"])
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    await client.hset(keys.lagging(), "billing", positions[2])

    stats = (await http.get("/v1/channels/orders", headers=bearer())).json()
    r = await http.put(
        "/v1/channels/orders/subscribers/billing",
        json={"start": positions[1]},
        headers=bearer(),
    )
    items = await client.lrange(keys.published("billing"), 0, -1)
    lagging = await client.hget(keys.lagging(), "billing")
    await client.aclose()

    assert r.json()["replayed"] == 2
    assert [parse_delivery(i).event.type for i in reversed(items)] == ["t2", "t3"]
    assert lagging is None
    assert stats["subscribers"] == []  # lagging alone does not subscribe


async def test_a_chunked_oversized_body_is_413(http: httpx.AsyncClient, bearer: Bearer) -> None:
    async def chunks() -> Any:
        yield b'{"type": "a", "data": {"blob": "'
        yield b"x" * 10_000
        yield b'"}}'

    r = await http.post(
        "/v1/channels/orders/events",
        content=chunks(),
        headers={**bearer(), "Content-Type": "application/json"},
    )
    assert r.status_code == 413


async def test_a_subscriber_without_recent_heartbeats_is_shown_stale(
    http: httpx.AsyncClient, bearer: Bearer, redis_url: str, redis_prefix: str
) -> None:
    keys = ChannelKeys(redis_prefix, "orders")
    await http.put("/v1/channels/orders/subscribers/billing", headers=bearer())
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    await client.zadd(keys.instances("billing"), {"billing-old": 1_000})  # 1970
    stats = (await http.get("/v1/channels/orders", headers=bearer())).json()
    await client.zadd(keys.instances("billing"), {"billing-new": time.time() * 1000})
    fresh = (await http.get("/v1/channels/orders", headers=bearer())).json()
    await client.aclose()

    [billing] = stats["subscribers"]
    assert billing["stale"] is True and billing["instances"][0]["stale"] is True
    assert fresh["subscribers"][0]["stale"] is False
