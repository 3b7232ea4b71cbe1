"""Publishing rules with the in-memory log and no Redis (delivery deferred to the dispatcher)."""

from __future__ import annotations

import pytest

from authbus.core.errors import ValidationFailed
from authbus.event.delivery import Dispatcher, Fanout
from authbus.event.log import NewEvent
from authbus.event.memory_log import InMemoryEventLog
from authbus.event.service import MAX_BATCH, EventService


@pytest.fixture
def service() -> EventService:
    log = InMemoryEventLog()
    return EventService(log, Dispatcher(log, Fanout(None, "ab")))


async def test_publish_without_redis_is_durable_and_left_to_the_dispatcher(
    service: EventService,
) -> None:
    result = await service.publish("orders", [NewEvent(type="a")], producer="shop")

    assert result.events[0].producer == "shop"
    assert service.dispatcher.backlog
    assert await service.log.undispatched() == result.events
    assert await service.dispatcher.run_once() == 0  # still no Redis: nothing lost


async def test_a_replayed_idempotent_publish_is_not_dispatched_again(
    service: EventService,
) -> None:
    published: list[int] = []
    service.on_published = lambda _channel, n: published.append(n)

    await service.publish("orders", [NewEvent(type="a")], producer="p", idempotency_key="k")
    again = await service.publish("orders", [NewEvent(type="a")], producer="p", idempotency_key="k")

    assert again.replayed and published == [1]


@pytest.mark.parametrize(
    "draft",
    [
        NewEvent(type="a", aggregate_type="order"),
        NewEvent(type="a", aggregate_id="1"),
        NewEvent(type="a", expected_version=0),
        NewEvent(
            type="a", aggregate_type="o", aggregate_id="1", aggregate_version=5, expected_version=1
        ),
    ],
)
async def test_inconsistent_aggregate_fields_are_refused(
    service: EventService, draft: NewEvent
) -> None:
    with pytest.raises(ValidationFailed):
        await service.publish("orders", [draft], producer="p")
    assert await service.log.read_channel("orders") == []


async def test_batch_limits_and_channel_names(service: EventService) -> None:
    with pytest.raises(ValidationFailed):
        await service.publish("orders", [], producer="p")
    with pytest.raises(ValidationFailed):
        await service.publish("orders", [NewEvent(type="a")] * (MAX_BATCH + 1), producer="p")
    with pytest.raises(ValidationFailed):
        await service.publish("bad:name", [NewEvent(type="a")], producer="p")
