"""EventPublisher (requests): the request it sends and how it reads answers."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter

from authbus.common.publisher import EventPublisher, PublishError


class Canned(BaseAdapter):
    """A requests transport answering every request with one response, remembering requests."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__()
        self.status, self.body = status, body
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **_kw: Any) -> requests.Response:  # type: ignore[override]
        self.sent.append(request)
        response = requests.Response()
        response.status_code = self.status
        response._content = json.dumps(self.body).encode()
        response.headers["Content-Type"] = "application/json"
        response.request = request
        return response

    def close(self) -> None:
        pass


def publisher(adapter: Canned) -> EventPublisher:
    session = requests.Session()
    session.mount("http://", adapter)
    return EventPublisher("http://event.test/", session=session)


STORED = {
    "id": "0192",
    "position": 3,
    "channel": "orders",
    "type": "order.placed",
    "data": {"id": "o-1"},
    "created_at": "2026-12-03T19:00:00Z",
}


def test_publish_posts_the_event_and_returns_it() -> None:
    adapter = Canned(201, STORED)

    event = publisher(adapter).publish(
        "orders", "order.placed", {"id": "o-1"}, correlation_id="c", idempotency_key="k"
    )

    assert event.position == 3
    [sent] = adapter.sent
    assert sent.url == "http://event.test/v1/channels/orders/events"
    assert sent.headers["Idempotency-Key"] == "k"
    assert json.loads(sent.body or b"") == {
        "type": "order.placed",
        "data": {"id": "o-1"},
        "correlation_id": "c",
    }


def test_a_refusal_raises_publish_error_with_the_server_code() -> None:
    adapter = Canned(409, {"error": "version_conflict", "current_version": 4})

    with pytest.raises(PublishError) as caught:
        publisher(adapter).publish("orders", "x")

    assert caught.value.error == "version_conflict"
    assert caught.value.details["current_version"] == 4


def test_unknown_options_are_a_type_error() -> None:
    with pytest.raises(TypeError):
        publisher(Canned(201, STORED)).publish("orders", "x", expectd_version=1)


def test_an_unreachable_service_is_publish_error() -> None:
    with pytest.raises(PublishError) as caught:
        EventPublisher("http://127.0.0.1:9", timeout=0.5).publish("orders", "x")
    assert caught.value.error == "temporarily_unavailable"
