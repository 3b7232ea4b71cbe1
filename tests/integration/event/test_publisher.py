"""The client library's publishers against the real event service app."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI

from authbus.common.publisher import AsyncEventPublisher, PublishError

Bearer = Callable[..., dict[str, str]]


async def test_async_publisher_publishes_and_reports_conflicts(
    app: FastAPI, bearer: Bearer
) -> None:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), headers=bearer())
    publisher = AsyncEventPublisher("http://event.test", client=client)
    try:
        event = await publisher.publish(
            "orders",
            "order.placed",
            {"id": "o-1"},
            aggregate=("order", "o-1"),
            expected_version=0,
            idempotency_key="o-1-placed",
        )
        again = await publisher.publish(
            "orders",
            "order.placed",
            {"id": "o-1"},
            aggregate=("order", "o-1"),
            expected_version=0,
            idempotency_key="o-1-placed",
        )
        with pytest.raises(PublishError) as caught:
            await publisher.publish(
                "orders",
                "order.paid",
                aggregate=("order", "o-1"),
                expected_version=0,
            )
    finally:
        await publisher.aclose()

    assert event.aggregate_version == 1 and again == event
    assert caught.value.status_code == 409
    assert caught.value.error == "version_conflict"
    assert caught.value.details["current_version"] == 1
