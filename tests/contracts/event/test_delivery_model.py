"""Model-based check of the delivery scripts: under any sequence of fan-out, claim, ack,
retry and reap, no delivery is lost or duplicated and every processing item has a lease."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authbus.common._envelope import Event, format_delivery, parse_delivery
from authbus.common._scripts import DeliveryOps

SUB = "billing"
MAX_DELIVERIES = 3

operation = st.one_of(
    st.tuples(st.just("publish"), st.integers(1, 3)),
    st.tuples(st.just("claim"), st.integers(1, 3)),  # lease long enough to hold
    st.tuples(st.just("claim_expired"), st.integers(1, 3)),  # lease already over
    st.tuples(st.just("ack"), st.integers(0, 5)),
    st.tuples(st.just("retry_now"), st.integers(0, 5)),
    st.tuples(st.just("reap"), st.just(0)),
)


async def run(redis_url: str, steps: list[tuple[str, int]]) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    ops = DeliveryOps(client, f"m{uuid.uuid4().hex[:8]}", "orders")
    k = ops.keys
    await client.sadd(k.subscribers, SUB)
    published, acked = 0, Counter[str]()
    held: list[str] = []  # items this "instance" believes it holds
    try:
        for name, n in steps:
            if name == "publish":
                events = [
                    Event(
                        id=f"e{published + i}",
                        position=published + i + 1,
                        channel="orders",
                        type="t",
                    )
                    for i in range(n)
                ]
                await ops.fanout([format_delivery(e) for e in events], first_position=published + 1)
                published += n
            elif name in ("claim", "claim_expired"):
                lease = 60_000 if name == "claim" else 0
                held += await ops.claim(SUB, count=n, lease_ms=lease)
            elif name == "ack" and held:
                item = held.pop(n % len(held))
                if await ops.ack(SUB, item):
                    acked[parse_delivery(item).event.id] += 1
            elif name == "retry_now" and held:
                await ops.retry_after(SUB, held.pop(n % len(held)), 0)
            elif name == "reap":
                await ops.reap(SUB, max_deliveries=MAX_DELIVERIES)

            waiting = await client.lrange(k.published(SUB), 0, -1)
            processing = await client.lrange(k.processing(SUB), 0, -1)
            dead = await client.lrange(k.dead(SUB), 0, -1)
            leases = set(await client.zrange(k.leases(SUB), 0, -1))
            everywhere = Counter(parse_delivery(i).event.id for i in waiting + processing + dead)
            everywhere.update(acked)
            # Each published event is in exactly one place: waiting, in flight, dead or done.
            assert everywhere == Counter(f"e{i}" for i in range(published))
            assert set(processing) == leases
            assert all(parse_delivery(i).attempt <= MAX_DELIVERIES for i in waiting + processing)
    finally:
        await client.aclose()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(operation, min_size=1, max_size=30))
def test_no_delivery_is_lost_or_duplicated(redis_url: str, steps: list[tuple[str, int]]) -> None:
    asyncio.run(run(redis_url, steps))
