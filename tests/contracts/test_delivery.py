"""The delivery scripts against a real Redis and a real 3-master Redis Cluster: fan-out, claim,
ack, leases, reaper, dead letters. Every key of a channel shares its `{channel}` hash tag, so
each script runs on one cluster node (DESIGN.md "Events")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from authbus.common._envelope import Event, format_delivery, parse_delivery
from authbus.common._scripts import AsyncRedis, DeliveryOps, connect
from tests.contracts.redis_cluster import shared_cluster

CHANNEL = "orders"


def make_event(position: int) -> Event:
    return Event(id=f"id-{position}", position=position, channel=CHANNEL, type="t")


@pytest.fixture(params=["redis", "cluster"])
def delivery_url(request: pytest.FixtureRequest) -> str:
    """A plain Redis (emptied for the test) or a Redis Cluster node (`?cluster=true`)."""
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    return shared_cluster(request).url


@pytest.fixture
async def client(delivery_url: str) -> AsyncIterator[AsyncRedis]:
    c = connect(delivery_url, decode_responses=True)
    yield c
    await c.aclose()


@pytest.fixture
def ops(client: AsyncRedis, redis_prefix: str) -> DeliveryOps:
    return DeliveryOps(client, redis_prefix, CHANNEL)


async def subscribe(ops: DeliveryOps, *names: str) -> None:
    await ops.client.sadd(ops.keys.subscribers, *names)


async def test_fanout_pushes_the_batch_to_every_subscriber_in_order(ops: DeliveryOps) -> None:
    await subscribe(ops, "billing", "shipping")
    items = [format_delivery(make_event(p)) for p in (1, 2, 3)]

    assert await ops.fanout(items, first_position=1) == (2, 0)

    for name in ("billing", "shipping"):
        # Consumers take from the right: the oldest event comes out first.
        assert await ops.client.lrange(ops.keys.published(name), 0, -1) == items[::-1]


async def test_fanout_notifies_the_channel(ops: DeliveryOps) -> None:
    await subscribe(ops, "billing")
    pubsub = ops.client.pubsub()
    await pubsub.subscribe(ops.keys.notify)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation

    await ops.fanout([format_delivery(make_event(1))], first_position=1)

    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert message is not None and message["channel"] == ops.keys.notify
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_fanout_without_subscribers_stores_nothing(ops: DeliveryOps) -> None:
    assert await ops.fanout([format_delivery(make_event(1))], first_position=1) == (0, 0)
    assert await ops.client.keys(f"{ops.keys.published('')}*") == []


async def test_a_full_subscriber_is_skipped_and_marked_lagging(ops: DeliveryOps) -> None:
    await subscribe(ops, "stuck", "live")
    await ops.fanout([format_delivery(make_event(p)) for p in (1, 2)], first_position=1)
    await ops.claim("live", count=1, lease_ms=10_000)  # "live" consumes, "stuck" does not

    delivered = await ops.fanout([format_delivery(make_event(3))], first_position=3, max_waiting=2)

    assert delivered == (1, 1)
    assert await ops.client.llen(ops.keys.published("stuck")) == 2
    assert await ops.client.hget(ops.keys.lagging(), "stuck") == "3"
    assert await ops.client.llen(ops.keys.published("live")) == 2


async def test_claim_moves_the_oldest_item_and_leases_it(ops: DeliveryOps) -> None:
    await subscribe(ops, "billing")
    items = [format_delivery(make_event(p)) for p in (1, 2)]
    await ops.fanout(items, first_position=1)

    claimed = await ops.claim("billing", count=1, lease_ms=10_000)

    assert claimed == [items[0]]
    assert await ops.client.lrange(ops.keys.processing("billing"), 0, -1) == [items[0]]
    assert await ops.client.zscore(ops.keys.leases("billing"), items[0]) is not None


async def test_each_item_is_claimed_by_exactly_one_of_many_instances(
    delivery_url: str, redis_prefix: str
) -> None:
    clients = [connect(delivery_url, decode_responses=True) for _ in range(8)]
    instances = [DeliveryOps(c, redis_prefix, CHANNEL) for c in clients]
    await subscribe(instances[0], "billing")
    items = [format_delivery(make_event(p)) for p in range(1, 201)]
    await instances[0].fanout(items, first_position=1)

    async def drain(o: DeliveryOps) -> list[str]:
        got: list[str] = []
        while batch := await o.claim("billing", count=3, lease_ms=10_000):
            got.extend(batch)
        return got

    results = await asyncio.gather(*(drain(o) for o in instances))

    everything = [item for got in results for item in got]
    assert sorted(everything) == sorted(items)
    assert len(everything) == len(set(everything))
    for c in clients:
        await c.aclose()


async def test_ack_removes_exactly_that_delivery(ops: DeliveryOps) -> None:
    await subscribe(ops, "billing")
    await ops.fanout([format_delivery(make_event(p)) for p in (1, 2, 3)], first_position=1)
    first, second, third = await ops.claim("billing", count=3, lease_ms=10_000)

    assert await ops.ack("billing", second) is True

    assert sorted(await ops.client.lrange(ops.keys.processing("billing"), 0, -1)) == sorted(
        [first, third]
    )
    assert await ops.client.zscore(ops.keys.leases("billing"), second) is None
    assert await ops.client.zcard(ops.keys.leases("billing")) == 2


async def test_reaper_requeues_an_expired_lease_with_the_next_attempt(ops: DeliveryOps) -> None:
    await subscribe(ops, "billing")
    item = format_delivery(make_event(1))
    await ops.fanout([item, format_delivery(make_event(2))], first_position=1)
    [claimed] = await ops.claim("billing", count=1, lease_ms=1)
    await asyncio.sleep(0.01)

    assert await ops.reap("billing", max_deliveries=3) == (1, [])

    assert await ops.client.llen(ops.keys.processing("billing")) == 0
    # Requeued at the consuming end: retried before event 2.
    [retried] = await ops.claim("billing", count=1, lease_ms=10_000)
    assert parse_delivery(retried).attempt == 2
    assert parse_delivery(retried).event.id == parse_delivery(claimed).event.id


async def test_a_late_ack_after_requeue_removes_nothing(ops: DeliveryOps) -> None:
    await subscribe(ops, "billing")
    await ops.fanout([format_delivery(make_event(1))], first_position=1)
    [stale] = await ops.claim("billing", count=1, lease_ms=1)
    await asyncio.sleep(0.01)
    await ops.reap("billing", max_deliveries=3)
    [fresh] = await ops.claim("billing", count=1, lease_ms=10_000)  # another instance

    assert await ops.ack("billing", stale) is False

    assert await ops.client.lrange(ops.keys.processing("billing"), 0, -1) == [fresh]
    assert await ops.client.zscore(ops.keys.leases("billing"), fresh) is not None


async def test_ack_many_removes_the_held_items_and_reports_a_late_one(ops: DeliveryOps) -> None:
    await subscribe(ops, "billing")
    await ops.fanout([format_delivery(make_event(p)) for p in (1, 2, 3)], first_position=1)
    first, *_ = await ops.claim("billing", count=3, lease_ms=1)
    await asyncio.sleep(0.01)
    await ops.reap("billing", max_deliveries=3)  # all three requeued: the claims are stale
    [fresh] = await ops.claim("billing", count=1, lease_ms=10_000)

    assert await ops.ack_many("billing", [fresh, first]) == [True, False]

    assert await ops.client.llen(ops.keys.processing("billing")) == 0
    assert await ops.client.zcard(ops.keys.leases("billing")) == 0
    assert await ops.ack_many("billing", []) == []


async def test_past_max_deliveries_the_item_goes_to_dead(ops: DeliveryOps) -> None:
    await subscribe(ops, "billing")
    await ops.fanout([format_delivery(make_event(1))], first_position=1)
    for _ in range(2):
        await ops.claim("billing", count=1, lease_ms=1)
        await asyncio.sleep(0.01)
        await ops.reap("billing", max_deliveries=2)

    dead = await ops.client.lrange(ops.keys.dead("billing"), 0, -1)
    assert [parse_delivery(d).attempt for d in dead] == [2]
    assert await ops.client.llen(ops.keys.published("billing")) == 0
    assert await ops.client.llen(ops.keys.processing("billing")) == 0


async def test_an_unreadable_item_goes_to_dead_at_once(ops: DeliveryOps) -> None:
    await ops.client.lpush(ops.keys.published("billing"), "garbage")
    await ops.claim("billing", count=1, lease_ms=1)
    await asyncio.sleep(0.01)

    assert await ops.reap("billing", max_deliveries=5) == (0, [""])
    assert await ops.client.lrange(ops.keys.dead("billing"), 0, -1) == ["garbage"]


async def test_renew_keeps_a_lease_and_reports_a_lost_one(ops: DeliveryOps) -> None:
    await subscribe(ops, "billing")
    await ops.fanout([format_delivery(make_event(p)) for p in (1, 2)], first_position=1)
    kept, lost = await ops.claim("billing", count=2, lease_ms=1)
    await ops.ack("billing", lost)

    assert await ops.renew("billing", [kept, lost], 60_000) == [True, False]
    await asyncio.sleep(0.01)
    assert await ops.reap("billing", max_deliveries=3) == (0, [])


async def test_retry_after_backoff_requeues_only_once_the_backoff_ends(ops: DeliveryOps) -> None:
    await subscribe(ops, "billing")
    await ops.fanout([format_delivery(make_event(1))], first_position=1)
    [item] = await ops.claim("billing", count=1, lease_ms=60_000)

    assert await ops.retry_after("billing", item, 60_000) is True
    assert await ops.reap("billing", max_deliveries=3) == (0, [])  # backoff not over
    assert await ops.retry_after("billing", item, 0) is True
    assert await ops.reap("billing", max_deliveries=3) == (1, [])


async def test_a_released_delivery_waits_the_backoff_of_its_attempt(ops: DeliveryOps) -> None:
    await subscribe(ops, "billing")
    await ops.fanout([format_delivery(make_event(1))], first_position=1)
    [item] = await ops.claim("billing", count=1, lease_ms=60_000)
    assert await ops.retry_after("billing", item) is True  # released: lease ends now

    # Attempt 1 waits 300 ms after its release; a reaper run before that leaves it alone.
    assert await ops.reap("billing", max_deliveries=3, backoff_ms=300, max_backoff_ms=1000) == (
        0,
        [],
    )
    await asyncio.sleep(0.35)
    assert await ops.reap("billing", max_deliveries=3, backoff_ms=300, max_backoff_ms=1000) == (
        1,
        [],
    )
    [retried] = await ops.claim("billing", count=1, lease_ms=60_000)
    assert parse_delivery(retried).attempt == 2


async def test_the_reaper_names_the_events_it_dead_letters(ops: DeliveryOps) -> None:
    await subscribe(ops, "billing")
    await ops.fanout([format_delivery(make_event(7))], first_position=7)
    [item] = await ops.claim("billing", count=1, lease_ms=60_000)
    await ops.retry_after("billing", item)

    # The last attempt goes to dead as soon as its lease ends: no backoff before dead.
    reaped = await ops.reap("billing", max_deliveries=1, backoff_ms=60_000, max_backoff_ms=60_000)

    assert reaped == (0, ["id-7"])
    assert await ops.client.lrange(ops.keys.dead("billing"), 0, -1) == [item]


async def test_dead_letters_can_be_requeued_by_event_and_purged(ops: DeliveryOps) -> None:
    dead_key = ops.keys.dead("billing")
    await ops.client.lpush(dead_key, "3:" + make_event(1).model_dump_json())
    await ops.client.lpush(dead_key, "3:" + make_event(2).model_dump_json())

    assert await ops.requeue_dead("billing", "id-2") == 1
    [requeued] = await ops.client.lrange(ops.keys.published("billing"), 0, -1)
    assert parse_delivery(requeued).attempt == 1 and parse_delivery(requeued).event.id == "id-2"

    assert await ops.purge_dead("billing") == 1
    assert await ops.client.llen(dead_key) == 0


async def test_scripts_are_reloaded_after_script_flush(ops: DeliveryOps) -> None:
    await subscribe(ops, "billing")
    await ops.fanout([format_delivery(make_event(1))], first_position=1)
    await ops.client.script_flush()

    assert len(await ops.claim("billing", count=5, lease_ms=1000)) == 1


async def test_drop_subscriber_removes_its_lists(ops: DeliveryOps) -> None:
    await subscribe(ops, "billing")
    await ops.fanout([format_delivery(make_event(1))], first_position=1)

    assert await ops.drop_subscriber("billing") is True
    assert await ops.client.exists(ops.keys.published("billing")) == 0
    assert await ops.client.sismember(ops.keys.subscribers, "billing") == 0
    assert await ops.drop_subscriber("billing") is False


async def test_a_lagging_subscriber_is_skipped_until_caught_up(ops: DeliveryOps) -> None:
    await subscribe(ops, "billing")
    await ops.client.hset(ops.keys.lagging(), "billing", 5)

    assert await ops.fanout([format_delivery(make_event(6))], first_position=6) == (0, 1)
    assert await ops.client.llen(ops.keys.published("billing")) == 0
    # An event committed late, below the mark, lowers it so the catch-up rereads it.
    await ops.fanout([format_delivery(make_event(3))], first_position=3)
    assert await ops.lagging() == {"billing": 3}


async def test_catch_up_pushes_advances_and_clears_the_mark(ops: DeliveryOps) -> None:
    await ops.client.hset(ops.keys.lagging(), "billing", 3)
    items = [format_delivery(make_event(p)) for p in (3, 4)]

    assert await ops.catch_up("billing", mark=3, next_mark=5, items=items) == 2
    assert await ops.lagging() == {"billing": 5}
    assert await ops.catch_up("billing", mark=4, next_mark=None, items=[]) is None  # stale
    assert await ops.catch_up("billing", mark=5, next_mark=None, items=[]) == 0
    assert await ops.lagging() == {}
    assert await ops.client.lrange(ops.keys.published("billing"), 0, -1) == items[::-1]
