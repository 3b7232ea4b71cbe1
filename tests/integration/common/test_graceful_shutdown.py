"""Graceful shutdown of an EventSubscriber: what it is handling when asked to stop, it finishes.

`stop()` (what a service's shutdown or a
SIGTERM handler calls) claims nothing new, lets the running handlers complete and
acknowledges them; a handler that outlives `stop_timeout` is left to the lease, so another
instance redoes it rather than it being lost.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from authbus.common import Event, EventSubscriber
from authbus.common._envelope import format_delivery
from authbus.common._keys import ChannelKeys
from authbus.common._scripts import DeliveryOps

FAST: dict[str, Any] = {"poll_interval": 0.2, "retry_backoff_ms": 20, "lease_ms": 2000}


class SlowHandler(EventSubscriber):
    """Takes `seconds` per event and records when it started and finished each."""

    channel = "shutdown"
    name = "slow"

    def __init__(self, *args: Any, seconds: float, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.seconds = seconds
        self.started = threading.Event()
        self.finished: list[str] = []

    async def process_event(self, event: Event) -> None:
        self.started.set()
        await asyncio.sleep(self.seconds)
        self.finished.append(event.id)


class SlowSyncHandler(SlowHandler):
    name = "slow-sync"

    def process_event(self, event: Event) -> None:  # type: ignore[override]
        self.started.set()
        time.sleep(self.seconds)
        self.finished.append(event.id)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def publish(client: aioredis.Redis, prefix: str, *ids: str) -> None:
    batch = [
        format_delivery(Event(id=i, position=n, channel="shutdown", type="t", data={}))
        for n, i in enumerate(ids, start=1)
    ]
    await DeliveryOps(client, prefix, "shutdown").fanout(batch, first_position=1)


async def pending(client: aioredis.Redis, prefix: str, name: str) -> tuple[int, int, int]:
    keys = ChannelKeys(prefix, "shutdown")
    return (
        await client.llen(keys.published(name)),
        await client.llen(keys.processing(name)),
        await client.zcard(keys.leases(name)),
    )


@pytest.mark.parametrize("kind", [SlowHandler, SlowSyncHandler])
async def test_stop_lets_the_event_in_flight_finish_and_acknowledges_it(
    redis: aioredis.Redis, redis_url: str, redis_prefix: str, kind: type[SlowHandler]
) -> None:
    sub = kind(redis_url, prefix=redis_prefix, concurrency=1, seconds=1.0, **FAST)
    running = asyncio.create_task(sub.serve())
    assert await sub.wait_ready()
    await publish(redis, redis_prefix, "e-1", "e-2")
    assert await asyncio.to_thread(sub.started.wait, 10)

    sub.stop()  # while e-1 is being handled
    await asyncio.wait_for(running, 30)

    assert sub.finished == ["e-1"]  # finished, not cancelled
    # e-1 acknowledged; e-2 never claimed, waiting for the next instance.
    assert await pending(redis, redis_prefix, kind.name) == (1, 0, 0)


async def test_a_handler_outliving_stop_timeout_is_left_to_its_lease(
    redis: aioredis.Redis, redis_url: str, redis_prefix: str
) -> None:
    sub = SlowHandler(
        redis_url, prefix=redis_prefix, concurrency=1, seconds=30, stop_timeout=0.5, **FAST
    )
    running = asyncio.create_task(sub.serve())
    assert await sub.wait_ready()
    await publish(redis, redis_prefix, "e-1")
    assert await asyncio.to_thread(sub.started.wait, 10)

    sub.stop()
    await asyncio.wait_for(running, 10)  # bounded by stop_timeout, not the handler

    assert sub.finished == []
    # Still in processing under its lease: another instance's reaper requeues it.
    assert await pending(redis, redis_prefix, "slow") == (0, 1, 1)
    successor = SlowHandler(redis_url, prefix=redis_prefix, seconds=0, **FAST)
    task = asyncio.create_task(successor.serve())
    try:
        deadline = time.monotonic() + 15
        while successor.finished != ["e-1"] and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert successor.finished == ["e-1"]
    finally:
        successor.stop()
        await asyncio.wait_for(task, 30)
