"""The token store: short-lived OAuth state with TTLs, in Redis or in one process's memory.

What it holds (values are JSON objects; secrets only ever as SHA-256 digests):

- active access tokens, jti -> info, at `token_key(prefix, jti)` so every service can check
  revocation with one EXISTS;
- authorization codes (single use: redeemed with an atomic GETDEL), each leaving a "used"
  marker: pending while its one redemption issues tokens, then naming them, so a later
  replay can revoke them (RFC 6749 §4.1.2) while a concurrent duplicate is only refused;
- refresh-token families: one key per family (alive iff it exists) plus one key per refresh
  token; rotation is one atomic step that tells a first use from a reuse;
- SSO sessions;
- a per-user index of the above (`user_grants`), so `revoke_user` ends everything a user
  holds when the user service says the user was disabled, deleted or lost permissions;
- a per-user "not before" time: grants resting on a check of the user's rights made before
  it are refused, which catches those issued while a revocation ran (see `not_before`).

Key names come from `authbus.common._keys.TokenStoreKeys`.

    store = MemoryTokenStore()                        # or RedisTokenStore(redis, "ab")
    await store.add_code(code_hash, {"client_id": "app"}, ttl_s=60)
    await store.redeem_code(code_hash, used_ttl_s=600)  # the data, once; then None
    await store.record_code_tokens(code_hash, {"jti": jti, "family": family})
    await store.code_replay(code_hash)                # CodeReplay("replayed", {...})
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from authbus.common._keys import TokenStoreKeys
from authbus.core.redis import AnyRedis

log = logging.getLogger("authbus.token.store")

Json = dict[str, Any]
RotationStatus = Literal["rotated", "unknown", "grace", "reused", "revoked"]
CodeReplayStatus = Literal["replayed", "in_flight", "unknown"]


@dataclass(frozen=True)
class Rotation:
    """The outcome of presenting a refresh token.

    `rotated`: first use, `data` is the old token's record and the new token is stored;
    `grace`: already rotated moments ago (a client retrying after a lost response):
    `next_hash` and `successor` are what the first rotation stored, so the caller can answer
    the retry with the same new token instead of revoking;
    `reused`: already rotated longer ago, the family should be revoked (RFC 9700 §4.14.2);
    `revoked`: the family is gone; `unknown`: no such token.
    """

    status: RotationStatus
    data: Json | None = None
    next_hash: str | None = None
    successor: str | None = None


@dataclass(frozen=True)
class CodeReplay:
    """What presenting an authorization code that was already redeemed found.

    `replayed`: its redemption has finished; `issued` names what it issued (to revoke);
    `in_flight`: its redemption is still issuing tokens (a concurrent duplicate: nothing was
    issued before it, so there is nothing to revoke yet);
    `unknown`: the code was never redeemed, or its marker has expired.
    """

    status: CodeReplayStatus
    issued: Json | None = None


class TokenStore(Protocol):
    """Where the token service keeps its short-lived state. TTLs are seconds (may be < 1)."""

    async def ping(self) -> None:
        """Raise when the backend is unreachable."""

    async def close(self) -> None:
        """Release connections."""

    async def add_access_token(
        self,
        jti: str,
        info: Json,
        ttl_s: float,
        family: str | None = None,
        subject: str | None = None,
    ) -> None:
        """Record an issued access token and tie it to a refresh family, if any (a token
        added to a family revoked meanwhile is dropped), or else to a user `subject`."""

    async def access_token(self, jti: str) -> Json | None:
        """The info of an active access token, or None (expired, revoked, unknown)."""

    async def revoke_access_token(self, jti: str) -> bool:
        """Forget an access token; True if it was active."""

    async def add_code(
        self, code_hash: str, data: Json, ttl_s: float, subject: str | None = None
    ) -> None:
        """Store an authorization code's grant (indexed under the user `subject`)."""

    async def redeem_code(self, code_hash: str, used_ttl_s: float) -> Json | None:
        """Atomically take a code: among any number of concurrent callers exactly one gets
        its data; it leaves a pending used marker that lives `used_ttl_s` (as long as
        anything issued from the code may live)."""

    async def record_code_tokens(self, code_hash: str, issued: Json) -> bool:
        """Name on the used marker what the redemption issued (it is no longer pending);
        False when there is no marker (expired)."""

    async def code_replay(self, code_hash: str) -> CodeReplay:
        """What a second presentation of `code_hash` found (see `CodeReplay`)."""

    async def used_code(self, code_hash: str) -> Json | None:
        """The used marker of a redeemed code (`{"pending": true}`, then what it issued),
        or None."""

    async def add_refresh_token(
        self, family: str, token_hash: str, data: Json, ttl_s: float, subject: str | None = None
    ) -> None:
        """Start a family (or extend it) with this refresh token (indexed under `subject`)."""

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
        subject: str | None = None,
        *,
        successor: str | None = None,
    ) -> Rotation:
        """Replace `old_hash` by `new_hash` in one atomic step (see `Rotation`); a rotated
        family stays indexed under `subject` for its new lifetime. `successor` (opaque, the
        new token sealed under the old one) is kept for replays within `grace_s`."""

    async def revoke_family(self, family: str) -> list[str]:
        """Revoke a refresh family and the access tokens issued from it; returns their jtis."""

    async def add_session(
        self, session_hash: str, data: Json, ttl_s: float, subject: str | None = None
    ) -> None:
        """Store an SSO session (indexed under the user `subject`)."""

    async def session(self, session_hash: str) -> Json | None:
        """An SSO session, or None."""

    async def delete_session(self, session_hash: str) -> None:
        """End an SSO session."""

    async def revoke_user(self, subject: str) -> int:
        """Revoke every refresh family, access token, SSO session and code indexed under
        `subject`; returns how many entries were revoked (0 the second time: idempotent)."""

    async def set_not_before(self, subject: str, at_s: float, ttl_s: float) -> None:
        """From now on (for `ttl_s`), grants of `subject` whose rights were checked before
        `at_s` (epoch seconds) are refused. Never moves an earlier-set time back."""

    async def not_before(self, subject: str) -> float | None:
        """The time set by `set_not_before` for `subject`, or None."""


