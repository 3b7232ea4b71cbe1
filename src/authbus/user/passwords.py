"""Password hashing: argon2id for new hashes, bcrypt accepted and upgraded on login.

The work runs in a worker thread (`asyncio.to_thread`) so a login never stalls the event loop.

    hasher = PasswordHasher.from_settings(settings.user)
    stored = await hasher.hash("correct horse battery staple")
    ok, new_hash = await hasher.verify("correct horse battery staple", stored)
    # new_hash is set when `stored` used older parameters or bcrypt: store it.
"""

from __future__ import annotations

import asyncio
import secrets

from pwdlib import PasswordHash
from pwdlib.exceptions import UnknownHashError
from pwdlib.hashers.argon2 import Argon2Hasher
from pwdlib.hashers.bcrypt import BcryptHasher

from authbus.core.settings import UserSettings

# bcrypt only ever looked at the first 72 bytes; bcrypt>=5 raises instead of truncating.
_BCRYPT_MAX_BYTES = 72


class _LegacyBcryptHasher(BcryptHasher):
    """bcrypt verification with the historical 72-byte truncation (hashes made elsewhere)."""

    def verify(self, password: str | bytes, hash: str | bytes) -> bool:
        """bcrypt check of at most the first 72 bytes."""
        raw = password.encode() if isinstance(password, str) else password
        return super().verify(raw[:_BCRYPT_MAX_BYTES], hash)


class PasswordHasher:
    """Hashes and verifies passwords off the event loop."""

    def __init__(self, *, memory_kib: int, time_cost: int, parallelism: int) -> None:
        self._argon2 = Argon2Hasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        # The first hasher makes new hashes; the others are only recognised (and upgraded).
        self._hash = PasswordHash((self._argon2, _LegacyBcryptHasher()))
        self._dummy_hash: str | None = None

    @classmethod
    def from_settings(cls, settings: UserSettings) -> PasswordHasher:
        """A hasher with the argon2 parameters of `settings`."""
        return cls(
            memory_kib=settings.argon2_memory_kib,
            time_cost=settings.argon2_time_cost,
            parallelism=settings.argon2_parallelism,
        )

    def hash_sync(self, password: str) -> str:
        """Hash in the calling thread (for scripts and the dummy hash)."""
        return self._hash.hash(password)

    async def hash(self, password: str) -> str:
        """An argon2id hash of `password` with the configured parameters."""
        return await asyncio.to_thread(self._hash.hash, password)

    def _verify_sync(self, password: str, stored: str) -> tuple[bool, str | None]:
        try:
            return self._hash.verify_and_update(password, stored)
        except UnknownHashError:
            # A hash no hasher recognises (corrupt row, foreign format) never matches.
            return False, None

    async def verify(self, password: str, stored: str) -> tuple[bool, str | None]:
        """(matches, new_hash): new_hash is set when `stored` should be replaced."""
        return await asyncio.to_thread(self._verify_sync, password, stored)

    async def verify_dummy(self, password: str) -> None:
        """Spend the time of one verification, for a username that does not exist.

        Unknown usernames and wrong passwords must take the same time, or the response time
        tells an attacker which usernames exist.
        """
        if self._dummy_hash is None:
            # Made lazily with the current parameters, so its cost matches real hashes.
            self._dummy_hash = await self.hash(secrets.token_urlsafe(24))
        # The very call a real check makes (verify_and_update), for the same work.
        await asyncio.to_thread(self._verify_sync, password, self._dummy_hash)

    async def warm_up(self) -> None:
        """Compute the dummy hash now (at startup) rather than on the first unknown user."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(24))
