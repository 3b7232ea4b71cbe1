"""Both publishers against the real event service (uvicorn on a free port, SQLite/Postgres,
Redis): batches are stored in order and all or none, a retry after a lost response returns
the stored events instead of storing them twice, refusals are raised at once.

A lost response is made by a transport that passes the request to the service and then
fails as if the connection had been reset before the answer arrived: the service did
store the events, the publisher cannot know it and retries.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

import httpx
import pytest
import requests
import uvicorn
from requests.adapters import HTTPAdapter

from authbus.common._envelope import Event
from authbus.common.publisher import AsyncEventPublisher, EventPublisher, NewEvent, PublishError
from authbus.core.settings import Settings
from authbus.event.app import create_app
from tests.conftest import free_port
from tests.support.tokens import TokenMinter

SCOPES = ("events:publish", "events:read")


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
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


class SyncBearer(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.token}"
        return r


class AsyncBearer(httpx.Auth):
    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


class LosesResponses(HTTPAdapter):
    """requests: the first `lose` requests reach the service, their answers are lost."""

    def __init__(self, lose: int) -> None:
        super().__init__()
        self.lose = lose
        self.sent = 0

    def send(self, request: requests.PreparedRequest, *args: Any, **kw: Any) -> requests.Response:
        response = super().send(request, *args, **kw)
        self.sent += 1
        if self.sent <= self.lose:
            response.close()
            reset = ConnectionResetError(104, "Connection reset by peer")
            raise requests.ConnectionError(reset, request=request)
        return response


class AsyncLosesResponses(httpx.AsyncBaseTransport):
    """httpx: the first `lose` requests reach the service, their answers are lost."""

    def __init__(self, lose: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.lose = lose
        self.sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.sent += 1
        if self.sent <= self.lose:
            await response.aread()
            await response.aclose()
            raise httpx.ReadError("[Errno 104] Connection reset by peer", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class Twin:
    """EventPublisher or AsyncEventPublisher on the live service; waits recorded, not slept."""

    def __init__(self, kind: str, url: str, token: str, *, lose: int = 0) -> None:
        self.kind = kind
        self.slept: list[float] = []
        self.publisher: EventPublisher | AsyncEventPublisher
        if kind == "sync":
            self.transport: LosesResponses | AsyncLosesResponses = LosesResponses(lose)
            self.publisher = EventPublisher(url, auth=SyncBearer(token), transport=self.transport)
            self.publisher._sleep = self.slept.append
        else:
            self.transport = AsyncLosesResponses(lose)
            self.publisher = AsyncEventPublisher(
                url, auth=AsyncBearer(token), transport=self.transport
            )

            async def sleep(seconds: float) -> None:
                self.slept.append(seconds)

            self.publisher._sleep = sleep

    @property
    def requests_sent(self) -> int:
        return self.transport.sent

    async def publish(self, channel: str, type_: str, **kw: Any) -> Event:
        if isinstance(self.publisher, EventPublisher):
            return await asyncio.to_thread(self.publisher.publish, channel, type_, **kw)
        return await self.publisher.publish(channel, type_, **kw)

    async def publish_batch(
        self, channel: str, events: Sequence[NewEvent], **kw: Any
    ) -> list[Event]:
        if isinstance(self.publisher, EventPublisher):
            return await asyncio.to_thread(self.publisher.publish_batch, channel, events, **kw)
        return await self.publisher.publish_batch(channel, events, **kw)

    async def close(self) -> None:
        if isinstance(self.publisher, EventPublisher):
            self.publisher.close()
        else:
            await self.publisher.aclose()


@pytest.fixture(params=["sync", "async"])
async def twin(request: pytest.FixtureRequest, event_url: str, minter: TokenMinter) -> Any:
    """Make the parametrized publisher (`lose=n`: the first n answers are lost)."""
    made: list[Twin] = []
    token = minter.mint("shop", SCOPES, client_id="shop")

    def make(*, lose: int = 0) -> Twin:
        made.append(Twin(request.param, event_url, token, lose=lose))
        return made[-1]

    yield make
    for publisher in made:
        await publisher.close()


MakeTwin = Callable[..., Twin]


async def read_log(event_url: str, minter: TokenMinter, channel: str = "orders") -> list[Event]:
    token = minter.mint("auditor", ["events:read"], client_id="auditor")
    async with httpx.AsyncClient(base_url=event_url, timeout=30) as client:
        r = await client.get(
            f"/v1/channels/{channel}/events",
            params={"limit": 1000},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert r.status_code == 200, r.text
    return [Event.model_validate(e) for e in r.json()["events"]]


async def test_a_batch_is_stored_in_order_with_consecutive_versions(
    twin: MakeTwin, event_url: str, minter: TokenMinter
) -> None:
    publisher = twin()

    stored = await publisher.publish_batch(
        "orders",
        [
            NewEvent("order.placed", {"n": 1}, aggregate=("order", "o-1"), expected_version=0),
            NewEvent("order.paid", {"n": 2}, aggregate=("order", "o-1")),
            NewEvent("order.shipped", {"n": 3}, aggregate=("order", "o-1")),
        ],
        idempotency_key="o-1-checkout",
    )

    assert [e.type for e in stored] == ["order.placed", "order.paid", "order.shipped"]
    assert [e.aggregate_version for e in stored] == [1, 2, 3]
    assert [e.data for e in stored] == [{"n": 1}, {"n": 2}, {"n": 3}]
    positions = [e.position for e in stored]
    assert positions == sorted(positions) and len(set(positions)) == 3
    assert all(e.channel == "orders" and e.producer == "shop" for e in stored)
    assert await read_log(event_url, minter) == stored
    assert publisher.requests_sent == 1 and publisher.slept == []


async def test_a_batch_with_one_conflicting_event_stores_nothing(
    twin: MakeTwin, event_url: str, minter: TokenMinter
) -> None:
    publisher = twin()
    first = await publisher.publish(
        "orders", "order.placed", aggregate=("order", "o-1"), expected_version=0
    )

    with pytest.raises(PublishError) as caught:
        await publisher.publish_batch(
            "orders",
            [
                NewEvent("order.placed", aggregate=("order", "o-2"), expected_version=0),
                NewEvent("note.added"),
                NewEvent("order.placed", aggregate=("order", "o-1"), expected_version=0),
            ],
        )

    assert caught.value.error == "version_conflict" and caught.value.status_code == 409
    assert caught.value.current_version == 1
    assert caught.value.attempts == 1 and publisher.slept == []  # not retried
    assert await read_log(event_url, minter) == [first]  # neither o-2 nor the note
    # o-2 is still new: the same batch without the conflict goes through.
    again = await publisher.publish_batch(
        "orders", [NewEvent("order.placed", aggregate=("order", "o-2"), expected_version=0)]
    )
    assert again[0].aggregate_version == 1


async def test_a_batch_whose_answer_was_lost_is_stored_once(
    twin: MakeTwin, event_url: str, minter: TokenMinter
) -> None:
    publisher = twin(lose=2)

    stored = await publisher.publish_batch(
        "orders",
        [
            NewEvent("order.placed", aggregate=("order", "o-1"), expected_version=0),
            NewEvent("order.paid", aggregate=("order", "o-1")),
        ],
    )

    assert publisher.requests_sent == 3 and len(publisher.slept) == 2
    assert await read_log(event_url, minter) == stored  # the first request's events, once
    assert [e.aggregate_version for e in stored] == [1, 2]


async def test_a_publish_whose_answer_was_lost_returns_the_stored_event_not_a_conflict(
    twin: MakeTwin, event_url: str, minter: TokenMinter
) -> None:
    publisher = twin(lose=1)

    # Had the retry been a new publish, expected_version=0 would now be a 409.
    event = await publisher.publish(
        "orders", "order.placed", aggregate=("order", "o-1"), expected_version=0
    )

    assert publisher.requests_sent == 2
    assert await read_log(event_url, minter) == [event]


async def test_an_invalid_event_in_a_batch_is_refused_at_once_and_stores_nothing(
    twin: MakeTwin, event_url: str, minter: TokenMinter
) -> None:
    publisher = twin()

    with pytest.raises(PublishError) as caught:
        await publisher.publish_batch("orders", [NewEvent("ok"), NewEvent("not a type")])

    assert caught.value.status_code == 422 and caught.value.error == "validation_error"
    assert caught.value.attempts == 1 and publisher.requests_sent == 1
    assert await read_log(event_url, minter) == []


async def test_a_key_reused_for_another_batch_is_refused_at_once(
    twin: MakeTwin, event_url: str, minter: TokenMinter
) -> None:
    publisher = twin()
    first = await publisher.publish_batch("orders", [NewEvent("a")], idempotency_key="k-1")
    replay = await publisher.publish_batch("orders", [NewEvent("a")], idempotency_key="k-1")

    with pytest.raises(PublishError) as caught:
        await publisher.publish_batch("orders", [NewEvent("b")], idempotency_key="k-1")

    assert replay == first
    assert caught.value.error == "idempotency_key_reused" and caught.value.attempts == 1
    assert await read_log(event_url, minter) == first
