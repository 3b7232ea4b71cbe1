"""Publishing rules with the in-memory log and no Redis (delivery deferred to the dispatcher)."""

from __future__ import annotations

import pytest

from authbus.core.errors import ValidationFailed
from authbus.event.delivery import Dispatcher, Fanout
from authbus.event.log import NewEvent
from authbus.event.memory_log import InMemoryEventLog
from authbus.event.service import MAX_BATCH, EventService, check_data


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


@pytest.mark.parametrize(
    ("draft", "named"),
    [
        (NewEvent(type="a", data={"k": "\ud800"}), "event: data['k']"),
        (NewEvent(type="a", data={"k\udc00": 1}), "event: data: the key"),
        (NewEvent(type="a", data={"k": [1, {"n": float("nan")}]}), "event: data['k'][1]['n']"),
        (NewEvent(type="a", data={"k": float("inf")}), "event: data['k']"),
        (NewEvent(type="a", data={"k": float("-inf")}), "event: data['k']"),
        (NewEvent(type="a", correlation_id="c\x00"), "event: correlation_id"),
        (NewEvent(type="a", causation_id="c\x1b"), "event: causation_id"),
        (NewEvent(type="a", aggregate_type="o\x85", aggregate_id="1"), "event: aggregate_type"),
        (NewEvent(type="a", aggregate_type="o", aggregate_id="1\ud800"), "event: aggregate_id"),
        (
            NewEvent(type="a", aggregate_type="o", aggregate_id="1", aggregate_version=2**63),
            "event: aggregate_version",
        ),
        (
            NewEvent(type="a", aggregate_type="o", aggregate_id="1", expected_version=2**53 - 1),
            "event: expected_version",
        ),
    ],
)
async def test_values_the_log_cannot_store_or_give_back_are_refused(
    service: EventService, draft: NewEvent, named: str
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        await service.publish("orders", [NewEvent(type="ok"), draft], producer="p")
    assert refused.value.message.startswith(named.replace("event:", "events[1]:"))
    with pytest.raises(ValidationFailed) as alone:
        await service.publish("orders", [draft], producer="p")
    assert alone.value.message.startswith(named)
    assert await service.log.read_channel("orders") == []


async def test_a_control_character_in_the_idempotency_key_is_refused(
    service: EventService,
) -> None:
    with pytest.raises(ValidationFailed, match=r"^Idempotency-Key: "):
        await service.publish("orders", [NewEvent(type="a")], producer="p", idempotency_key="k\0")
    assert await service.log.read_channel("orders") == []


async def test_data_is_checked_without_recursion() -> None:
    deep: object = 1
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValidationFailed, match="nested deeper than 64 levels"):
        check_data("data", {"k": deep})


async def test_any_json_data_within_the_limits_is_accepted(service: EventService) -> None:
    data = {"nul": "\x00", "big": 10**40, "neg": -0.0, "t": True, "n": None, "u": "\U0001f600"}
    result = await service.publish("orders", [NewEvent(type="a", data=data)], producer="p")
    assert result.events[0].data == data