def _ms(ttl_s: float) -> int:
    return max(1, int(ttl_s * 1000))


def _dump(data: Json) -> str:
    return json.dumps(data, separators=(",", ":"))


# The used marker of a code whose redemption is still issuing tokens.
_PENDING: Json = {"pending": True}

# KEYS: code, used. ARGV: pending marker, used_ttl_ms. GETDEL makes redemption single-use
# across processes; the marker is written in the same step, so a loser always finds it.
_REDEEM_CODE = """
local v = redis.call('GETDEL', KEYS[1])
if not v then return false end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return v
"""

# KEYS: family, old, old_rotated, new. ARGV: new_data, ttl_ms, now_ms, grace_ms, marker.
# The rotated marker is JSON {"at": ms, "next": new hash, "successor": sealed new token}.
_ROTATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'revoked'} end
local v = redis.call('GET', KEYS[2])
if not v then return {'unknown'} end
local r = redis.call('GET', KEYS[3])
if r then
  local at = tonumber(cjson.decode(r)['at'])
  local grace = tonumber(ARGV[4])
  if grace > 0 and tonumber(ARGV[3]) - at <= grace then return {'grace', v, r} end
  return {'reused', v}
end
local left = redis.call('PTTL', KEYS[2])
if left < 1 then left = tonumber(ARGV[2]) end
redis.call('SET', KEYS[3], ARGV[5], 'PX', left)
redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {'rotated', v}
"""


# KEYS: user_grants. ARGV: member, expires_at_ms, now_ms. Drops entries that have expired,
# keeps each entry's latest expiry, and lets the set itself expire with its last entry.
_INDEX = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not old) or tonumber(old) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return 1
"""

# KEYS: not_before. ARGV: at (epoch ms), ttl_ms. Keeps the latest time and the longest TTL.
_NOT_BEFORE = """
local old = redis.call('GET', KEYS[1])
local at = tonumber(ARGV[1])
if old and tonumber(old) > at then at = tonumber(old) end
local ttl = tonumber(ARGV[2])
local left = redis.call('PTTL', KEYS[1])
if left > ttl then ttl = left end
redis.call('SET', KEYS[1], tostring(at), 'PX', ttl)
return 1
"""

