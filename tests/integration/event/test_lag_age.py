"""The age of the oldest waiting event, in `GET /v1/channels/{channel}` and on `/metrics`.

No timing threshold is hard-coded: each test notes the clock around the publish and around
the read, so the reported age must lie between what it could at least be (read started -
publish returned) and at most be (read returned - publish started), and waits a measured
while in between so that the lower bound is well above zero. The service and the test share
this process's clock. Ages are rounded to the millisecond, hence the 1 ms of slack.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import redis.asyncio as aioredis
from fastapi import FastAPI

from authbus.common._keys import ChannelKeys
from authbus.event.metrics import DeliveryMetrics

Bearer = Callable[..., dict[str, str]]
ROUNDING = 0.001
WAIT_S = 0.3
AGE_METRIC = "authbus_event_subscriber_oldest_waiting_age_seconds"


@dataclass(frozen=True)
class Span:
    """When something started and when it returned, by this process's clock."""

    start: float
    end: float


async def publish(http: httpx.AsyncClient, bearer: Bearer, type_: str) -> Span:
    start = time.time()
    r = await http.post("/v1/channels/orders/events", json={"type": type_}, headers=bearer())
    end = time.time()
    assert r.status_code == 201, r.text
    return Span(start, end)


async def oldest_age(http: httpx.AsyncClient, bearer: Bearer) -> tuple[float, Span]:
    start = time.time()
    r = await http.get("/v1/channels/orders", headers=bearer("events:read"))
    end = time.time()
    assert r.status_code == 200, r.text
    [billing] = r.json()["subscribers"]
    return billing["oldest_waiting_age_s"], Span(start, end)


async def waited(seconds: float) -> float:
    """Sleep about `seconds`; returns how long it really took."""
    start = time.time()
    await asyncio.sleep(seconds)
    return time.time() - start


def assert_age(age: float, published: Span, read: Span) -> None:
    assert read.start - published.end - ROUNDING <= age <= read.end - published.start + ROUNDING


def metric(text: str, name: str, subscriber: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and f'subscriber="{subscriber}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


async def subscribe(http: httpx.AsyncClient, bearer: Bearer) -> None:
    r = await http.put("/v1/channels/orders/subscribers/billing", headers=bearer())
    assert r.is_success, r.text


async def claim_one(redis_url: str, prefix: str) -> None:
    """What a subscriber's claim does to the lists: the oldest waiting moves to processing."""
    keys = ChannelKeys(prefix, "orders")
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        moved = await client.lmove(
            keys.published("billing"), keys.processing("billing"), "RIGHT", "LEFT"
        )
        assert moved is not None
    finally:
        await client.aclose()


async def kill_one(redis_url: str, prefix: str) -> None:
    """Move the oldest waiting delivery to the dead list, as after its last failed attempt."""
    keys = ChannelKeys(prefix, "orders")
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        item = await client.rpop(keys.published("billing"))
        assert isinstance(item, str)
        await client.lpush(keys.dead("billing"), item.replace("1:", "5:", 1))
    finally:
        await client.aclose()


async def test_stats_report_the_age_of_the_oldest_waiting_event(
    http: httpx.AsyncClient, bearer: Bearer, redis_url: str, redis_prefix: str
) -> None:
    await subscribe(http, bearer)
    first = await publish(http, bearer, "first")
    gap = await waited(WAIT_S)
    second = await publish(http, bearer, "second")
    await waited(WAIT_S)

    age, read = await oldest_age(http, bearer)

    assert age >= gap - ROUNDING  # at least the measured wait since the first publish
    assert_age(age, first, read)  # the first event's age, not the second's

    await claim_one(redis_url, redis_prefix)  # the first is now processing, not waiting
    later, read_later = await oldest_age(http, bearer)
    assert_age(later, second, read_later)


async def test_a_requeued_dead_letter_behind_newer_events_is_the_oldest_waiting(
    http: httpx.AsyncClient, bearer: Bearer, redis_url: str, redis_prefix: str
) -> None:
    await subscribe(http, bearer)
    old = await publish(http, bearer, "old")
    await kill_one(redis_url, redis_prefix)  # what the reaper does after max_deliveries
    gap = await waited(WAIT_S)
    await publish(http, bearer, "new")
    r = await http.post(
        "/v1/channels/orders/subscribers/billing/dead-letters/requeue", headers=bearer()
    )
    assert r.json() == {"requeued": 1}  # "old" waits again, with "new"

    age, read = await oldest_age(http, bearer)

    assert age >= gap - ROUNDING
    assert_age(age, old, read)


async def test_stats_report_zero_when_nothing_waits(
    http: httpx.AsyncClient, bearer: Bearer, redis_url: str, redis_prefix: str
) -> None:
    await subscribe(http, bearer)
    empty, _ = await oldest_age(http, bearer)
    await publish(http, bearer, "only")
    await waited(WAIT_S)
    await claim_one(redis_url, redis_prefix)  # in flight: being handled, not waiting

    in_flight, _ = await oldest_age(http, bearer)

    assert empty == 0 and in_flight == 0


async def test_metrics_report_the_age_of_the_oldest_waiting_event(
    app: FastAPI, http: httpx.AsyncClient, bearer: Bearer
) -> None:
    lag: DeliveryMetrics = app.state.delivery_metrics
    await subscribe(http, bearer)
    published = await publish(http, bearer, "first")
    gap = await waited(WAIT_S)
    await publish(http, bearer, "second")

    start = time.time()
    await lag.refresh()  # what the background task does every 15 s
    text = (await http.get("/metrics")).text
    read = Span(start, time.time())

    age = metric(text, AGE_METRIC, "billing")
    assert age is not None, text
    assert age >= gap - ROUNDING
    assert_age(age, published, read)


async def test_metrics_report_zero_when_nothing_waits_and_nothing_without_subscribers(
    app: FastAPI, http: httpx.AsyncClient, bearer: Bearer, redis_url: str, redis_prefix: str
) -> None:
    lag: DeliveryMetrics = app.state.delivery_metrics
    await publish(http, bearer, "before.subscribing")
    await lag.refresh()
    unsubscribed = (await http.get("/metrics")).text

    await subscribe(http, bearer)
    await publish(http, bearer, "one")
    await claim_one(redis_url, redis_prefix)
    await lag.refresh()
    drained = (await http.get("/metrics")).text

    assert f"{AGE_METRIC}{{" not in unsubscribed  # no subscriber: no series at all
    assert metric(drained, AGE_METRIC, "billing") == 0
