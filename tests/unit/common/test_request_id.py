"""The request id in flight travels with outgoing calls (X-Request-ID)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Iterator

import httpx
import pytest

from authbus.common import AsyncEventPublisher, AsyncTokenAuth, EventPublisher, TokenAuth
from authbus.common._context import request_id_var
from authbus.common._transport import requests_session
from authbus.core import logging as core_logging
from authbus.token.users import UserServiceClient
from tests.unit.common.fakes import RESOURCE_URL, TOKEN_URL, FakeTokenEndpoint

EVENT_URL = "http://event.test"


class Recorder:
    """A resource (and event service) that remembers the headers it was sent."""

    def __init__(self) -> None:
        self.headers: list[httpx.Headers] = []

    def respond(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(request.headers)
        if request.url.path.endswith("/events"):
            return httpx.Response(
                201, json={"id": "e1", "position": 1, "channel": "orders", "type": "t"}
            )
        return httpx.Response(200, json={})

    @property
    def request_ids(self) -> list[str | None]:
        return [h.get("x-request-id") for h in self.headers]


@pytest.fixture
def request_id() -> Iterator[str]:
    token = request_id_var.set("rid-42")
    yield "rid-42"
    request_id_var.reset(token)


def _sync_auth(endpoint: FakeTokenEndpoint) -> TokenAuth:
    return TokenAuth(
        endpoint.client_id,
        endpoint.client_secret,
        token_url=TOKEN_URL,
        transport=endpoint.transport(),
    )


def _async_auth(endpoint: FakeTokenEndpoint) -> AsyncTokenAuth:
    return AsyncTokenAuth(
        endpoint.client_id,
        endpoint.client_secret,
        token_url=TOKEN_URL,
        transport=endpoint.async_transport(),
    )


def test_token_auth_sends_the_current_request_id(request_id: str) -> None:
    recorder = Recorder()
    session = requests_session(httpx.MockTransport(recorder.respond))
    session.get(RESOURCE_URL, auth=_sync_auth(FakeTokenEndpoint()))
    assert recorder.request_ids == [request_id]


def test_token_auth_sends_no_request_id_outside_a_request() -> None:
    recorder = Recorder()
    session = requests_session(httpx.MockTransport(recorder.respond))
    session.get(RESOURCE_URL, auth=_sync_auth(FakeTokenEndpoint()))
    assert recorder.request_ids == [None]


def test_token_auth_keeps_a_request_id_the_caller_set(request_id: str) -> None:
    recorder = Recorder()
    session = requests_session(httpx.MockTransport(recorder.respond))
    session.get(
        RESOURCE_URL, auth=_sync_auth(FakeTokenEndpoint()), headers={"x-request-id": "mine"}
    )
    assert recorder.request_ids == ["mine"]


def test_retry_after_401_carries_the_request_id_too(request_id: str) -> None:
    answers = iter([401, 200])
    seen: list[str | None] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("x-request-id"))
        return httpx.Response(next(answers), json={})

    session = requests_session(httpx.MockTransport(respond))
    response = session.get(RESOURCE_URL, auth=_sync_auth(FakeTokenEndpoint()))
    assert response.status_code == 200
    assert seen == [request_id, request_id]


async def test_async_token_auth_sends_the_current_request_id(request_id: str) -> None:
    recorder = Recorder()
    transport = httpx.MockTransport(recorder.respond)
    async with httpx.AsyncClient(auth=_async_auth(FakeTokenEndpoint()), transport=transport) as c:
        await c.get(RESOURCE_URL)
        await c.get(RESOURCE_URL, headers={"X-Request-ID": "mine"})
    assert recorder.request_ids == [request_id, "mine"]


async def test_concurrent_tasks_each_send_their_own_request_id() -> None:
    recorder = Recorder()
    transport = httpx.MockTransport(recorder.respond)
    auth = _async_auth(FakeTokenEndpoint())

    async def call(client: httpx.AsyncClient, rid: str) -> None:
        request_id_var.set(rid)  # each task runs in its own copy of the context
        await client.get(RESOURCE_URL)

    async with httpx.AsyncClient(auth=auth, transport=transport) as client:
        await asyncio.gather(*(call(client, f"r{i}") for i in range(20)))
    assert sorted(str(rid) for rid in recorder.request_ids) == sorted(f"r{i}" for i in range(20))


def test_event_publisher_sends_the_current_request_id(request_id: str) -> None:
    recorder = Recorder()
    publisher = EventPublisher(
        EVENT_URL, session=requests_session(httpx.MockTransport(recorder.respond))
    )
    publisher.publish("orders", "order.created", {"id": "1"})
    assert recorder.request_ids == [request_id]


async def test_async_event_publisher_sends_the_current_request_id(request_id: str) -> None:
    recorder = Recorder()
    client = httpx.AsyncClient(transport=httpx.MockTransport(recorder.respond))
    publisher = AsyncEventPublisher(EVENT_URL, client=client)
    try:
        await publisher.publish("orders", "order.created", {"id": "1"})
        await publisher.publish("orders", "order.created", {"id": "2"}, idempotency_key="k")
    finally:
        await publisher.aclose()
    assert recorder.request_ids == [request_id, request_id]
    assert recorder.headers[1]["idempotency-key"] == "k"


async def test_async_event_publisher_with_token_auth_sends_one_request_id(
    request_id: str,
) -> None:
    recorder = Recorder()
    client = httpx.AsyncClient(transport=httpx.MockTransport(recorder.respond))
    publisher = AsyncEventPublisher(EVENT_URL, client=client, auth=_async_auth(FakeTokenEndpoint()))
    try:
        await publisher.publish("orders", "order.created", {})
    finally:
        await publisher.aclose()
    assert recorder.headers[0].get_list("x-request-id") == [request_id]


def test_core_logging_uses_the_same_variable() -> None:
    assert core_logging.request_id_var is request_id_var
    formatter = core_logging.JsonFormatter("test")
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello", (), None)
    line = contextvars.copy_context().run(
        lambda: (request_id_var.set("rid-7"), formatter.format(record))[1]
    )
    assert '"request_id": "rid-7"' in line


async def test_token_service_forwards_the_request_id_to_the_user_service(
    request_id: str,
) -> None:
    recorder = Recorder()

    def verify(request: httpx.Request) -> httpx.Response:
        recorder.headers.append(request.headers)
        return httpx.Response(200, json={"user": {"id": "u1", "username": "alice"}})

    async def self_token() -> str:
        return "service-token"

    users = UserServiceClient("http://user.test", self_token, transport=httpx.MockTransport(verify))
    try:
        user = await users.verify("alice", "pw", ["orders:read"])
    finally:
        await users.aclose()
    assert user.id == "u1"
    assert recorder.request_ids == [request_id]
