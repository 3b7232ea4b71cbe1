"""The delivery envelope shared by the event service and subscribers."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authbus.common._envelope import (
    Event,
    InvalidDelivery,
    format_delivery,
    parse_delivery,
    uuid7,
    valid_name,
)


def sample() -> Event:
    return Event(id=uuid7(), position=7, channel="orders", type="order.placed", data={"n": 1})


def test_a_delivery_round_trips_with_its_attempt() -> None:
    event = sample()
    item = format_delivery(event, attempt=3)

    delivery = parse_delivery(item)

    assert item.startswith("3:")
    assert (delivery.event, delivery.attempt, delivery.raw) == (event, 3, item)
    assert parse_delivery(item.encode()).event == event


def test_a_requeued_delivery_is_a_different_string() -> None:
    event = sample()
    assert format_delivery(event, 1) != format_delivery(event, 2)


@pytest.mark.parametrize("raw", ["", "garbage", "x:{}", "1:not json", '1:{"id": "x"}'])
def test_malformed_items_are_invalid_deliveries(raw: str) -> None:
    with pytest.raises(InvalidDelivery):
        parse_delivery(raw)


def test_uuid7_has_version_7_and_sorts_by_time() -> None:
    first, second = uuid7(), uuid7()
    parsed = uuid.UUID(first)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert first[:13] <= second[:13]  # the millisecond timestamp leads


@pytest.mark.parametrize("name", ["orders", "a", "billing-v2", "x.y_z", "A1"])
def test_valid_names(name: str) -> None:
    assert valid_name(name)


@pytest.mark.parametrize("name", ["", "-x", "a:b", "{a}", "a b", "x" * 129, "é"])
def test_invalid_names(name: str) -> None:
    assert not valid_name(name)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    data=st.dictionaries(st.text(), json_values, max_size=5),
    type_=st.text(min_size=1, max_size=50),
)
def test_any_event_round_trips_through_a_delivery_item(
    attempt: int, data: dict[str, object], type_: str
) -> None:
    event = Event(id=uuid7(), position=1, channel="c", type=type_, data=data)
    delivery = parse_delivery(format_delivery(event, attempt))
    assert delivery.event == event and delivery.attempt == attempt
