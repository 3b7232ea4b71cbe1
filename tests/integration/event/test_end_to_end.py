"""The client library end to end: EventPublisher (requests) -> event service over real HTTP
-> Redis -> EventSubscriber in its own thread (what a synchronous service would run)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis
import requests
import uvicorn

from authbus.common._envelope import Event
from authbus.common._keys import ChannelKeys
from authbus.common.publisher import EventPublisher
from authbus.common.subscriber import EventSubscriber
from authbus.core.settings import Settings
from authbus.event.app import create_app
from tests.conftest import free_port
from tests.support.tokens import TokenMinter


class BearerAuth(requests.auth.AuthBase):
    """A fixed bearer token (TokenAuth would fetch it from the token service)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.token}"
        return r


@pytest.fixture
def event_url(settings: Settings, minter: TokenMinter) -> Iterator[str]:
    """The event service served by uvicorn on a free loopback port, in a thread."""
    port = free_port()
    app = create_app(settings, token_validator=minter.validator())
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_published_event_reaches_a_threaded_subscriber_exactly_once(
    event_url: str, minter: TokenMinter, settings: Settings
) -> None:
    seen: list[Event] = []
    lock = threading.Lock()

    class Billing(EventSubscriber):
        channel = "orders"
        name = "billing"

        def process_event(self, event: Event) -> None:
            with lock:
                seen.append(event)

    assert settings.redis_url is not None
    subscriber = Billing(settings.redis_url, prefix=settings.redis_prefix, poll_interval=0.2)
    token = minter.mint("shop", ["events:publish"], client_id="shop")
    publisher = EventPublisher(event_url, auth=BearerAuth(token))
    subscriber.start()
    try:
        event = publisher.publish(
            "orders",
            "order.placed",
            {"order_id": "o-1"},
            aggregate=("order", "o-1"),
            expected_version=0,
        )
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # room for a duplicate to show up, if there were one
    finally:
        subscriber.stop()
        subscriber.join(10)
        publisher.close()

    assert [e.id for e in seen] == [event.id]
    assert seen[0].data == {"order_id": "o-1"} and seen[0].aggregate_version == 1
    keys = ChannelKeys(settings.redis_prefix, "orders")
    client = redis.Redis.from_url(settings.redis_url)
    try:
        assert client.llen(keys.processing("billing")) == 0
        assert client.llen(keys.published("billing")) == 0
    finally:
        client.close()
