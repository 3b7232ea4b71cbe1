"""AsyncTokenAuth / AsyncRefreshTokenAuth (httpx) against a fake token endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from authbus.common import AsyncRefreshTokenAuth, AsyncTokenAuth, TokenError
from tests.support.tokens import FakeClock
from tests.unit.common.fakes import (
    ISSUER,
    RESOURCE_URL,
    TOKEN_URL,
    FakeResource,
    FakeTokenEndpoint,
)


def _auth(endpoint: FakeTokenEndpoint, **kw: object) -> AsyncTokenAuth:
    kw.setdefault("token_url", TOKEN_URL)
    return AsyncTokenAuth(
        endpoint.client_id,
        endpoint.client_secret,
        transport=endpoint.async_transport(),
        **kw,  # type: ignore[arg-type]
    )


def _client(auth: httpx.Auth, resource: FakeResource) -> httpx.AsyncClient:
    return httpx.AsyncClient(auth=auth, transport=httpx.MockTransport(resource.respond))


async def test_request_carries_client_credentials_token() -> None:
    endpoint, resource = FakeTokenEndpoint(), FakeResource()
    async with _client(_auth(endpoint, scopes=["events:read"]), resource) as client:
        response = await client.get(RESOURCE_URL)
    assert response.json()["token"] == "tok-1"
    assert endpoint.forms == [{"grant_type": "client_credentials", "scope": "events:read"}]


async def test_fifty_tasks_cause_one_token_request() -> None:
    endpoint, resource = FakeTokenEndpoint(delay=0.02), FakeResource()
    async with _client(_auth(endpoint), resource) as client:
        responses = await asyncio.gather(*(client.get(RESOURCE_URL) for _ in range(50)))
    assert endpoint.token_requests == 1
    assert {r.json()["token"] for r in responses} == {"tok-1"}


async def test_short_token_is_renewed_at_half_life() -> None:
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(expires_in=40)
    auth = _auth(endpoint, clock=clock, leeway=30)
    assert await auth.get_token() == "tok-1"
    clock.advance(19)
    assert await auth.get_token() == "tok-1"
    clock.advance(1)
    assert await auth.get_token() == "tok-2"


async def test_401_gets_a_new_token_and_retries_once() -> None:
    endpoint, resource = FakeTokenEndpoint(), FakeResource()
    async with _client(_auth(endpoint), resource) as client:
        await client.get(RESOURCE_URL)
        resource.rejected.add("tok-1")
        response = await client.post(RESOURCE_URL, content=b"payload")
    assert response.json() == {"token": "tok-2", "body": "payload"}
    assert [r.status_code for r in response.history] == [401]


async def test_401_is_retried_only_once() -> None:
    endpoint, resource = FakeTokenEndpoint(), FakeResource()
    resource.rejected.update({"tok-1", "tok-2", "tok-3"})
    async with _client(_auth(endpoint), resource) as client:
        response = await client.get(RESOURCE_URL)
    assert response.status_code == 401
    assert len(resource.seen) == 2


async def test_streamed_body_is_not_replayed_on_401() -> None:
    endpoint, resource = FakeTokenEndpoint(), FakeResource()
    resource.rejected.add("tok-1")

    async def body() -> AsyncIterator[bytes]:
        yield b"chunk"

    async with _client(_auth(endpoint), resource) as client:
        response = await client.post(RESOURCE_URL, content=body())
    assert response.status_code == 401
    assert len(resource.seen) == 1


async def test_invalid_client_raises_typed_error() -> None:
    endpoint = FakeTokenEndpoint()
    auth = AsyncTokenAuth("svc", "wrong", token_url=TOKEN_URL, transport=endpoint.async_transport())
    with pytest.raises(TokenError) as caught:
        await auth.get_token()
    assert (caught.value.error, caught.value.status_code) == ("invalid_client", 401)


async def test_unreachable_endpoint_is_a_token_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    auth = AsyncTokenAuth("svc", "x", token_url=TOKEN_URL, transport=httpx.MockTransport(refuse))
    with pytest.raises(TokenError) as caught:
        await auth.get_token()
    assert caught.value.error == "temporarily_unavailable"


async def test_token_endpoint_is_discovered_from_metadata() -> None:
    endpoint = FakeTokenEndpoint()
    auth = AsyncTokenAuth(
        endpoint.client_id,
        endpoint.client_secret,
        issuer=ISSUER,
        transport=endpoint.async_transport(),
    )
    assert await auth.get_token() == "tok-1"
    assert await auth.get_token() == "tok-1"
    assert (endpoint.metadata_requests, endpoint.token_requests) == (1, 1)


async def test_sync_httpx_client_is_refused() -> None:
    endpoint, resource = FakeTokenEndpoint(), FakeResource()
    with (
        httpx.Client(auth=_auth(endpoint), transport=httpx.MockTransport(resource.respond)) as c,
        pytest.raises(RuntimeError, match="AsyncClient"),
    ):
        c.get(RESOURCE_URL)


async def test_refresh_token_auth_rotates() -> None:
    endpoint = FakeTokenEndpoint()
    auth = AsyncRefreshTokenAuth(
        "public-web", "rt-1", token_url=TOKEN_URL, transport=endpoint.async_transport()
    )
    assert await auth.get_token() == "tok-1"
    assert auth.refresh_token == "rt-2"


def test_auth_object_works_across_event_loops() -> None:
    endpoint = FakeTokenEndpoint(expires_in=None)
    auth = _auth(endpoint)
    assert asyncio.run(auth.get_token()) == "tok-1"
    auth._core.tokens = None
    assert asyncio.run(auth.get_token()) == "tok-2"


async def test_injected_transport_is_left_open_for_its_owner() -> None:
    endpoint = FakeTokenEndpoint(expires_in=None)

    class Recording(httpx.MockTransport):
        closed = 0

        async def aclose(self) -> None:
            Recording.closed += 1

    auth = AsyncTokenAuth(
        "svc",
        endpoint.client_secret,
        token_url=TOKEN_URL,
        transport=Recording(endpoint.async_handler),
    )
    await auth.get_token()
    auth._core.tokens = None
    await auth.get_token()
    assert Recording.closed == 0
