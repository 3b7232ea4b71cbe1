"""Is a signature-checked access token still active? Two answers: Redis or RFC 7662.

JWTs are self-contained, but revocation must act at once, so a resource server may ask
the token service's store (Redis, shared) or its introspection endpoint.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from authbus.common._errors import TokenCheckUnavailable
from authbus.common._keys import DEFAULT_PREFIX, token_key


class RedisRevocationCheck:
    """A token is active iff the token service still holds its `jti` in Redis.

    The token service SETs `token_key(prefix, jti)` with the token's TTL at issue and
    DELetes it on revocation. A Redis failure is `TokenCheckUnavailable` (503): we fail
    closed rather than accept a token that may have been revoked. A cluster client works
    too (one key per check).

    Example:
        redis = create_redis(settings.redis_url)
        validator = TokenValidator(..., revocation=RedisRevocationCheck(redis, "ab"))
    """

    def __init__(self, redis: Redis | RedisCluster, prefix: str = DEFAULT_PREFIX) -> None:
        self.redis = redis
        self.prefix = prefix

    async def is_active(self, token: str, claims: Mapping[str, Any]) -> bool:
        """True when `token_key(prefix, jti)` exists."""
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            return False
        try:
            found = await self.redis.exists(token_key(self.prefix, jti))
        except (RedisError, OSError) as exc:
            raise TokenCheckUnavailable("the token store is unreachable") from exc
        return bool(found)


class IntrospectionRevocationCheck:
    """Asks the token service's RFC 7662 introspection endpoint whether a token is active.

    Authenticates with `client_secret_basic`. With `cache_ttl > 0` answers are kept that
    many seconds per `jti` (never beyond the token's `exp`), trading revocation delay for
    load. An unreachable endpoint is `TokenCheckUnavailable` (503).

    Example:
        check = IntrospectionRevocationCheck(
            "http://127.0.0.1:8082/introspect", "event-service", secret, cache_ttl=5
        )
        validator = TokenValidator(..., revocation=check)
    """

    def __init__(
        self,
        introspect_url: str,
        client_id: str,
        client_secret: str,
        *,
        cache_ttl: float = 0.0,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.introspect_url = introspect_url
        self._auth = httpx.BasicAuth(client_id, client_secret)
        self.cache_ttl = cache_ttl
        self._timeout = timeout
        self._transport = transport
        self._clock = clock
        self._cache: dict[str, tuple[float, bool]] = {}
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            # a client is bound to the loop it was first used on
            self._client = httpx.AsyncClient(transport=self._transport, timeout=self._timeout)
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def is_active(self, token: str, claims: Mapping[str, Any]) -> bool:
        """True when the introspection endpoint answers `"active": true`."""
        now = self._clock()
        jti = claims.get("jti")
        if self.cache_ttl > 0 and isinstance(jti, str):
            cached = self._cache.get(jti)
            if cached is not None and cached[0] > now:
                return cached[1]
        try:
            # RFC 7662 §2.1: form-encoded POST, the hint saves the server a lookup.
            response = await self._http().post(
                self.introspect_url,
                data={"token": token, "token_type_hint": "access_token"},
                auth=self._auth,
                headers={"Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise TokenCheckUnavailable("the introspection endpoint is unreachable") from exc
        if response.status_code != 200:
            raise TokenCheckUnavailable(
                f"the introspection endpoint answered {response.status_code}"
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise TokenCheckUnavailable("the introspection endpoint answered garbage") from exc
        active = isinstance(body, dict) and body.get("active") is True
        if self.cache_ttl > 0 and isinstance(jti, str):
            exp = claims.get("exp")
            until = now + self.cache_ttl
            if isinstance(exp, int | float):
                until = min(until, float(exp))
            if len(self._cache) > 10_000:  # bound memory: drop expired answers
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            self._cache[jti] = (until, active)
        return active
