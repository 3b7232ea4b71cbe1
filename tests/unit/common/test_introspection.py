"""IntrospectionRevocationCheck against a fake RFC 7662 endpoint."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs

import httpx
import pytest

from authbus.common import (
    IntrospectionRevocationCheck,
    InvalidTokenError,
    TokenCheckUnavailable,
)
from tests.support.tokens import FakeClock, TokenMinter

URL = "http://token.test/introspect"


class Introspection:
    def __init__(self) -> None:
        self.active: set[str] = set()
        self.calls = 0
        self.status = 200

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        assert request.headers["authorization"] == "Basic " + base64.b64encode(b"rs:pw").decode()
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        assert form["token_type_hint"] == "access_token"
        if self.status != 200:
            return httpx.Response(self.status)
        return httpx.Response(200, json={"active": form["token"] in self.active})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def endpoint() -> Introspection:
    return Introspection()


def check(endpoint: Introspection, clock: FakeClock, **kw: float) -> IntrospectionRevocationCheck:
    return IntrospectionRevocationCheck(
        URL, "rs", "pw", transport=httpx.MockTransport(endpoint.handler), clock=clock, **kw
    )


async def test_active_and_revoked(endpoint: Introspection, clock: FakeClock) -> None:
    minter = TokenMinter(clock=clock)
    validator = minter.validator(revocation=check(endpoint, clock))
    good, bad = minter.mint(), minter.mint()
    endpoint.active.add(good)
    await validator.validate(good)
    with pytest.raises(InvalidTokenError, match="revoked"):
        await validator.validate(bad)


async def test_answers_are_cached_for_cache_ttl(endpoint: Introspection, clock: FakeClock) -> None:
    minter = TokenMinter(clock=clock)
    validator = minter.validator(revocation=check(endpoint, clock, cache_ttl=5))
    token = minter.mint()
    endpoint.active.add(token)
    await validator.validate(token)
    await validator.validate(token)
    assert endpoint.calls == 1
    endpoint.active.clear()
    clock.advance(5)
    with pytest.raises(InvalidTokenError):
        await validator.validate(token)
    assert endpoint.calls == 2


async def test_endpoint_failure_is_unavailable(endpoint: Introspection, clock: FakeClock) -> None:
    minter = TokenMinter(clock=clock)
    endpoint.status = 500
    with pytest.raises(TokenCheckUnavailable):
        await minter.validator(revocation=check(endpoint, clock)).validate(minter.mint())


async def test_validator_aclose_closes_the_introspection_client(
    endpoint: Introspection, clock: FakeClock
) -> None:
    minter = TokenMinter(clock=clock)
    revocation = check(endpoint, clock)
    validator = minter.validator(revocation=revocation)
    token = minter.mint()
    endpoint.active.add(token)
    await validator.validate(token)
    await validator.aclose()
    await validator.aclose()  # idempotent
    await validator.validate(token)  # reopens on demand
    await validator.aclose()
