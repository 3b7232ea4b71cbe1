"""EventSubscriber end to end against a real Redis: delivery, retries, leases, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from authbus.common._envelope import Event, format_delivery
from authbus.common._keys import ChannelKeys
from authbus.common._scripts import DeliveryOps
from authbus.common.subscriber import EventSubscriber
from tests.conftest import RedisServer
from tests.integration.event.helpers import eventually

Bearer = Callable[..., dict[str, str]]
FAST: dict[str, Any] = {"poll_interval": 0.2, "retry_backoff_ms": 20, "lease_ms": 2000}


class Recorder(EventSubscriber):
    """Records what it processed; fails events whose data says so."""

    channel = "orders"
    name = "billing"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.seen: list[Event] = []
        self.attempts: dict[str, int] = {}

    async def process_event(self, event: Event) -> None:
        self.attempts[event.id] = self.attempts.get(event.id, 0) + 1
        if event.data.get("poison"):
            raise RuntimeError("cannot handle this one")
        if self.attempts[event.id] <= event.data.get("fail_times", 0):
            raise RuntimeError("transient failure")
        self.seen.append(event)


@contextlib.asynccontextmanager
async def running(*subs: EventSubscriber) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(s.serve()) for s in subs]
    try:
        yield
    finally:
        for s in subs:
            s.stop()
        # Generous: the machine may be busy; a hang still fails the test.
        await asyncio.wait_for(asyncio.gather(*tasks), 60)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


def events(n: int, start: int = 1, **data: Any) -> list[Event]:
    return [
        Event(id=f"e-{p}", position=p, channel="orders", type="t", data=data)
        for p in range(start, start + n)
    ]


async def publish(client: aioredis.Redis, prefix: str, batch: Sequence[Event]) -> None:
    """Fan out directly (what the event service does after its commit)."""
    await DeliveryOps(client, prefix, "orders").fanout(
        [format_delivery(e) for e in batch], first_position=batch[0].position
    )


async def empty(client: aioredis.Redis, keys: ChannelKeys, name: str = "billing") -> bool:
    return (
        await client.llen(keys.published(name)) == 0
        and await client.llen(keys.processing(name)) == 0
        and await client.zcard(keys.leases(name)) == 0
    )


async def test_published_event_is_processed_once_and_acknowledged(
    http: httpx.AsyncClient,
    bearer: Bearer,
    redis_url: str,
    redis_prefix: str,
    redis: aioredis.Redis,
) -> None:
    sub = Recorder(redis_url, prefix=redis_prefix, concurrency=1, **FAST)
    keys = sub.keys
    async with running(sub):
        await eventually(lambda: redis.sismember(keys.subscribers, "billing"))
        ids = []
        for i in range(5):
            r = await http.post(
                "/v1/channels/orders/events", json={"type": f"t{i}"}, headers=bearer()
            )
            ids.append(r.json()["id"])
        await eventually(lambda: _true(len(sub.seen) == 5))
        await eventually(lambda: empty(redis, keys))

    assert [e.id for e in sub.seen] == ids  # in publish order
    assert all(n == 1 for n in sub.attempts.values())
    assert await redis.zcard(keys.instances("billing")) == 0  # deregistered on stop


async def _true(value: bool) -> bool:
    return value


async def test_events_published_before_start_are_drained_at_start(
    redis_url: str, redis_prefix: str, redis: aioredis.Redis
) -> None:
    keys = ChannelKeys(redis_prefix, "orders")
    await redis.sadd(keys.subscribers, "billing")
    await publish(redis, redis_prefix, events(30))
    sub = Recorder(redis_url, prefix=redis_prefix, **FAST)

    async with running(sub):
        await eventually(lambda: _true(len(sub.seen) == 30))

    assert sorted(e.position for e in sub.seen) == list(range(1, 31))


async def test_a_failed_event_is_retried_after_a_backoff(
    redis_url: str, redis_prefix: str, redis: aioredis.Redis
) -> None:
    sub = Recorder(redis_url, prefix=redis_prefix, **FAST)
    async with running(sub):
        await eventually(lambda: redis.sismember(sub.keys.subscribers, "billing"))
        await publish(redis, redis_prefix, events(1, fail_times=2))
        await eventually(lambda: _true(len(sub.seen) == 1))
        await eventually(lambda: empty(redis, sub.keys))

    assert sub.attempts["e-1"] == 3


async def test_a_poison_event_goes_to_dead_while_others_flow(
    redis_url: str, redis_prefix: str, redis: aioredis.Redis
) -> None:
    sub = Recorder(redis_url, prefix=redis_prefix, max_deliveries=3, **FAST)
    async with running(sub):
        await eventually(lambda: redis.sismember(sub.keys.subscribers, "billing"))
        await publish(redis, redis_prefix, events(1, poison=True))
        await publish(redis, redis_prefix, events(20, start=2))
        await eventually(lambda: _true(len(sub.seen) == 20))
        await eventually(lambda: _true(sub.attempts.get("e-1") == 3))
        await eventually(lambda: empty(redis, sub.keys))

    [dead] = [str(d) for d in await redis.lrange(sub.keys.dead("billing"), 0, -1)]
    assert dead.startswith("3:") and '"id":"e-1"' in dead


async def test_many_instances_process_each_event_exactly_once(
    redis_url: str, redis_prefix: str, redis: aioredis.Redis
) -> None:
    processed: list[str] = []

    class Counter(EventSubscriber):
        channel = "orders"
        name = "billing"

        async def process_event(self, event: Event) -> None:
            processed.append(event.id)

    # Long leases: this test is about the atomic claim; on a loaded machine a 2 s lease may
    # expire and legitimately redeliver (at-least-once), which would blur what it checks.
    opts = {**FAST, "lease_ms": 120_000}
    subs = [Counter(redis_url, prefix=redis_prefix, concurrency=10, **opts) for _ in range(50)]
    async with running(*subs):
        await eventually(lambda: redis.sismember(subs[0].keys.subscribers, "billing"))
        for start in range(1, 10_001, 1000):
            await publish(redis, redis_prefix, events(1000, start=start))
        await eventually(lambda: _true(len(processed) >= 10_000), timeout=120)
        await eventually(lambda: empty(redis, subs[0].keys))

    assert len(processed) == 10_000 == len(set(processed))
    assert sum(1 for s in subs if s.processed_count) > 1  # the work was shared


async def test_a_long_handler_renews_its_lease(
    redis_url: str, redis_prefix: str, redis: aioredis.Redis
) -> None:
    calls: list[str] = []

    class Slow(EventSubscriber):
        channel = "orders"
        name = "billing"

        async def process_event(self, event: Event) -> None:
            calls.append(self.instance_id)
            await asyncio.sleep(2.0)  # several times the lease

    # Renewed every 200 ms: slack for a busy machine, yet far shorter than the handler.
    opts: dict[str, Any] = {"lease_ms": 600, "poll_interval": 0.1}
    a, b = (
        Slow(redis_url, prefix=redis_prefix, **opts),
        Slow(redis_url, prefix=redis_prefix, **opts),
    )
    async with running(a, b):
        await eventually(lambda: redis.sismember(a.keys.subscribers, "billing"))
        await publish(redis, redis_prefix, events(1))
        await eventually(lambda: _true(a.processed_count + b.processed_count == 1))

    assert len(calls) == 1  # the other instance's reaper never took it over


async def test_a_sync_handler_runs_in_a_thread_with_start_and_stop(
    redis_url: str, redis_prefix: str, redis: aioredis.Redis
) -> None:
    threads: list[str] = []

    class Sync(EventSubscriber):
        channel = "orders"
        name = "billing"

        def process_event(self, event: Event) -> None:
            threads.append(threading.current_thread().name)

    sub = Sync(redis_url, prefix=redis_prefix, **FAST)
    await asyncio.to_thread(sub.start)  # returns once registered and listening
    try:
        assert sub.ready.is_set()
        await publish(redis, redis_prefix, events(3))
        await eventually(lambda: _true(len(threads) == 3))
    finally:
        sub.stop()
        await asyncio.to_thread(sub.join, 10)

    assert threading.main_thread().name not in threads


async def test_idempotent_subscriber_skips_a_duplicate_delivery(
    redis_url: str, redis_prefix: str, redis: aioredis.Redis
) -> None:
    class Once(Recorder):
        idempotent = True

    sub = Once(redis_url, prefix=redis_prefix, concurrency=1, **FAST)
    async with running(sub):
        await eventually(lambda: redis.sismember(sub.keys.subscribers, "billing"))
        await publish(redis, redis_prefix, events(1))
        await publish(redis, redis_prefix, events(1))  # the same event fanned out twice
        await eventually(lambda: empty(redis, sub.keys))

    assert len(sub.seen) == 1


async def test_subscriber_survives_its_pubsub_connection_being_killed(
    redis_server_factory: Callable[[], RedisServer],
) -> None:
    server = redis_server_factory()
    client = aioredis.Redis.from_url(server.url, decode_responses=True)
    # A long poll interval: only notifications (after the reconnect) can deliver quickly.
    sub = Recorder(server.url, poll_interval=30, retry_backoff_ms=20)
    try:
        async with running(sub):

            async def subscribed() -> bool:
                reply = await client.execute_command(  # type: ignore[no-untyped-call]
                    "PUBSUB", "NUMSUB", sub.keys.notify
                )
                return int(reply[1]) == 1

            await eventually(subscribed)
            killed = await client.execute_command(  # type: ignore[no-untyped-call]
                "CLIENT", "KILL", "TYPE", "pubsub"
            )
            assert killed >= 1
            await eventually(subscribed)
            await publish(client, "ab", events(1))
            await eventually(lambda: _true(len(sub.seen) == 1), timeout=5)
    finally:
        await client.aclose()


async def test_subscriber_reconnects_after_a_redis_restart(
    redis_server_factory: Callable[[], RedisServer],
) -> None:
    server = redis_server_factory()
    sub = Recorder(server.url, **FAST)
    async with running(sub):
        client = aioredis.Redis.from_url(server.url, decode_responses=True)
        try:
            await eventually(lambda: client.sismember(sub.keys.subscribers, "billing"))
            server.stop()
            await asyncio.sleep(0.3)
            server.start()  # empty: the subscriber must register itself again
            await eventually(lambda: client.sismember(sub.keys.subscribers, "billing"))
            await publish(client, "ab", events(1))
            await eventually(lambda: _true(len(sub.seen) == 1))
        finally:
            await client.aclose()


async def test_an_event_claimed_by_a_killed_process_is_redelivered(
    redis_url: str, redis_prefix: str, redis: aioredis.Redis
) -> None:
    import os
    import signal
    import sys

    keys = ChannelKeys(redis_prefix, "orders")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.event.kill_target",
        redis_url,
        redis_prefix,
        cwd=root,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        await eventually(lambda: redis.sismember(keys.subscribers, "billing"))
        await publish(redis, redis_prefix, events(1))
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert line.split() == [b"claimed", b"e-1"]
        proc.send_signal(signal.SIGKILL)  # between claim and ack
        await proc.wait()
        assert await redis.llen(keys.processing("billing")) == 1

        sub = Recorder(redis_url, prefix=redis_prefix, **FAST)
        async with running(sub):
            await eventually(lambda: _true(len(sub.seen) == 1))
            await eventually(lambda: empty(redis, keys))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    assert sub.seen[0].id == "e-1"
    assert await redis.llen(keys.dead("billing")) == 0
