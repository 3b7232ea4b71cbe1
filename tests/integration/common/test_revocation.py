"""Revocation checks against a real Redis (the `redis_url` fixture)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from authbus.common import InvalidTokenError, RedisRevocationCheck, TokenCheckUnavailable
from authbus.common._keys import token_key
from tests.support.tokens import TokenMinter


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_token_is_active_while_its_key_exists(redis: Redis, redis_prefix: str) -> None:
    minter = TokenMinter()
    validator = minter.validator(revocation=RedisRevocationCheck(redis, redis_prefix))
    token = minter.mint(jti="jti-1")
    await redis.set(token_key(redis_prefix, "jti-1"), "1", ex=300)
    assert (await validator.validate(token)).subject == "user-1"


async def test_revoked_token_is_rejected_at_once(redis: Redis, redis_prefix: str) -> None:
    minter = TokenMinter()
    validator = minter.validator(revocation=RedisRevocationCheck(redis, redis_prefix))
    token = minter.mint(jti="jti-2")
    await redis.set(token_key(redis_prefix, "jti-2"), "1", ex=300)
    await validator.validate(token)
    await redis.delete(token_key(redis_prefix, "jti-2"))
    with pytest.raises(InvalidTokenError, match="revoked"):
        await validator.validate(token)


async def test_unknown_jti_is_rejected(redis: Redis, redis_prefix: str) -> None:
    minter = TokenMinter()
    validator = minter.validator(revocation=RedisRevocationCheck(redis, redis_prefix))
    with pytest.raises(InvalidTokenError, match="revoked"):
        await validator.validate(minter.mint())


async def test_redis_down_is_unavailable_not_invalid(redis_server_factory: object) -> None:
    from collections.abc import Callable
    from typing import Any, cast

    server = cast(Callable[[], Any], redis_server_factory)()
    client = Redis.from_url(server.url, socket_connect_timeout=1)
    minter = TokenMinter()
    validator = minter.validator(revocation=RedisRevocationCheck(client, "ab"))
    token = minter.mint(jti="j")
    await client.set(token_key("ab", "j"), "1")
    await validator.validate(token)
    server.stop()
    try:
        with pytest.raises(TokenCheckUnavailable):
            await validator.validate(token)
    finally:
        await client.aclose()
