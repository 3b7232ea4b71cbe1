"""The TokenStore contract, run against Redis and the in-process dict."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from authbus.common._keys import TokenStoreKeys, token_key
from authbus.core.redis import create_redis
from authbus.token.store import CodeReplay, MemoryTokenStore, RedisTokenStore, TokenStore

TTL = 0.3  # seconds; short TTLs are part of the contract (Redis PX, dict clock)


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


async def test_access_token_lives_until_ttl(store: TokenStore) -> None:
    await store.add_access_token("j1", {"sub": "u"}, TTL)
    assert await store.access_token("j1") == {"sub": "u"}
    await asyncio.sleep(TTL + 0.2)
    assert await store.access_token("j1") is None


async def test_revocation(store: TokenStore) -> None:
    await store.add_access_token("j2", {"sub": "u"}, 60)
    assert await store.revoke_access_token("j2") is True
    assert await store.access_token("j2") is None
    assert await store.revoke_access_token("j2") is False


async def test_redis_access_token_at_shared_key(redis_url: str, redis_prefix: str) -> None:
    client = create_redis(redis_url)
    store = RedisTokenStore(client, redis_prefix)
    await store.add_access_token("shared", {"sub": "u"}, 60)
    assert await client.exists(token_key(redis_prefix, "shared")) == 1
    ttl = await client.pttl(token_key(redis_prefix, "shared"))
    assert 0 < ttl <= 60_000
    await store.revoke_access_token("shared")
    assert await client.exists(token_key(redis_prefix, "shared")) == 0
    await store.close()


async def test_code_single_use(store: TokenStore) -> None:
    await store.add_code("c1", {"client_id": "web"}, 60)
    assert await store.redeem_code("c1", 60) == {"client_id": "web"}
    assert await store.redeem_code("c1", 60) is None
    assert await store.used_code("c1") == {"pending": True}
    assert await store.record_code_tokens("c1", {"jti": "j", "family": "f"}) is True
    assert await store.used_code("c1") == {"jti": "j", "family": "f"}


async def test_code_presented_again_tells_a_duplicate_in_flight_from_a_replay(
    store: TokenStore,
) -> None:
    await store.add_code("r1", {}, 60)
    await store.redeem_code("r1", 60)
    # The redemption is still issuing: a duplicate finds nothing to revoke.
    assert await store.code_replay("r1") == CodeReplay("in_flight")
    assert await store.record_code_tokens("r1", {"jti": "j", "family": None}) is True
    # Once it has recorded its tokens, a presentation is a replay that names them.
    replay = await store.code_replay("r1")
    assert replay == CodeReplay("replayed", {"jti": "j", "family": None})
    assert await store.code_replay("r1") == replay  # and every later one too
    # A code never redeemed is no replay.
    assert await store.code_replay("never") == CodeReplay("unknown")


async def test_code_single_use_under_concurrency(store: TokenStore) -> None:
    await store.add_code("c2", {"client_id": "web"}, 60)
    results = await asyncio.gather(*(store.redeem_code("c2", 60) for _ in range(20)))
    assert sum(r is not None for r in results) == 1
    # Every loser finds the winner's marker (written in the same atomic step).
    replays = await asyncio.gather(*(store.code_replay("c2") for _ in range(19)))
    assert {r.status for r in replays} == {"in_flight"}


async def test_used_code_marker_lives_as_long_as_redeem_said(store: TokenStore) -> None:
    await store.add_code("c4", {}, 60)
    await store.redeem_code("c4", TTL)
    assert await store.record_code_tokens("c4", {"jti": "j", "family": "f"}) is True
    await asyncio.sleep(TTL + 0.2)  # recording kept the TTL rather than resetting it
    assert await store.code_replay("c4") == CodeReplay("unknown")
    assert await store.record_code_tokens("c4", {"jti": "j2", "family": None}) is False


async def test_code_expires(store: TokenStore) -> None:
    await store.add_code("c3", {"x": 1}, TTL)
    await asyncio.sleep(TTL + 0.2)
    assert await store.redeem_code("c3", 60) is None
    assert await store.used_code("c3") is None


async def test_unknown_code_leaves_no_marker(store: TokenStore) -> None:
    assert await store.redeem_code("nope", 60) is None
    assert await store.used_code("nope") is None
    assert await store.record_code_tokens("nope", {"jti": "x"}) is False
    assert await store.used_code("nope") is None


async def test_refresh_rotation(store: TokenStore) -> None:
    await store.add_refresh_token("f1", "h1", {"sub": "u", "client_id": "web"}, 60)
    assert await store.refresh_token("f1", "h1") == {"sub": "u", "client_id": "web"}
    out = await store.rotate_refresh_token("f1", "h1", "h2", {"sub": "u", "n": 2}, 60, 0)
    assert out.status == "rotated"
    assert out.data == {"sub": "u", "client_id": "web"}
    assert await store.refresh_token("f1", "h1") is None
    assert await store.refresh_token("f1", "h2") == {"sub": "u", "n": 2}
    # No grace period (0): a replay at once, even within the same millisecond, is reuse.
    again = await store.rotate_refresh_token("f1", "h1", "h3", {}, 60, 0)
    assert again.status == "reused"
    assert (await store.rotate_refresh_token("f1", "zz", "h4", {}, 60, 0)).status == "unknown"


async def test_refresh_reuse_within_grace(store: TokenStore) -> None:
    await store.add_refresh_token("f2", "h1", {"sub": "u"}, 60)
    first = await store.rotate_refresh_token("f2", "h1", "h2", {}, 60, 30, successor="sealed-h2")
    assert first.status == "rotated"
    again = await store.rotate_refresh_token("f2", "h1", "h3", {}, 60, 30, successor="sealed-h3")
    # A retry within the grace period learns what the first rotation stored, nothing new.
    assert (again.status, again.next_hash, again.successor) == ("grace", "h2", "sealed-h2")
    assert again.data == {"sub": "u"}
    assert await store.refresh_token("f2", "h3") is None


async def test_refresh_rotation_under_concurrency(store: TokenStore) -> None:
    await store.add_refresh_token("f3", "h0", {"sub": "u"}, 60)
    results = await asyncio.gather(
        *(store.rotate_refresh_token("f3", "h0", f"n{i}", {"i": i}, 60, 30) for i in range(20))
    )
    statuses = [r.status for r in results]
    assert statuses.count("rotated") == 1
    assert set(statuses) == {"rotated", "grace"}
    winner_hash = f"n{statuses.index('rotated')}"
    assert {r.next_hash for r in results if r.status == "grace"} == {winner_hash}
    winners = [i for i, r in enumerate(results) if r.status == "rotated"]
    assert await store.refresh_token("f3", f"n{winners[0]}") == {"i": winners[0]}
    losers = [i for i in range(20) if i not in winners]
    assert await store.refresh_token("f3", f"n{losers[0]}") is None


async def test_revoke_family(store: TokenStore) -> None:
    await store.add_refresh_token("f4", "h1", {"sub": "u"}, 60)
    await store.add_access_token("a1", {"sub": "u"}, 60, family="f4")
    await store.add_access_token("a2", {"sub": "u"}, 60, family="f4")
    await store.add_access_token("other", {"sub": "u"}, 60)
    assert await store.revoke_family("f4") == ["a1", "a2"]
    assert await store.access_token("a1") is None
    assert await store.access_token("other") is not None
    assert await store.refresh_token("f4", "h1") is None
    rotated = await store.rotate_refresh_token("f4", "h1", "h2", {}, 60, 0)
    assert rotated.status == "revoked"


async def test_refresh_family_expires(store: TokenStore) -> None:
    await store.add_refresh_token("f5", "h1", {"sub": "u"}, TTL)
    await asyncio.sleep(TTL + 0.2)
    assert await store.refresh_token("f5", "h1") is None
    assert (await store.rotate_refresh_token("f5", "h1", "h2", {}, 60, 0)).status == "revoked"


async def test_sessions(store: TokenStore) -> None:
    await store.add_session("s1", {"user_id": "u"}, TTL)
    assert await store.session("s1") == {"user_id": "u"}
    await store.delete_session("s1")
    assert await store.session("s1") is None
    await store.add_session("s2", {"user_id": "u"}, TTL)
    await asyncio.sleep(TTL + 0.2)
    assert await store.session("s2") is None


async def test_ping(store: TokenStore) -> None:
    await store.ping()


async def test_memory_store_warns_at_startup(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="authbus.token.store"):
        MemoryTokenStore()
    assert "this process only" in caplog.text


async def test_revoke_user_ends_everything_issued_to_that_user(store: TokenStore) -> None:
    await store.add_refresh_token("uf", "h1", {"sub": "u1"}, 60, subject="u1")
    await store.add_access_token("uf-a", {"sub": "u1"}, 60, family="uf")
    await store.add_access_token("u1-implicit", {"sub": "u1"}, 60, subject="u1")
    await store.add_session("u1-sso", {"user_id": "u1"}, 60, subject="u1")
    await store.add_code("u1-code", {"sub": "u1"}, 60, subject="u1")
    await store.add_refresh_token("other", "h1", {"sub": "u2"}, 60, subject="u2")
    await store.add_access_token("u2-a", {"sub": "u2"}, 60, subject="u2")
    await store.add_session("u2-sso", {"user_id": "u2"}, 60, subject="u2")

    assert await store.revoke_user("u1") == 5  # family + its token, token, session, code
    assert await store.refresh_token("uf", "h1") is None
    assert (await store.rotate_refresh_token("uf", "h1", "h2", {}, 60, 0)).status == "revoked"
    assert await store.access_token("uf-a") is None
    assert await store.access_token("u1-implicit") is None
    assert await store.session("u1-sso") is None
    assert await store.redeem_code("u1-code", 60) is None
    # Another user's grants are untouched; a second revocation finds nothing (idempotent).
    assert await store.refresh_token("other", "h1") == {"sub": "u2"}
    assert await store.access_token("u2-a") is not None
    assert await store.session("u2-sso") is not None
    assert await store.revoke_user("u1") == 0
    assert await store.revoke_user("nobody") == 0


async def test_rotated_family_stays_revocable_by_user(store: TokenStore) -> None:
    await store.add_refresh_token("rf", "h1", {"sub": "u3"}, TTL, subject="u3")
    out = await store.rotate_refresh_token("rf", "h1", "h2", {"sub": "u3"}, 60, 0, subject="u3")
    assert out.status == "rotated"
    await asyncio.sleep(TTL + 0.2)  # past the first token's lifetime, within the second's
    assert await store.refresh_token("rf", "h2") == {"sub": "u3"}
    assert await store.revoke_user("u3") >= 1
    assert await store.refresh_token("rf", "h2") is None


async def test_user_index_entries_expire_with_their_grants(store: TokenStore) -> None:
    await store.add_access_token("short", {"sub": "u4"}, TTL, subject="u4")
    await asyncio.sleep(TTL + 0.2)
    await store.add_access_token("long", {"sub": "u4"}, 60, subject="u4")
    assert await store.revoke_user("u4") == 1  # the expired entry was dropped, not counted
    assert await store.access_token("long") is None


async def test_access_token_joining_a_revoked_family_is_dropped(store: TokenStore) -> None:
    # A refresh racing a revocation: the new access token must not outlive the family.
    await store.add_refresh_token("gone", "h1", {"sub": "u"}, 60)
    await store.revoke_family("gone")
    await store.add_access_token("late", {"sub": "u"}, 60, family="gone")
    assert await store.access_token("late") is None


async def test_redis_user_index_expires_with_last_grant(redis_url: str, redis_prefix: str) -> None:
    client = create_redis(redis_url)
    store = RedisTokenStore(client, redis_prefix)
    await store.add_session("s", {"user_id": "u5"}, 2, subject="u5")
    await store.add_access_token("a", {"sub": "u5"}, 30, subject="u5")
    ttl = await client.pttl(TokenStoreKeys(redis_prefix).user_grants("u5"))
    assert 20_000 < ttl <= 30_000
    await store.close()
