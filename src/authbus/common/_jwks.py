"""A cached JSON Web Key Set fetched from the token service's `jwks_uri`.

Keys are looked up by `kid`. An unknown `kid` (the issuer rotated its key) triggers a
refetch, at most once per `min_refetch_interval` so a stream of forged `kid`s cannot make
us hammer the issuer; after a failed fetch we wait as long before trying again. A fetch
failure is reported as `TokenCheckUnavailable` (503), never as an invalid token: the
caller's token may be fine, we just cannot tell.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet

from authbus.common._errors import InvalidTokenError, TokenCheckUnavailable
from authbus.common._transport import async_client

Clock = Callable[[], float]


class JWKSCache:
    """Keys of one issuer, fetched over HTTP and kept for `max_age` seconds.

    Example:
        cache = JWKSCache("https://token.example/.well-known/jwks.json")
        key = await cache.get_key("2024-key-1")
    """

    def __init__(
        self,
        url: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_age: float = 300.0,
        min_refetch_interval: float = 10.0,
        timeout: float = 5.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.url = url
        self._transport = transport
        self._max_age = max_age
        self._min_refetch_interval = min_refetch_interval
        self._timeout = timeout
        self._clock = clock
        self._keys: KeySet | None = None
        self._fetched_at: float | None = None  # last successful fetch
        self._failed_at: float | None = None  # last failed fetch, cleared on success
        self._kid_refetch_at: float | None = None  # last refetch caused by an unknown kid
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        #: number of HTTP fetches made (for tests and metrics)
        self.fetches = 0

    def _get_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock = asyncio.Lock()
            self._lock_loop = loop
        return self._lock

    def _find(self, kid: str | None) -> Key | None:
        if self._keys is None:
            return None
        if kid is None:
            # RFC 7515 §4.1.4: kid is optional; without it only a one-key set is unambiguous.
            keys = list(self._keys)
            return keys[0] if len(keys) == 1 else None
        for key in self._keys:
            if key.kid == kid:
                return key
        return None

    def _stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= self._max_age

    def _recent(self, at: float | None) -> bool:
        return at is not None and self._clock() - at < self._min_refetch_interval

    async def get_key(self, kid: str | None) -> Key:
        """The key with this `kid`; raises `InvalidTokenError` when the issuer has none."""
        key = self._find(kid)
        if key is not None and not self._stale():
            return key
        async with self._get_lock():
            key = self._find(kid)  # another task may have refetched meanwhile
            if key is not None and not self._stale():
                return key
            if self._recent(self._failed_at):
                # the issuer just failed us: do not hammer it, keep serving what we have
                if key is not None:
                    return key
                raise TokenCheckUnavailable("the token issuer's keys are unavailable")
            if key is None and self._keys is not None:
                # an unknown kid: maybe a rotation, maybe a forgery; refetch, but rarely
                if self._recent(self._kid_refetch_at):
                    raise InvalidTokenError("the token is signed with an unknown key")
                self._kid_refetch_at = self._clock()
            try:
                await self._fetch()
            except TokenCheckUnavailable:
                self._failed_at = self._clock()
                if key is not None:
                    return key  # the old key set still knows this kid
                raise
            self._failed_at = None
            key = self._find(kid)
            if key is None:
                raise InvalidTokenError("the token is signed with an unknown key")
            return key

    async def _fetch(self) -> None:
        self.fetches += 1
        try:
            async with async_client(self._transport, self._timeout) as c:
                response = await c.get(self.url, headers={"Accept": "application/json"})
            response.raise_for_status()
            keys = KeySet.import_key_set(response.json())
        except (httpx.HTTPError, ValueError, KeyError, TypeError, JoseError) as exc:
            raise TokenCheckUnavailable(
                f"the token issuer's keys could not be fetched ({type(exc).__name__})"
            ) from exc
        self._keys = keys
        self._fetched_at = self._clock()
