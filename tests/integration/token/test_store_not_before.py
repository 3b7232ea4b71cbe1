"""The per-user "not before" time of the token store, on Redis and the in-process dict.

(The rest of the `TokenStore` contract is in tests/contracts/test_token_store.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from authbus.core.redis import create_redis
from authbus.token.store import MemoryTokenStore, RedisTokenStore, TokenStore

TTL = 0.3


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[TokenStore]:
    if request.param == "memory":
        mem = MemoryTokenStore(warn=False)
        yield mem
        await mem.close()
        return
    url: str = request.getfixturevalue("redis_url")
    prefix: str = request.getfixturevalue("redis_prefix")
    red = RedisTokenStore(create_redis(url), prefix)
    yield red
    await red.close()


async def test_not_before_is_per_user_and_keeps_the_latest_time(store: TokenStore) -> None:
    assert await store.not_before("u1") is None
    await store.set_not_before("u1", 1_700_000_000.25, 60)
    assert await store.not_before("u1") == 1_700_000_000.25
    assert await store.not_before("u2") is None
    # An earlier time (a replica with a slower clock, an old event) never moves it back.
    await store.set_not_before("u1", 1_600_000_000.0, 60)
    assert await store.not_before("u1") == 1_700_000_000.25
    await store.set_not_before("u1", 1_800_000_000.5, 60)
    assert await store.not_before("u1") == 1_800_000_000.5


async def test_not_before_expires_and_a_shorter_ttl_does_not_cut_it(store: TokenStore) -> None:
    await store.set_not_before("u1", 1000.0, TTL)
    await store.set_not_before("u2", 1000.0, 60)
    await store.set_not_before("u2", 1001.0, TTL)  # keeps the longer life
    await asyncio.sleep(TTL + 0.2)
    assert await store.not_before("u1") is None
    assert await store.not_before("u2") == 1001.0


async def test_revoking_a_user_keeps_their_not_before(store: TokenStore) -> None:
    await store.add_session("s1", {"user_id": "u1"}, 60, subject="u1")
    await store.set_not_before("u1", 1000.0, 60)
    assert await store.revoke_user("u1") == 1
    assert await store.not_before("u1") == 1000.0
