"""What an operator reads when a handler fails: the event, channel, subscriber and attempt.

A failing delivery logs a warning ("will retry") on each attempt but the last, and an error
("moving it to the dead list") on the last, on the logger `authbus.subscriber`, with the
failure's traceback and the fields as record attributes (what the JSON log lines show).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from authbus.common._envelope import Event, format_delivery
from authbus.common._scripts import DeliveryOps
from authbus.common.subscriber import EventSubscriber
from tests.integration.event.helpers import eventually

FAST: dict[str, Any] = {"poll_interval": 0.1, "retry_backoff_ms": 20, "lease_ms": 2000}


class Fails(EventSubscriber):
    """Raises for every event whose data says so."""

    channel = "payments"
    name = "ledger"

    async def process_event(self, event: Event) -> None:
        if event.data.get("fail"):
            raise ValueError(f"cannot book {event.id}")


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def publish(client: aioredis.Redis, prefix: str, event: Event) -> None:
    ops = DeliveryOps(client, prefix, "payments")
    await client.sadd(ops.keys.subscribers, "ledger")
    await ops.fanout([format_delivery(event)], first_position=event.position)


def failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "authbus.subscriber" and r.getMessage().startswith("event handler failed")
    ]


async def run_until_dead(sub: Fails, client: aioredis.Redis) -> None:
    task = asyncio.create_task(sub.serve())
    try:
        await eventually(lambda: client.llen(sub.keys.dead("ledger")), timeout=60)
    finally:
        sub.stop()
        await asyncio.wait_for(task, 60)


async def test_each_failed_attempt_logs_a_warning_and_the_last_one_an_error(
    redis: aioredis.Redis, redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="authbus.subscriber")
    event = Event(id="pay-7", position=7, channel="payments", type="payment.made", data={"fail": 1})
    await publish(redis, redis_prefix, event)
    sub = Fails(redis_url, prefix=redis_prefix, max_deliveries=3, **FAST)

    await run_until_dead(sub, redis)

    records = failures(caplog)
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.WARNING, "event handler failed; will retry"),
        (logging.WARNING, "event handler failed; will retry"),
        (logging.ERROR, "event handler failed; moving it to the dead list"),
    ]
    for attempt, record in enumerate(records, start=1):
        fields = record.__dict__
        assert fields["event_id"] == "pay-7"
        assert fields["channel"] == "payments"
        assert fields["subscriber"] == "ledger"
        assert fields["attempt"] == attempt
        assert fields["max_deliveries"] == 3
        assert "cannot book pay-7" in fields["error"]
        assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)
    assert [r.__dict__["retry_in_ms"] for r in records] == [20, 40, None]


async def test_with_one_delivery_allowed_the_first_failure_is_the_dead_list_error(
    redis: aioredis.Redis, redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="authbus.subscriber")
    event = Event(id="pay-8", position=8, channel="payments", type="payment.made", data={"fail": 1})
    await publish(redis, redis_prefix, event)
    sub = Fails(redis_url, prefix=redis_prefix, max_deliveries=1, **FAST)

    await run_until_dead(sub, redis)

    [record] = failures(caplog)
    assert record.levelno == logging.ERROR
    assert "moving it to the dead list" in record.getMessage()
    fields = record.__dict__
    assert (fields["event_id"], fields["channel"], fields["subscriber"], fields["attempt"]) == (
        "pay-8",
        "payments",
        "ledger",
        1,
    )


async def test_a_handler_that_succeeds_logs_no_failure(
    redis: aioredis.Redis, redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="authbus.subscriber")
    await publish(redis, redis_prefix, Event(id="pay-9", position=9, channel="payments", type="t"))
    sub = Fails(redis_url, prefix=redis_prefix, **FAST)
    task = asyncio.create_task(sub.serve())
    try:
        await eventually(lambda: _true(sub.processed_count == 1), timeout=60)
    finally:
        sub.stop()
        await asyncio.wait_for(task, 60)

    assert failures(caplog) == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def _true(value: bool) -> bool:
    return value
