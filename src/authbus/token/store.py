"""The token store: short-lived OAuth state with TTLs, in Redis or in one process's memory.

What it holds (values are JSON objects; secrets only ever as SHA-256 digests):

- active access tokens, jti -> info, at `token_key(prefix, jti)` so every service can check
  revocation with one EXISTS;
- authorization codes (single use: redeemed with an atomic GETDEL), each leaving a "used"
  marker that remembers the tokens issued from it (RFC 6749 §4.1.2: on reuse, revoke them);
- refresh-token families: one key per family (alive iff it exists) plus one key per refresh
  token; rotation is one atomic step that tells a first use from a reuse;
- SSO sessions.

    store = MemoryTokenStore()                        # or RedisTokenStore(redis, "ab")
    await store.add_code(code_hash, {"client_id": "app"}, ttl_s=60)
    await store.redeem_code(code_hash, used_ttl_s=600)  # the data, once; then None
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from authbus.common._keys import token_key
from authbus.core.redis import AnyRedis

log = logging.getLogger("authbus.token.store")

Json = dict[str, Any]
RotationStatus = Literal["rotated", "unknown", "grace", "reused", "revoked"]


@dataclass(frozen=True)
class Rotation:
    """The outcome of presenting a refresh token.

    `rotated`: first use, `data` is the old token's record and the new token is stored;
    `grace`: already rotated moments ago (a client's retry; refused without revoking);
    `reused`: already rotated long ago, the family should be revoked (RFC 9700 §4.14.2);
    `revoked`: the family is gone; `unknown`: no such token.
    """

    status: RotationStatus
    data: Json | None = None


class TokenStore(Protocol):
    """Where the token service keeps its short-lived state. TTLs are seconds (may be < 1)."""

    async def ping(self) -> None:
        """Raise when the backend is unreachable."""

    async def close(self) -> None:
        """Release connections."""

    async def add_access_token(
        self, jti: str, info: Json, ttl_s: float, family: str | None = None
    ) -> None:
        """Record an issued access token (and tie it to a refresh family, if any)."""

    async def access_token(self, jti: str) -> Json | None:
        """The info of an active access token, or None (expired, revoked, unknown)."""

    async def revoke_access_token(self, jti: str) -> bool:
        """Forget an access token; True if it was active."""

    async def add_code(self, code_hash: str, data: Json, ttl_s: float) -> None:
        """Store an authorization code's grant."""

    async def redeem_code(self, code_hash: str, used_ttl_s: float) -> Json | None:
        """Atomically take a code (at most one caller ever gets it) and leave a used marker."""

    async def record_code_tokens(self, code_hash: str, issued: Json) -> None:
        """Remember what was issued from a redeemed code (on the used marker)."""

    async def used_code(self, code_hash: str) -> Json | None:
        """The used marker of a redeemed code (what it issued), or None."""

    async def add_refresh_token(
        self, family: str, token_hash: str, data: Json, ttl_s: float
    ) -> None:
        """Start a family (or extend it) with this refresh token."""

    async def refresh_token(self, family: str, token_hash: str) -> Json | None:
        """The record of a current (unrotated, unrevoked) refresh token, or None."""

    async def rotate_refresh_token(
        self,
        family: str,
        old_hash: str,
        new_hash: str,
        new_data: Json,
        ttl_s: float,
        grace_s: float,
    ) -> Rotation:
        """Replace `old_hash` by `new_hash` in one atomic step (see `Rotation`)."""

    async def revoke_family(self, family: str) -> list[str]:
        """Revoke a refresh family and the access tokens issued from it; returns their jtis."""

    async def add_session(self, session_hash: str, data: Json, ttl_s: float) -> None:
        """Store an SSO session."""

    async def session(self, session_hash: str) -> Json | None:
        """An SSO session, or None."""

    async def delete_session(self, session_hash: str) -> None:
        """End an SSO session."""


@dataclass(frozen=True)
class TokenStoreKeys:
    """Redis key names of the token store (beside `token_key`).

    Keys of one refresh family share the hash tag `{rf:<family>}` and a code and its used
    marker share `{code:<hash>}`, so each Lua script touches one Redis Cluster slot.
    """

    prefix: str

    def access(self, jti: str) -> str:
        return token_key(self.prefix, jti)

    def code(self, code_hash: str) -> str:
        return f"{self.prefix}:{{code:{code_hash}}}"

    def code_used(self, code_hash: str) -> str:
        return f"{self.prefix}:{{code:{code_hash}}}:used"

    def family(self, family: str) -> str:
        return f"{self.prefix}:{{rf:{family}}}:family"

    def family_tokens(self, family: str) -> str:
        return f"{self.prefix}:{{rf:{family}}}:jtis"

    def refresh(self, family: str, token_hash: str) -> str:
        return f"{self.prefix}:{{rf:{family}}}:rt:{token_hash}"

    def refresh_rotated(self, family: str, token_hash: str) -> str:
        return f"{self.prefix}:{{rf:{family}}}:rt:{token_hash}:rotated"

    def session(self, session_hash: str) -> str:
        return f"{self.prefix}:sso:{session_hash}"


def _ms(ttl_s: float) -> int:
    return max(1, int(ttl_s * 1000))


def _dump(data: Json) -> str:
    return json.dumps(data, separators=(",", ":"))


# KEYS: code, used. ARGV: used_ttl_ms. GETDEL makes redemption single-use across processes.
_REDEEM_CODE = """
local v = redis.call('GETDEL', KEYS[1])
if not v then return false end
redis.call('SET', KEYS[2], '{}', 'PX', ARGV[1])
return v
"""

# KEYS: family, old, old_rotated, new. ARGV: new_data, ttl_ms, now_ms, grace_ms.
_ROTATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'revoked'} end
local v = redis.call('GET', KEYS[2])
if not v then return {'unknown'} end
local r = redis.call('GET', KEYS[3])
if r then
  if tonumber(ARGV[3]) - tonumber(r) <= tonumber(ARGV[4]) then return {'grace', v} end
  return {'reused', v}
