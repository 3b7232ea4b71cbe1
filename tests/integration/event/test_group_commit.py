"""Group commit on SQLite and Postgres: concurrent appends share a transaction, and each one
still succeeds or fails on its own; the publish path fans a group out together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

import pytest
import redis.asyncio as aioredis

from authbus.common._envelope import Event, parse_delivery
from authbus.common._keys import ChannelKeys
from authbus.core.db import create_engine, create_sessionmaker
from authbus.core.migrate import upgrade
from authbus.event.delivery import Dispatcher, Fanout
from authbus.event.errors import IdempotencyKeyReused, VersionConflict
from authbus.event.log import AppendResult, NewEvent, SqlEventLog
from authbus.event.service import EventService


@pytest.fixture
def event_db(database_url: str) -> str:
    upgrade(database_url, "event")
    return database_url


@pytest.fixture
async def event_log(event_db: str) -> AsyncIterator[SqlEventLog]:
    engine = create_engine(event_db)
    log = SqlEventLog(create_sessionmaker(engine))
    yield log
    await log.close()
    await engine.dispose()


async def test_concurrent_appends_share_transactions_and_keep_their_order(
    event_log: SqlEventLog,
) -> None:
    async def append(i: int) -> AppendResult:
        drafts = [NewEvent(type=f"t{i}.{j}", data={"i": i, "j": j}) for j in range(3)]
        return await event_log.append("orders", drafts, producer="shop")

    results = await asyncio.gather(*(append(i) for i in range(60)))

    assert event_log.group_commit.groups < 60  # some appends were committed together
    positions = [e.position for r in results for e in r.events]
    assert len(set(positions)) == 180
    for i, result in enumerate(results):
        # Each append's events are consecutive in its draft order.
        assert [e.type for e in result.events] == [f"t{i}.{j}" for j in range(3)]
        assert [e.position for e in result.events] == sorted(e.position for e in result.events)
    stored = await event_log.read_channel("orders", limit=1000)
    assert [e.id for e in stored] == [e.id for e in sorted(_all(results), key=_position)]


async def test_a_version_conflict_in_a_group_fails_only_that_append(
    event_log: SqlEventLog,
) -> None:
    def placed(n: int) -> list[NewEvent]:
        return [
            NewEvent(
                type="order.placed",
                data={"n": n},
                aggregate_type="order",
                aggregate_id="42",
                expected_version=0,
            )
        ]

    outcomes = await asyncio.gather(
        event_log.append("orders", placed(1), producer="a"),
        event_log.append("orders", placed(2), producer="b"),
        event_log.append("orders", [NewEvent(type="other")], producer="c"),
        return_exceptions=True,
    )

    first, second, other = outcomes
    assert isinstance(first, AppendResult) and first.events[0].aggregate_version == 1
    assert isinstance(second, VersionConflict)
    assert isinstance(other, AppendResult)
    assert await event_log.aggregate_version("order", "42") == 1
    assert len(await event_log.read_channel("orders")) == 2


async def test_one_idempotency_key_twice_in_a_group_is_one_append(
    event_log: SqlEventLog,
) -> None:
    same = [NewEvent(type="order.paid", data={"id": "1"})]
    other = [NewEvent(type="order.paid", data={"id": "2"})]

    first, again, different = await asyncio.gather(
        event_log.append("orders", same, producer="shop", idempotency_key="k1"),
        event_log.append("orders", same, producer="shop", idempotency_key="k1"),
        event_log.append("orders", other, producer="shop", idempotency_key="k1"),
        return_exceptions=True,
    )

    assert isinstance(first, AppendResult) and not first.replayed
    assert isinstance(again, AppendResult) and again.replayed and again.events == first.events
    assert isinstance(different, IdempotencyKeyReused)
    assert len(await event_log.read_channel("orders")) == 1


async def test_a_conflict_only_the_database_sees_falls_back_to_one_by_one(event_db: str) -> None:
    # Two logs on one database stand for two service instances: each one's group checks
    # pass, the unique index refuses the loser's group, whose appends are retried alone.
    engines = [create_engine(event_db) for _ in range(2)]
    logs = [SqlEventLog(create_sessionmaker(e)) for e in engines]
    try:

        async def place(log: SqlEventLog, n: int) -> AppendResult:
            draft = NewEvent(
                type="order.placed",
                data={"n": n},
                aggregate_type="order",
                aggregate_id="7",
                expected_version=0,
            )
            return await log.append("orders", [draft], producer=f"p{n}")

        async def unrelated(log: SqlEventLog, n: int) -> AppendResult:
            return await log.append("orders", [NewEvent(type="x", data={"n": n})], producer="q")

        outcomes = await asyncio.gather(
            *(place(logs[n % 2], n) for n in range(6)),
            *(unrelated(logs[n % 2], n) for n in range(10)),
            return_exceptions=True,
        )
    finally:
        for log, engine in zip(logs, engines, strict=True):
            await log.close()
            await engine.dispose()

    placed, others = outcomes[:6], outcomes[6:]
    assert sum(isinstance(o, AppendResult) for o in placed) == 1
    assert all(isinstance(o, VersionConflict) for o in placed if not isinstance(o, AppendResult))
    assert all(isinstance(o, AppendResult) for o in others)


async def test_when_the_insert_of_a_group_conflicts_each_append_is_retried_alone(
    event_log: SqlEventLog, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "authbus.event.log")
    draft = NewEvent(type="a", aggregate_type="order", aggregate_id="9", expected_version=0)
    await event_log.append("orders", [draft], producer="p")
    # The group's check sees a stale version (as when another instance wrote meanwhile),
    # so only the unique index catches the conflict.
    event_log.group_commit._version = lambda _conn, _type, _id: 0

    stale, unrelated = await asyncio.gather(
        event_log.append("orders", [draft], producer="p"),
        event_log.append("orders", [NewEvent(type="b")], producer="q"),
        return_exceptions=True,
    )

    assert "group commit conflicted" in caplog.text
    assert isinstance(stale, VersionConflict) and stale.current_version == 1
    assert isinstance(unrelated, AppendResult)
    assert [e.type for e in await event_log.read_channel("orders")] == ["a", "b"]


class CountingFanout(Fanout):
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        super().__init__(client, prefix)
        self.calls = 0

    async def deliver(self, events: Sequence[Event]) -> bool:
        self.calls += 1
        return await super().deliver(events)


async def test_publishes_committed_together_are_fanned_out_together_in_log_order(
    event_log: SqlEventLog, redis_url: str, redis_prefix: str
) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    keys = ChannelKeys(redis_prefix, "orders")
    await client.sadd(keys.subscribers, "billing")
    fanout = CountingFanout(client, redis_prefix)
    dispatcher = Dispatcher(event_log, fanout, mark_delay_s=0.01)
    service = EventService(event_log, dispatcher)
    try:
        results = await asyncio.gather(
            *(
                service.publish("orders", [NewEvent(type=f"t{i}")], producer="shop")
                for i in range(40)
            )
        )
        items = await client.lrange(keys.published("billing"), 0, -1)
        await dispatcher.flush_marks()
        undispatched = await event_log.undispatched()
    finally:
        await client.aclose()

    assert fanout.calls < 40
    # Oldest at the consuming (right) end, each event once, in log order.
    delivered = [parse_delivery(i).event.position for i in reversed(items)]
    assert delivered == sorted(e.position for e in _all(results))
    assert undispatched == []
    assert not dispatcher.backlog


def _all(results: Sequence[AppendResult]) -> list[Event]:
    return [e for r in results for e in r.events]


def _position(event: Event) -> int:
    return event.position