# Entry kinds of the per-user index.
_FAMILY, _ACCESS, _SESSION, _CODE = "f", "a", "s", "c"


class RedisTokenStore:
    """`TokenStore` on Redis: native TTLs, Lua for the atomic steps, safe across processes."""

    def __init__(self, redis: AnyRedis, prefix: str) -> None:
        self.redis = redis
        self.keys = TokenStoreKeys(prefix)
        self._redeem = redis.register_script(_REDEEM_CODE)
        self._rotate = redis.register_script(_ROTATE)
        self._index_script = redis.register_script(_INDEX)
        self._not_before_script = redis.register_script(_NOT_BEFORE)

    async def _index(self, subject: str | None, kind: str, ident: str, ttl_s: float) -> None:
        if subject is None:
            return
        now_ms = int(time.time() * 1000)
        await self._index_script(
            keys=[self.keys.user_grants(subject)],
            args=[f"{kind}:{ident}", now_ms + _ms(ttl_s), now_ms],
        )

    async def ping(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        await self.redis.aclose()

    async def add_access_token(
        self,
        jti: str,
        info: Json,
        ttl_s: float,
        family: str | None = None,
        subject: str | None = None,
    ) -> None:
        await self.redis.set(self.keys.access(jti), _dump(info), px=_ms(ttl_s))
        if family is None:
            await self._index(subject, _ACCESS, jti, ttl_s)
            return
        fam_jtis = self.keys.family_tokens(family)
        await self.redis.sadd(fam_jtis, jti)
        pttl = await self.redis.pttl(self.keys.family(family))
        await self.redis.pexpire(fam_jtis, max(int(pttl), _ms(ttl_s)))
        if pttl == -2:
            # The family was revoked while this token was being issued (a refresh racing a
            # revocation): `revoke_family` may have read the jtis before our SADD.
            await self.redis.delete(self.keys.access(jti))

    async def access_token(self, jti: str) -> Json | None:
        return _load(await self.redis.get(self.keys.access(jti)))

    async def revoke_access_token(self, jti: str) -> bool:
        return bool(await self.redis.delete(self.keys.access(jti)))

    async def add_code(
        self, code_hash: str, data: Json, ttl_s: float, subject: str | None = None
    ) -> None:
        await self.redis.set(self.keys.code(code_hash), _dump(data), px=_ms(ttl_s))
        await self._index(subject, _CODE, code_hash, ttl_s)

    async def redeem_code(self, code_hash: str, used_ttl_s: float) -> Json | None:
        keys = [self.keys.code(code_hash), self.keys.code_used(code_hash)]
        return _load(await self._redeem(keys=keys, args=[_dump(_PENDING), _ms(used_ttl_s)]))

    async def record_code_tokens(self, code_hash: str, issued: Json) -> bool:
        # XX: only over an existing marker; KEEPTTL: it lives as long as redeem_code said.
        key = self.keys.code_used(code_hash)
        return bool(await self.redis.set(key, _dump(issued), xx=True, keepttl=True))

    async def code_replay(self, code_hash: str) -> CodeReplay:
        return _code_replay(_load(await self.redis.get(self.keys.code_used(code_hash))))

    async def used_code(self, code_hash: str) -> Json | None:
        return _load(await self.redis.get(self.keys.code_used(code_hash)))

    async def add_refresh_token(
        self, family: str, token_hash: str, data: Json, ttl_s: float, subject: str | None = None
    ) -> None:
        # Indexed first: a family that exists is always findable by `revoke_user`.
        await self._index(subject, _FAMILY, family, ttl_s)
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
        subject: str | None = None,
        *,
        successor: str | None = None,
    ) -> Rotation:
        # Indexed for the extended lifetime before rotating (harmless if rotation fails).
        await self._index(subject, _FAMILY, family, ttl_s)
        keys = [
            self.keys.family(family),
            self.keys.refresh(family, old_hash),
            self.keys.refresh_rotated(family, old_hash),
            self.keys.refresh(family, new_hash),
        ]
        now_ms = int(time.time() * 1000)
        marker = _dump({"at": now_ms, "next": new_hash, "successor": successor})
        out = await self._rotate(
            keys=keys, args=[_dump(new_data), _ms(ttl_s), now_ms, int(grace_s * 1000), marker]
        )
        status = out[0].decode() if isinstance(out[0], bytes) else str(out[0])
        data = _load(out[1]) if len(out) > 1 else None
        return _rotation(status, data, _load(out[2]) if len(out) > 2 else None)

    async def revoke_family(self, family: str) -> list[str]:
        fam_jtis = self.keys.family_tokens(family)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.smembers(fam_jtis)
            pipe.delete(self.keys.family(family), fam_jtis)
            members, _ = await pipe.execute()
        jtis = sorted(_text(m) for m in members)
        # Access-token keys live on other cluster slots: deleted one by one (idempotent).
        for jti in jtis:
            await self.redis.delete(self.keys.access(jti))
        return jtis

    async def add_session(
        self, session_hash: str, data: Json, ttl_s: float, subject: str | None = None
    ) -> None:
        await self._index(subject, _SESSION, session_hash, ttl_s)
        await self.redis.set(self.keys.session(session_hash), _dump(data), px=_ms(ttl_s))

    async def session(self, session_hash: str) -> Json | None:
        return _load(await self.redis.get(self.keys.session(session_hash)))

    async def delete_session(self, session_hash: str) -> None:
        await self.redis.delete(self.keys.session(session_hash))

    async def revoke_user(self, subject: str) -> int:
        index = self.keys.user_grants(subject)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrange(index, 0, -1)
            pipe.delete(index)
            members, _ = await pipe.execute()
        revoked = 0
        # The entries live on other cluster slots: revoked one by one (each idempotent).
        for member in members:
            kind, _, ident = _text(member).partition(":")
            if kind == _FAMILY:
                revoked += 1 + len(await self.revoke_family(ident))
            elif kind == _ACCESS:
                revoked += int(await self.redis.delete(self.keys.access(ident)))
            elif kind == _SESSION:
                revoked += int(await self.redis.delete(self.keys.session(ident)))
            elif kind == _CODE:
                revoked += int(await self.redis.delete(self.keys.code(ident)))
        return revoked

    async def set_not_before(self, subject: str, at_s: float, ttl_s: float) -> None:
        key = self.keys.user_not_before(subject)
        await self._not_before_script(keys=[key], args=[int(at_s * 1000), _ms(ttl_s)])

    async def not_before(self, subject: str) -> float | None:
        raw = await self.redis.get(self.keys.user_not_before(subject))
        return int(raw) / 1000 if raw is not None else None