end
local left = redis.call('PTTL', KEYS[2])
if left < 1 then left = tonumber(ARGV[2]) end
redis.call('SET', KEYS[3], ARGV[3], 'PX', left)
redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {'rotated', v}
"""


class RedisTokenStore:
    """`TokenStore` on Redis: native TTLs, Lua for the atomic steps, safe across processes."""

    def __init__(self, redis: AnyRedis, prefix: str) -> None:
        self.redis = redis
        self.keys = TokenStoreKeys(prefix)
        self._redeem = redis.register_script(_REDEEM_CODE)
        self._rotate = redis.register_script(_ROTATE)

    async def ping(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        await self.redis.aclose()

    async def add_access_token(
        self, jti: str, info: Json, ttl_s: float, family: str | None = None
    ) -> None:
        await self.redis.set(self.keys.access(jti), _dump(info), px=_ms(ttl_s))
        if family is not None:
            fam_jtis = self.keys.family_tokens(family)
            await self.redis.sadd(fam_jtis, jti)
            pttl = await self.redis.pttl(self.keys.family(family))
            await self.redis.pexpire(fam_jtis, max(int(pttl), _ms(ttl_s)))

    async def access_token(self, jti: str) -> Json | None:
        return _load(await self.redis.get(self.keys.access(jti)))

    async def revoke_access_token(self, jti: str) -> bool:
        return bool(await self.redis.delete(self.keys.access(jti)))

    async def add_code(self, code_hash: str, data: Json, ttl_s: float) -> None:
        await self.redis.set(self.keys.code(code_hash), _dump(data), px=_ms(ttl_s))

    async def redeem_code(self, code_hash: str, used_ttl_s: float) -> Json | None:
        keys = [self.keys.code(code_hash), self.keys.code_used(code_hash)]
        return _load(await self._redeem(keys=keys, args=[_ms(used_ttl_s)]))

    async def record_code_tokens(self, code_hash: str, issued: Json) -> None:
        await self.redis.set(self.keys.code_used(code_hash), _dump(issued), xx=True, keepttl=True)

    async def used_code(self, code_hash: str) -> Json | None:
        return _load(await self.redis.get(self.keys.code_used(code_hash)))

    async def add_refresh_token(
        self, family: str, token_hash: str, data: Json, ttl_s: float
    ) -> None:
        fam = self.keys.family(family)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(fam, "1", px=_ms(ttl_s))
            pipe.set(self.keys.refresh(family, token_hash), _dump(data), px=_ms(ttl_s))
            await pipe.execute()

    async def refresh_token(self, family: str, token_hash: str) -> Json | None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.exists(self.keys.family(family))
            pipe.get(self.keys.refresh(family, token_hash))
            pipe.exists(self.keys.refresh_rotated(family, token_hash))
            alive, raw, rotated = await pipe.execute()
        if not alive or rotated:
            return None
        return _load(raw)

    async def rotate_refresh_token(
        self,
        family: str,
        old_hash: str,
        new_hash: str,
        new_data: Json,
        ttl_s: float,
        grace_s: float,
    ) -> Rotation:
        keys = [
            self.keys.family(family),
            self.keys.refresh(family, old_hash),
            self.keys.refresh_rotated(family, old_hash),
            self.keys.refresh(family, new_hash),
        ]
        now_ms = int(time.time() * 1000)
        out = await self._rotate(
            keys=keys, args=[_dump(new_data), _ms(ttl_s), now_ms, int(grace_s * 1000)]
        )
        status = out[0].decode() if isinstance(out[0], bytes) else str(out[0])
        data = _load(out[1]) if len(out) > 1 else None
        return Rotation(status, data)  # type: ignore[arg-type]

    async def revoke_family(self, family: str) -> list[str]:
        fam_jtis = self.keys.family_tokens(family)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.smembers(fam_jtis)
            pipe.delete(self.keys.family(family), fam_jtis)
            members, _ = await pipe.execute()
        jtis = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
        # Access-token keys live on other cluster slots: deleted one by one (idempotent).
        for jti in jtis:
            await self.redis.delete(self.keys.access(jti))
        return jtis

    async def add_session(self, session_hash: str, data: Json, ttl_s: float) -> None:
        await self.redis.set(self.keys.session(session_hash), _dump(data), px=_ms(ttl_s))

    async def session(self, session_hash: str) -> Json | None:
        return _load(await self.redis.get(self.keys.session(session_hash)))

    async def delete_session(self, session_hash: str) -> None:
        await self.redis.delete(self.keys.session(session_hash))


def _load(raw: bytes | str | None) -> Json | None:
    if raw is None:
        return None
    data: Json = json.loads(raw)
    return data


class MemoryTokenStore:
    """`TokenStore` in a dict, with the same TTL semantics; state lives in ONE process only.

    Every method body runs without an `await` in between its reads and writes, so each is
    atomic with respect to other coroutines of the event loop.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, warn: bool = True) -> None:
        self._clock = clock
        self._data: dict[str, tuple[Any, float]] = {}
        self._writes = 0
        self.keys = TokenStoreKeys("mem")
        if warn:
            log.warning(
                "token store is in-process memory: tokens, codes and sessions hold for this "
                "process only (set AUTHBUS_REDIS_URL to share them between processes)"
            )

    # -- primitive helpers ---------------------------------------------------------------
    def _get(self, key: str) -> Any:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires <= self._clock():
            del self._data[key]
            return None
        return value

    def _set(self, key: str, value: Any, ttl_s: float) -> None:
        self._data[key] = (value, self._clock() + ttl_s)

    def _ttl(self, key: str) -> float:
        item = self._data.get(key)
        return max(0.0, item[1] - self._clock()) if item else 0.0

    def _pop(self, key: str) -> Any:
        value = self._get(key)
        self._data.pop(key, None)
        return value

    def _sweep(self) -> None:
        # Bounded memory: every 1000 writes, drop the entries that have expired.
        self._writes += 1
        if self._writes % 1000 == 0:
            now = self._clock()
            for k in [k for k, (_, exp) in self._data.items() if exp <= now]:
                del self._data[k]

    # -- TokenStore ----------------------------------------------------------------------
    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()

    async def add_access_token(
        self, jti: str, info: Json, ttl_s: float, family: str | None = None
    ) -> None:
        self._sweep()
        self._set(self.keys.access(jti), dict(info), ttl_s)
        if family is not None:
            key = self.keys.family_tokens(family)
            jtis: set[str] = self._get(key) or set()
            jtis.add(jti)
            ttl = max(self._ttl(self.keys.family(family)), ttl_s)
            self._set(key, jtis, ttl)

    async def access_token(self, jti: str) -> Json | None:
        value = self._get(self.keys.access(jti))
        return dict(value) if value is not None else None

    async def revoke_access_token(self, jti: str) -> bool:
        return self._pop(self.keys.access(jti)) is not None

    async def add_code(self, code_hash: str, data: Json, ttl_s: float) -> None:
        self._sweep()
        self._set(self.keys.code(code_hash), dict(data), ttl_s)

    async def redeem_code(self, code_hash: str, used_ttl_s: float) -> Json | None:
        value = self._pop(self.keys.code(code_hash))
        if value is None:
            return None
        self._set(self.keys.code_used(code_hash), {}, used_ttl_s)
        return dict(value)

    async def record_code_tokens(self, code_hash: str, issued: Json) -> None:
        key = self.keys.code_used(code_hash)
        if self._get(key) is not None:
            self._set(key, dict(issued), self._ttl(key))

    async def used_code(self, code_hash: str) -> Json | None:
        value = self._get(self.keys.code_used(code_hash))
        return dict(value) if value is not None else None

    async def add_refresh_token(
        self, family: str, token_hash: str, data: Json, ttl_s: float
    ) -> None:
        self._sweep()
        self._set(self.keys.family(family), True, ttl_s)
        self._set(self.keys.refresh(family, token_hash), dict(data), ttl_s)

    async def refresh_token(self, family: str, token_hash: str) -> Json | None:
        if self._get(self.keys.family(family)) is None:
            return None
        if self._get(self.keys.refresh_rotated(family, token_hash)) is not None:
            return None
        value = self._get(self.keys.refresh(family, token_hash))
        return dict(value) if value is not None else None

    async def rotate_refresh_token(
        self,
        family: str,
        old_hash: str,
        new_hash: str,
        new_data: Json,
        ttl_s: float,
        grace_s: float,
    ) -> Rotation:
        fam = self.keys.family(family)
        if self._get(fam) is None:
            return Rotation("revoked")
        old = self._get(self.keys.refresh(family, old_hash))
        if old is None:
            return Rotation("unknown")
        now = time.time()
        rotated_at = self._get(self.keys.refresh_rotated(family, old_hash))
        if rotated_at is not None:
            status: RotationStatus = "grace" if now - rotated_at <= grace_s else "reused"
            return Rotation(status, dict(old))
        left = self._ttl(self.keys.refresh(family, old_hash)) or ttl_s
        self._set(self.keys.refresh_rotated(family, old_hash), now, left)
        self._set(self.keys.refresh(family, new_hash), dict(new_data), ttl_s)
        if self._ttl(fam) < ttl_s:
            self._set(fam, True, ttl_s)
        return Rotation("rotated", dict(old))

    async def revoke_family(self, family: str) -> list[str]:
        self._pop(self.keys.family(family))
        jtis: set[str] = self._pop(self.keys.family_tokens(family)) or set()
        for jti in jtis:
            self._pop(self.keys.access(jti))
        return sorted(jtis)

    async def add_session(self, session_hash: str, data: Json, ttl_s: float) -> None:
        self._sweep()
        self._set(self.keys.session(session_hash), dict(data), ttl_s)

    async def session(self, session_hash: str) -> Json | None:
        value = self._get(self.keys.session(session_hash))
        return dict(value) if value is not None else None

    async def delete_session(self, session_hash: str) -> None:
        self._pop(self.keys.session(session_hash))
