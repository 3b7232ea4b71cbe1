"""Failure tests of delivery that test_subscriber.py and test_outages.py lack.

Each asserts that every event is processed and none is lost, with duplicates only where
at-least-once allows them. The lease and crash cases run on a plain Redis and on a 3-master
Redis Cluster; the pub/sub kill and the restart are about one server's connections.
Already elsewhere: SIGKILL between claim and ack, lease renewal,
Redis unreachable at publish time, a poison event that always raises, 50 instances x 10,000
events (test_subscriber.py, test_outages.py).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from authbus.common._envelope import Event, parse_delivery
from authbus.common._keys import ChannelKeys
from authbus.common._scripts import AsyncRedis, connect
from authbus.common.subscriber import EventSubscriber
from authbus.core.settings import EventSettings, Settings
from authbus.event.app import create_app
from tests.conftest import RedisServer, _wait_for_port, embedded_redis_binary
from tests.contracts.redis_cluster import shared_cluster
from tests.integration.event.helpers import eventually
from tests.integration.event.test_subscriber import (
    FAST,
    Recorder,
    _true,
    empty,
    events,
    publish,
    running,
)
from tests.support.tokens import TokenMinter

SCOPES = ["events:publish", "events:read", "events:admin"]
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(params=["redis", "cluster"])
def delivery_url(request: pytest.FixtureRequest) -> str:
    """A plain Redis (emptied for the test) or a Redis Cluster node (`?cluster=true`); keys
    are the test's own through `redis_prefix`."""
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    return shared_cluster(request).url


@pytest.fixture
async def redis(delivery_url: str) -> AsyncIterator[AsyncRedis]:
    client = connect(delivery_url, decode_responses=True)
    yield client
    await client.aclose()


class Gated(EventSubscriber):
    """The first delivery of an event waits for `release`; later ones return at once."""

    channel = "orders"
    name = "billing"
    calls: list[tuple[str, int]]
    first_started: asyncio.Event
    second_started: asyncio.Event
    release: asyncio.Event

    async def process_event(self, event: Event) -> None:
        self.calls.append((self.instance_id, len(self.calls) + 1))
        if len(self.calls) == 1:
            self.first_started.set()
            await self.release.wait()
        else:
            self.second_started.set()
            await self.second_may_finish.wait()

    second_may_finish: asyncio.Event


def gated(shared: dict[str, Any], **options: Any) -> Gated:
    sub = Gated(**options)
    for name, value in shared.items():
        setattr(sub, name, value)
    return sub


def gates() -> dict[str, Any]:
    return {
        "calls": [],
        "first_started": asyncio.Event(),
        "second_started": asyncio.Event(),
        "release": asyncio.Event(),
        "second_may_finish": asyncio.Event(),
    }


async def test_without_renewal_a_handler_slower_than_its_lease_is_redelivered_exactly_once(
    delivery_url: str, redis_prefix: str, redis: AsyncRedis
) -> None:
    shared = gates()
    shared["second_may_finish"].set()
    common: dict[str, Any] = {
        "redis_url": delivery_url,
        "prefix": redis_prefix,
        "poll_interval": 0.1,
    }
    # A cannot renew: its 300 ms lease runs out while its handler waits.
    a = gated(shared, lease_ms=300, renew_leases=False, concurrency=1, **common)
    async with running(a):
        await eventually(lambda: redis.sismember(a.keys.subscribers, "billing"))
        await publish(redis, redis_prefix, events(1))
        await asyncio.wait_for(shared["first_started"].wait(), 30)
        b = gated(shared, lease_ms=10_000, **common)  # renews: its delivery is not retried
        async with running(b):
            # Only the reaper's requeue (attempt 2) can reach B while A still holds its copy.
            await asyncio.wait_for(shared["second_started"].wait(), 30)
            await eventually(lambda: _true(b.processed_count == 1))
            shared["release"].set()  # A finishes late; its ack removes nothing
            await eventually(lambda: _true(a.processed_count == 1))
            await eventually(lambda: empty(redis, a.keys))

    assert [n for _, n in shared["calls"]] == [1, 2]  # one delivery, one redelivery
    assert shared["calls"][0][0] == a.instance_id and shared["calls"][1][0] == b.instance_id
    assert await redis.llen(a.keys.dead("billing")) == 0


async def test_a_late_ack_does_not_remove_the_claim_of_the_instance_that_took_over(
    delivery_url: str, redis_prefix: str, redis: AsyncRedis
) -> None:
    shared = gates()
    common: dict[str, Any] = {
        "redis_url": delivery_url,
        "prefix": redis_prefix,
        "poll_interval": 0.1,
    }
    a = gated(shared, lease_ms=300, renew_leases=False, concurrency=1, **common)
    keys = a.keys
    async with running(a):
        await eventually(lambda: redis.sismember(keys.subscribers, "billing"))
        await publish(redis, redis_prefix, events(1))
        await asyncio.wait_for(shared["first_started"].wait(), 30)
        b = gated(shared, lease_ms=10_000, **common)
        async with running(b):
            await asyncio.wait_for(shared["second_started"].wait(), 30)  # B holds attempt 2
            shared["release"].set()
            await eventually(lambda: _true(a.processed_count == 1))  # A's late ack is done

            [held] = await redis.lrange(keys.processing("billing"), 0, -1)
            assert parse_delivery(held).attempt == 2  # B's claim survived the late ack
            assert await redis.zscore(keys.leases("billing"), held) is not None

            shared["second_may_finish"].set()
            await eventually(lambda: empty(redis, keys))

    assert len(shared["calls"]) == 2
    assert await redis.llen(keys.dead("billing")) == 0


