"""The EventLog contract: every backend (fake, SQLite, Postgres) behaves the same."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from authbus.event.errors import IdempotencyKeyReused, VersionConflict
from authbus.event.log import EventLog, NewEvent


def order(version: int | None = None, expected: int | None = None, **kw: object) -> NewEvent:
    return NewEvent(
        type="order.placed",
        data={"total": 42, **kw},
        aggregate_type="order",
        aggregate_id="o-1",
        aggregate_version=version,
        expected_version=expected,
    )


async def test_append_assigns_increasing_positions_and_keeps_fields(event_log: EventLog) -> None:
    result = await event_log.append(
        "orders",
        [NewEvent(type="a", data={"x": 1}, correlation_id="c-1", causation_id="k-1")],
        producer="shop",
    )
    second = await event_log.append("payments", [NewEvent(type="b")], producer="shop")

    [event] = result.events
    assert not result.replayed
    assert second.events[0].position > event.position
    assert (event.channel, event.type, event.data) == ("orders", "a", {"x": 1})
    assert (event.correlation_id, event.causation_id, event.producer) == ("c-1", "k-1", "shop")
    assert len(event.id) == 36 and event.id[14] == "7"  # a UUIDv7
    assert event.created_at.tzinfo is not None
    assert await event_log.read_channel("orders") == [event]


async def test_read_channel_pages_after_a_position(event_log: EventLog) -> None:
    stored = (await event_log.append("orders", [NewEvent(type=f"t{i}") for i in range(5)])).events

    page = await event_log.read_channel("orders", after=stored[1].position, limit=2)

    assert [e.type for e in page] == ["t2", "t3"]
    assert await event_log.read_channel("other") == []


async def test_expected_version_appends_the_next_version(event_log: EventLog) -> None:
    first = await event_log.append("orders", [order(expected=0)])
    second = await event_log.append("orders", [order(expected=1)])

    assert [first.events[0].aggregate_version, second.events[0].aggregate_version] == [1, 2]
    assert await event_log.aggregate_version("order", "o-1") == 2


async def test_a_stale_expected_version_conflicts_with_the_current_version(
    event_log: EventLog,
) -> None:
    await event_log.append("orders", [order(expected=0)])

    with pytest.raises(VersionConflict) as caught:
        await event_log.append("orders", [order(expected=0)])

    assert caught.value.current_version == 1
    assert len(await event_log.read_channel("orders")) == 1


async def test_an_explicit_version_already_taken_conflicts(event_log: EventLog) -> None:
    await event_log.append("orders", [order(version=1)])

    with pytest.raises(VersionConflict):
        await event_log.append("orders", [order(version=1)])


async def test_concurrent_writers_with_one_expected_version_let_exactly_one_win(
    event_log: EventLog,
) -> None:
    await event_log.append("orders", [order(expected=0)])

    results = await asyncio.gather(
        *(event_log.append("orders", [order(expected=1, n=i)]) for i in range(5)),
        return_exceptions=True,
    )

    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, VersionConflict) for r in results if isinstance(r, BaseException))
    assert await event_log.aggregate_version("order", "o-1") == 2


async def test_a_batch_is_all_or_nothing(event_log: EventLog) -> None:
    await event_log.append("orders", [order(expected=0)])

    with pytest.raises(VersionConflict):
        await event_log.append("orders", [NewEvent(type="fine"), order(expected=0)])

    assert [e.type for e in await event_log.read_channel("orders")] == ["order.placed"]


async def test_a_batch_versions_one_aggregate_in_order(event_log: EventLog) -> None:
    result = await event_log.append("orders", [order(expected=0), order(), order()])

    assert [e.aggregate_version for e in result.events] == [1, 2, 3]
    trail = await event_log.read_aggregate("order", "o-1", after_version=1)
    assert [e.aggregate_version for e in trail] == [2, 3]


async def test_an_idempotency_key_returns_the_first_result(event_log: EventLog) -> None:
    first = await event_log.append(
        "orders", [NewEvent(type="a")], producer="p", idempotency_key="k"
    )
    again = await event_log.append(
        "orders", [NewEvent(type="a")], producer="p", idempotency_key="k"
    )

    assert again.replayed and again.events == first.events
    assert len(await event_log.read_channel("orders")) == 1


async def test_an_idempotency_key_with_another_body_conflicts(event_log: EventLog) -> None:
    await event_log.append("orders", [NewEvent(type="a")], producer="p", idempotency_key="k")

    with pytest.raises(IdempotencyKeyReused):
        await event_log.append("orders", [NewEvent(type="b")], producer="p", idempotency_key="k")


async def test_idempotency_keys_are_per_producer(event_log: EventLog) -> None:
    await event_log.append("orders", [NewEvent(type="a")], producer="p1", idempotency_key="k")
    other = await event_log.append(
        "orders", [NewEvent(type="b")], producer="p2", idempotency_key="k"
    )

    assert not other.replayed


async def test_dispatch_tracking(event_log: EventLog) -> None:
    stored = (await event_log.append("orders", [NewEvent(type="a"), NewEvent(type="b")])).events

    assert await event_log.undispatched() == stored
    past = datetime.now(UTC) - timedelta(hours=1)
    assert await event_log.undispatched(older_than=past) == []
    await event_log.mark_dispatched([stored[0].position])
    assert await event_log.undispatched() == stored[1:]


async def test_channels_summarise_the_log(event_log: EventLog) -> None:
    await event_log.append("orders", [NewEvent(type="a"), NewEvent(type="b")])
    last = (await event_log.append("audit", [NewEvent(type="c")])).events[0]

    summary = {c.channel: (c.events, c.last_position) for c in await event_log.channels()}

    assert summary["orders"][0] == 2 and summary["audit"] == (1, last.position)
    await event_log.ping()


async def test_expired_idempotency_keys_are_forgotten(event_log: EventLog) -> None:
    await event_log.append("orders", [NewEvent(type="a")], producer="p", idempotency_key="k")

    assert await event_log.expire_idempotency_keys(datetime.now(UTC) - timedelta(hours=1)) == 0
    assert await event_log.expire_idempotency_keys(datetime.now(UTC) + timedelta(seconds=1)) == 1
    again = await event_log.append(
        "orders", [NewEvent(type="a")], producer="p", idempotency_key="k"
    )
    assert not again.replayed
