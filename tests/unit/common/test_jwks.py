"""Keys fetched from a JWKS URL: caching, refetch on unknown kid (rate-limited), outages."""

from __future__ import annotations

import httpx
import pytest
from joserfc.jwk import ECKey

from authbus.common import InvalidTokenError, TokenCheckUnavailable, TokenValidator
from tests.support.tokens import FakeClock, TokenMinter

JWKS_URL = "http://token.test/.well-known/jwks.json"


class JWKSServer:
    def __init__(self, minter: TokenMinter) -> None:
        self.minter = minter
        self.fetches = 0
        self.down = False

    def handler(self, request: httpx.Request) -> httpx.Response:
        assert request.url == JWKS_URL
        self.fetches += 1
        if self.down:
            return httpx.Response(503)
        return httpx.Response(200, json=self.minter.jwks())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def minter(clock: FakeClock) -> TokenMinter:
    return TokenMinter(clock=clock)


@pytest.fixture
def server(minter: TokenMinter) -> JWKSServer:
    return JWKSServer(minter)


@pytest.fixture
def validator(minter: TokenMinter, server: JWKSServer) -> TokenValidator:
    return minter.validator(jwks_url=JWKS_URL, transport=httpx.MockTransport(server.handler))


async def test_keys_are_fetched_once_and_cached(
    minter: TokenMinter, server: JWKSServer, validator: TokenValidator
) -> None:
    for _ in range(3):
        await validator.validate(minter.mint())
    assert server.fetches == 1


async def test_rotated_key_is_picked_up_by_a_refetch(
    minter: TokenMinter, server: JWKSServer, validator: TokenValidator
) -> None:
    await validator.validate(minter.mint())
    minter.rotate("test-key-2")
    await validator.validate(minter.mint())
    assert server.fetches == 2


async def test_unknown_kid_refetches_at_most_once_per_interval(
    minter: TokenMinter, server: JWKSServer, validator: TokenValidator, clock: FakeClock
) -> None:
    await validator.validate(minter.mint())
    stranger = ECKey.generate_key("P-256", parameters={"kid": "stranger"})
    forged = minter.mint(headers={"kid": "stranger"}, key=stranger)
    for _ in range(5):
        with pytest.raises(InvalidTokenError, match="unknown key"):
            await validator.validate(forged)
    assert server.fetches == 2  # the first fetch plus one refetch, not one per token
    clock.advance(10)
    with pytest.raises(InvalidTokenError):
        await validator.validate(forged)
    assert server.fetches == 3


async def test_unreachable_jwks_means_unavailable_not_invalid(
    minter: TokenMinter, server: JWKSServer, validator: TokenValidator
) -> None:
    server.down = True
    with pytest.raises(TokenCheckUnavailable) as caught:
        await validator.validate(minter.mint())
    assert caught.value.retry_after > 0


async def test_connection_error_means_unavailable(minter: TokenMinter) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    validator = minter.validator(jwks_url=JWKS_URL, transport=httpx.MockTransport(refuse))
    with pytest.raises(TokenCheckUnavailable):
        await validator.validate(minter.mint())


async def test_garbage_jwks_means_unavailable(minter: TokenMinter) -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json={"nope": 1}))
    validator = minter.validator(jwks_url=JWKS_URL, transport=transport)
    with pytest.raises(TokenCheckUnavailable):
        await validator.validate(minter.mint())


async def test_stale_keys_still_serve_while_the_issuer_is_down(
    minter: TokenMinter, server: JWKSServer, validator: TokenValidator, clock: FakeClock
) -> None:
    await validator.validate(minter.mint())
    server.down = True
    clock.advance(301)  # past jwks_max_age
    await validator.validate(minter.mint())
    assert server.fetches == 2


async def test_recovers_when_the_issuer_comes_back(
    minter: TokenMinter, server: JWKSServer, validator: TokenValidator, clock: FakeClock
) -> None:
    server.down = True
    with pytest.raises(TokenCheckUnavailable):
        await validator.validate(minter.mint())
    server.down = False
    clock.advance(10)
    await validator.validate(minter.mint())