async def test_events_published_while_the_pubsub_connection_is_killed_are_all_processed(
    redis_server_factory: Callable[[], RedisServer],
) -> None:
    # A private server: CLIENT KILL TYPE pubsub would cut other tests' subscribers too.
    server = redis_server_factory()
    client = aioredis.Redis.from_url(server.url, decode_responses=True)
    # No timer drains in this test: only notifications and the drain on reconnect deliver.
    sub = Recorder(server.url, poll_interval=60, retry_backoff_ms=20)
    try:
        async with running(sub):
            await eventually(lambda: client.sismember(sub.keys.subscribers, "billing"))
            kills = 0
            for position in range(1, 101):
                await publish(client, "ab", events(1, start=position))
                if position % 20 == 10:
                    kills += int(
                        await client.execute_command(  # type: ignore[no-untyped-call]
                            "CLIENT", "KILL", "TYPE", "pubsub"
                        )
                    )
            await eventually(lambda: _true(len({e.id for e in sub.seen}) == 100), timeout=30)
            await eventually(lambda: empty(client, sub.keys))
    finally:
        await client.aclose()

    assert kills >= 1
    assert {e.position for e in sub.seen} == set(range(1, 101))
    assert len(sub.seen) == 100  # one instance, no lease expiry: no duplicate either


class PersistentRedis(RedisServer):
    """A Redis that keeps its data across restarts (AOF, fsync on every write), as production
    must for the delivery guarantee: the lists live only in Redis."""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                embedded_redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port)


async def test_redis_restarted_under_load_loses_no_event(event_db: str, tmp_path: Path) -> None:
    server = PersistentRedis()
    server.start()
    settings = Settings(
        data_dir=tmp_path,
        redis_url=server.url,
        event=EventSettings(database_url=event_db, dispatch_interval_s=0.1),
    )
    minter = TokenMinter()
    headers = {"Authorization": f"Bearer {minter.mint('shop', SCOPES, client_id='shop')}"}
    app = create_app(settings, token_validator=minter.validator())
    subs = [Recorder(server.url, **FAST) for _ in range(2)]
    published: list[str] = []
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://event.test"
            ) as http,
            running(*subs),
        ):
            assert all(await asyncio.gather(*(s.wait_ready() for s in subs)))

            async def publish_many(n: int) -> None:
                for i in range(n):
                    r = await http.post(
                        "/v1/channels/orders/events", json={"type": f"t{i}"}, headers=headers
                    )
                    assert r.status_code == 201, r.text  # durable even while Redis is away
                    published.append(r.json()["id"])

            load = asyncio.create_task(publish_many(150))
            await eventually(lambda: _true(len(published) >= 40), timeout=60)
            await asyncio.to_thread(server.stop)  # under load: publishes and claims in flight
            await eventually(lambda: _true(len(published) >= 60), timeout=60)
            await asyncio.to_thread(server.start)  # same port and AOF: the lists come back
            await asyncio.wait_for(load, 120)

            async def all_processed() -> bool:
                return {e.id for s in subs for e in s.seen} == set(published)

            await eventually(all_processed, timeout=120)
            client = aioredis.Redis.from_url(server.url, decode_responses=True)
            try:
                await eventually(lambda: empty(client, subs[0].keys), timeout=60)
                assert await client.llen(subs[0].keys.dead("billing")) == 0
            finally:
                await client.aclose()
    finally:
        server.cleanup()

    assert len(published) == 150
    assert app.state.dispatcher.dispatched_total >= 1  # some came through the outage path
    assert await app.state.event_log.undispatched() == []


async def _read_lines(proc: asyncio.subprocess.Process, out: list[tuple[str, str]]) -> None:
    assert proc.stdout is not None
    while line := await proc.stdout.readline():
        word, event_id = line.decode().split()
        out.append((word, event_id))


async def test_a_poison_event_that_kills_the_process_every_time_ends_dead(
    delivery_url: str, redis_prefix: str, redis: AsyncRedis
) -> None:
    keys = ChannelKeys(redis_prefix, "orders")
    await redis.sadd(keys.subscribers, "billing")
    await publish(redis, redis_prefix, [events(1, crash=True)[0]])
    await publish(redis, redis_prefix, events(5, start=2))
    lines: list[tuple[str, str]] = []

    def spawn() -> asyncio.Future[asyncio.subprocess.Process]:
        return asyncio.ensure_future(
            asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.integration.event.crash_target",
                delivery_url,
                redis_prefix,
                "3",
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        )

    # The supervisor's part: restart the process each time it dies, until it stays up.
    for _ in range(3):
        proc = await spawn()
        await asyncio.wait_for(_read_lines(proc, lines), 60)  # until it kills itself
        assert await asyncio.wait_for(proc.wait(), 30) == -9
    crashes = [event_id for word, event_id in lines if word == "crash"]
    assert crashes == ["e-1"] * 3  # each crash was one attempt

    proc = await spawn()
    reader = asyncio.create_task(_read_lines(proc, lines))
    try:
        await eventually(lambda: redis.llen(keys.dead("billing")), timeout=30)
        processed = lambda: {e for w, e in lines if w == "processed"}  # noqa: E731
        await eventually(lambda: _true(processed() == {f"e-{p}" for p in range(2, 7)}), 30)
        await eventually(lambda: empty(redis, keys), timeout=30)
    finally:
        proc.kill()  # the process this test started, by its pid
        await proc.wait()
        await reader

    [dead] = await redis.lrange(keys.dead("billing"), 0, -1)
    assert parse_delivery(dead).event.id == "e-1" and parse_delivery(dead).attempt == 3
    assert [w for w, _ in lines].count("crash") == 3  # not retried once dead
