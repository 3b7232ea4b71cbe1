"""The user-service client maps every answer of the verify contract to one outcome."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from authbus.token.errors import (
    InsufficientRights,
    InvalidCredentials,
    TemporarilyUnavailable,
    TooManyAttempts,
    UserDisabled,
)
from authbus.token.users import UserServiceClient


async def _token() -> str:
    return "service-token"


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> UserServiceClient:
    return UserServiceClient("http://users.test/", _token, transport=httpx.MockTransport(handler))


async def test_success_sends_contract_and_reads_user() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        user = {"id": "u1", "username": "alice", "effective_permissions": ["a", "b"]}
        return httpx.Response(200, json={"user": user})

    users = client_for(handler)
    user = await users.verify("alice", "pw", ["a"], client_address="10.0.0.9")
    await users.aclose()
    assert user.id == "u1"
    assert user.effective_permissions == {"a", "b"}
    (request,) = seen
    assert request.url == "http://users.test/v1/credentials/verify"
    assert request.headers["authorization"] == "Bearer service-token"
    assert json.loads(request.content) == {
        "username": "alice",
        "password": "pw",
        "scopes": ["a"],
        "client_address": "10.0.0.9",
    }


@pytest.mark.parametrize(
    "response, error",
    [
        (httpx.Response(401, json={"error": "invalid_credentials"}), InvalidCredentials),
        (httpx.Response(403, json={"error": "user_disabled"}), UserDisabled),
        (
            httpx.Response(403, json={"error": "insufficient_rights", "missing_scopes": ["x"]}),
            InsufficientRights,
        ),
        (
            httpx.Response(429, json={"error": "too_many_attempts"}, headers={"Retry-After": "9"}),
            TooManyAttempts,
        ),
        (httpx.Response(401, json={"error": "invalid_token"}), TemporarilyUnavailable),
        (httpx.Response(500, text="boom"), TemporarilyUnavailable),
        (httpx.Response(200, text="not json"), TemporarilyUnavailable),
        (httpx.Response(200, json={"unexpected": True}), TemporarilyUnavailable),
    ],
)
async def test_error_answers(response: httpx.Response, error: type[Exception]) -> None:
    users = client_for(lambda _request: response)
    with pytest.raises(error):
        await users.verify("alice", "pw", [])
    await users.aclose()


async def test_missing_scopes_and_retry_after_are_kept() -> None:
    body = {"error": "insufficient_rights", "missing_scopes": ["x", "y"]}
    users = client_for(lambda _r: httpx.Response(403, json=body))
    with pytest.raises(InsufficientRights) as rights:
        await users.verify("a", "b", ["x", "y"])
    assert rights.value.missing == ["x", "y"]
    throttled = client_for(lambda _r: httpx.Response(429, headers={"Retry-After": "12"}))
    with pytest.raises(TooManyAttempts) as many:
        await throttled.verify("a", "b", [])
    assert many.value.retry_after == 12
    await users.aclose()
    await throttled.aclose()


@pytest.mark.parametrize("exc", [httpx.ConnectError("down"), httpx.ReadTimeout("slow")])
async def test_unreachable_is_temporarily_unavailable(exc: httpx.HTTPError) -> None:
    def handler(_request: httpx.Request) -> httpx.Response:
        raise exc

    users = client_for(handler)
    with pytest.raises(TemporarilyUnavailable) as info:
        await users.verify("alice", "pw", [])
    assert info.value.code == "temporarily_unavailable"
    assert info.value.headers["Retry-After"]
    await users.aclose()