def _rotation(status: str, data: Json | None, marker: Json | None) -> Rotation:
    if status == "grace" and marker is not None:
        next_hash, successor = marker.get("next"), marker.get("successor")
        return Rotation(
            "grace",
            data,
            next_hash=str(next_hash) if next_hash else None,
            successor=str(successor) if successor else None,
        )
    return Rotation(status, data)  # type: ignore[arg-type]


def _code_replay(marker: Json | None) -> CodeReplay:
    if marker is None:
        return CodeReplay("unknown")
    if marker.get("pending"):
        return CodeReplay("in_flight")
    return CodeReplay("replayed", marker)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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

    def _index(self, subject: str | None, kind: str, ident: str, ttl_s: float) -> None:
        if subject is None:
            return
        key = self.keys.user_grants(subject)
        now = self._clock()
        entries: dict[str, float] = {
            m: exp for m, exp in (self._get(key) or {}).items() if exp > now
        }
        member = f"{kind}:{ident}"
        entries[member] = max(entries.get(member, 0.0), now + ttl_s)
        self._set(key, entries, max(entries.values()) - now)

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
        self,
        jti: str,
        info: Json,
        ttl_s: float,
        family: str | None = None,
        subject: str | None = None,
    ) -> None:
        self._sweep()
        if family is None:
            self._set(self.keys.access(jti), dict(info), ttl_s)
            self._index(subject, _ACCESS, jti, ttl_s)
            return
        if self._get(self.keys.family(family)) is None:
            return  # the family was revoked while this token was being issued
        self._set(self.keys.access(jti), dict(info), ttl_s)
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

    async def add_code(
        self, code_hash: str, data: Json, ttl_s: float, subject: str | None = None
    ) -> None:
        self._sweep()
        self._set(self.keys.code(code_hash), dict(data), ttl_s)
        self._index(subject, _CODE, code_hash, ttl_s)

    async def redeem_code(self, code_hash: str, used_ttl_s: float) -> Json | None:
        value = self._pop(self.keys.code(code_hash))
        if value is None:
            return None
        self._set(self.keys.code_used(code_hash), dict(_PENDING), used_ttl_s)
        return dict(value)

    async def record_code_tokens(self, code_hash: str, issued: Json) -> bool:
        key = self.keys.code_used(code_hash)
        if self._get(key) is None:
            return False
        self._set(key, dict(issued), self._ttl(key))
        return True

    async def code_replay(self, code_hash: str) -> CodeReplay:
        marker = self._get(self.keys.code_used(code_hash))
        return _code_replay(dict(marker) if marker is not None else None)

    async def used_code(self, code_hash: str) -> Json | None:
        value = self._get(self.keys.code_used(code_hash))
        return dict(value) if value is not None else None

    async def add_refresh_token(
        self, family: str, token_hash: str, data: Json, ttl_s: float, subject: str | None = None
    ) -> None:
        self._sweep()
        self._index(subject, _FAMILY, family, ttl_s)
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
        subject: str | None = None,
        *,
        successor: str | None = None,
    ) -> Rotation:
        fam = self.keys.family(family)
        if self._get(fam) is None:
            return Rotation("revoked")
        old = self._get(self.keys.refresh(family, old_hash))
        if old is None:
            return Rotation("unknown")
        now = self._clock()
        marker: Json | None = self._get(self.keys.refresh_rotated(family, old_hash))
        if marker is not None:
            in_grace = grace_s > 0 and now - float(marker["at"]) <= grace_s
            status = "grace" if in_grace else "reused"
            return _rotation(status, dict(old), marker)
        left = self._ttl(self.keys.refresh(family, old_hash)) or ttl_s
        marker = {"at": now, "next": new_hash, "successor": successor}
        self._set(self.keys.refresh_rotated(family, old_hash), marker, left)
        self._set(self.keys.refresh(family, new_hash), dict(new_data), ttl_s)
        if self._ttl(fam) < ttl_s:
            self._set(fam, True, ttl_s)
        self._index(subject, _FAMILY, family, ttl_s)
        return Rotation("rotated", dict(old))

    async def revoke_family(self, family: str) -> list[str]:
        self._pop(self.keys.family(family))
        jtis: set[str] = self._pop(self.keys.family_tokens(family)) or set()
        for jti in jtis:
            self._pop(self.keys.access(jti))
        return sorted(jtis)

    async def add_session(
        self, session_hash: str, data: Json, ttl_s: float, subject: str | None = None
    ) -> None:
        self._sweep()
        self._set(self.keys.session(session_hash), dict(data), ttl_s)
        self._index(subject, _SESSION, session_hash, ttl_s)

    async def session(self, session_hash: str) -> Json | None:
        value = self._get(self.keys.session(session_hash))
        return dict(value) if value is not None else None

    async def delete_session(self, session_hash: str) -> None:
        self._pop(self.keys.session(session_hash))

    async def revoke_user(self, subject: str) -> int:
        entries: dict[str, float] = self._pop(self.keys.user_grants(subject)) or {}
        revoked = 0
        for member in entries:
            kind, _, ident = member.partition(":")
            if kind == _FAMILY:
                revoked += 1 + len(await self.revoke_family(ident))
            elif kind == _ACCESS:
                revoked += self._pop(self.keys.access(ident)) is not None
            elif kind == _SESSION:
                revoked += self._pop(self.keys.session(ident)) is not None
            elif kind == _CODE:
                revoked += self._pop(self.keys.code(ident)) is not None
        return revoked

    async def set_not_before(self, subject: str, at_s: float, ttl_s: float) -> None:
        key = self.keys.user_not_before(subject)
        at = max(at_s, self._get(key) or at_s)
        self._set(key, at, max(ttl_s, self._ttl(key)))

    async def not_before(self, subject: str) -> float | None:
        value = self._get(self.keys.user_not_before(subject))
        return float(value) if value is not None else None
