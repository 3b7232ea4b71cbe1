"""EventSubscriber's configuration checks (no Redis needed)."""

from __future__ import annotations

import pytest

from authbus.common._envelope import Event
from authbus.common.subscriber import EventSubscriber


class NoChannel(EventSubscriber):
    name = "billing"

    async def process_event(self, event: Event) -> None:
        return None


class Good(EventSubscriber):
    channel = "orders"
    name = "billing"

    async def process_event(self, event: Event) -> None:
        return None


def test_a_subscriber_needs_a_channel_and_a_name() -> None:
    with pytest.raises(ValueError, match="channel"):
        NoChannel("redis://127.0.0.1:6379/0")


def test_a_subscriber_needs_a_redis_url_or_client() -> None:
    with pytest.raises(ValueError, match="redis_url"):
        Good()


def test_instances_of_one_name_get_distinct_ids() -> None:
    a, b = Good("redis://127.0.0.1:6379/0"), Good("redis://127.0.0.1:6379/0")
    assert a.instance_id != b.instance_id and a.instance_id.startswith("billing-")
