"""Signing keys: generation, encryption at rest, the JWKS, and RFC 9068 access tokens.

Keys are read from the database into a `KeyRing`; signing never touches the database. A
`KeyReloader` re-reads them on a short timer and when a token names an unknown `kid`, so
`authbus keys rotate` takes effect on every running replica without a restart.

    ring = KeyRing.from_rows(rows, master_key=None)
    token = ring.sign_access_token({"iss": ..., "sub": ..., ...})
    ring.jwks()  # {"keys": [...public JWKs...]}
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, KeySet, OKPKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from authbus.token.models import SigningKeyRow, utcnow

Alg = Literal["ES256", "EdDSA"]
SUPPORTED_ALGS: tuple[Alg, ...] = ("ES256", "EdDSA")
_ENC_PREFIX = "enc:v1:"

log = logging.getLogger("authbus.token.keys")

AnyKey = ECKey | OKPKey


def generate_key(alg: Alg = "ES256") -> AnyKey:
    """A fresh private key for `alg`, with an RFC 7638 thumbprint as its kid."""
    if alg == "ES256":
        return ECKey.generate_key("P-256", auto_kid=True)
    if alg == "EdDSA":
        return OKPKey.generate_key("Ed25519", auto_kid=True)
    raise ValueError(f"unsupported signing algorithm {alg!r}")


def _aead(master_key: str) -> AESGCM:
    # The master key is an operator-chosen string; SHA-256 maps it onto a 256-bit AES key.
    return AESGCM(hashlib.sha256(master_key.encode()).digest())


def seal_private_jwk(jwk: Mapping[str, Any], master_key: str | None) -> str:
    """The JWK as stored: plain JSON, or AES-256-GCM ciphertext when a master key is set."""
    plain = json.dumps(dict(jwk), separators=(",", ":"))
    if not master_key:
        return plain
    nonce = os.urandom(12)
    sealed = _aead(master_key).encrypt(nonce, plain.encode(), b"authbus-signing-key")
    return _ENC_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()


def open_private_jwk(stored: str, master_key: str | None) -> dict[str, Any]:
    """The inverse of `seal_private_jwk`; raises ValueError without the right master key."""
    if not stored.startswith(_ENC_PREFIX):
        data: dict[str, Any] = json.loads(stored)
        return data
    if not master_key:
        raise ValueError("signing keys are encrypted but no master key is configured")
    raw = base64.urlsafe_b64decode(stored[len(_ENC_PREFIX) :])
    try:
        plain = _aead(master_key).decrypt(raw[:12], raw[12:], b"authbus-signing-key")
    except Exception as exc:  # cryptography raises InvalidTag
        raise ValueError("the master key does not decrypt the signing keys") from exc
    opened: dict[str, Any] = json.loads(plain)
    return opened


def _import(jwk: dict[str, Any]) -> AnyKey:
    if jwk.get("kty") == "EC":
        return ECKey.import_key(jwk)
    return OKPKey.import_key(jwk)


@dataclass(frozen=True)
class SigningKey:
    """One key of the ring."""

    kid: str
    alg: Alg
    key: AnyKey
    created_at: datetime
    retired_at: datetime | None = None
    not_after: datetime | None = None

    def public_jwk(self) -> dict[str, Any]:
        jwk = dict(self.key.as_dict(private=False))
        jwk.update({"kid": self.kid, "alg": self.alg, "use": "sig"})
        return jwk


class NoSigningKey(RuntimeError):
    """The database holds no active signing key (run the bootstrap)."""


class KeyRing:
    """The signing keys held in memory: one active key signs; retired ones only verify."""

    def __init__(self, keys: Sequence[SigningKey]) -> None:
        self.keys = list(keys)
        self._key_set: tuple[tuple[str, ...], KeySet] | None = None

    def replace(self, keys: Sequence[SigningKey]) -> None:
        """Swap in freshly loaded keys (in place: every holder of the ring sees them)."""
        self.keys = list(keys)
        self._key_set = None

    def knows(self, kid: str) -> bool:
        return any(k.kid == kid for k in self.keys)

    @classmethod
    def from_rows(cls, rows: Sequence[SigningKeyRow], master_key: str | None) -> KeyRing:
        keys = []
        for row in rows:
            jwk = open_private_jwk(row.private_jwk, master_key)
            alg: Alg = "EdDSA" if row.alg == "EdDSA" else "ES256"
            keys.append(
                SigningKey(
                    kid=row.kid,
                    alg=alg,
                    key=_import(jwk),
                    created_at=_aware(row.created_at),
                    retired_at=row.retired_at and _aware(row.retired_at),
                    not_after=row.not_after and _aware(row.not_after),
                )
            )
        return cls(keys)

    @property
    def active(self) -> SigningKey:
        live = [k for k in self.keys if k.retired_at is None]
        if not live:
            raise NoSigningKey("no active signing key; run `authbus bootstrap`")
        return max(live, key=lambda k: k.created_at)

    def published(self, now: datetime | None = None) -> list[SigningKey]:
        """Active keys plus retired keys whose tokens may still be alive."""
        now = now or utcnow()
        return [
            k for k in self.keys if k.retired_at is None or k.not_after is None or k.not_after > now
        ]

    def jwks(self) -> dict[str, Any]:
        """RFC 7517 §5 JWK Set of the published public keys."""
        return {"keys": [k.public_jwk() for k in self.published()]}

    def key_set(self) -> KeySet:
        """The public keys as a joserfc KeySet (for local token validation)."""
        jwks = self.jwks()
        kids = tuple(k["kid"] for k in jwks["keys"])
        if self._key_set is None or self._key_set[0] != kids:
            self._key_set = (kids, KeySet.import_key_set(jwks))  # type: ignore[arg-type]
        return self._key_set[1]

    def sign_access_token(self, claims: Mapping[str, Any]) -> str:
        """An RFC 9068 JWT access token signed with the active key.

        RFC 9068 §2.1: the header carries `typ: at+jwt`; `kid` selects the key in the JWKS.
        """
        key = self.active
        header = {"alg": key.alg, "typ": "at+jwt", "kid": key.kid}
        with warnings.catch_warnings():
            # joserfc flags "EdDSA" as superseded by RFC 9864's "Ed25519"; peers still expect
            # "EdDSA" (RFC 8037), so we keep it.
            warnings.simplefilter("ignore", SecurityWarning)
            return jwt.encode(header, dict(claims), key.key, algorithms=[key.alg])


def _aware(dt: datetime) -> datetime:
    # SQLite returns naive datetimes even for timezone=True columns; they are UTC.
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


async def load_key_ring(
    sessionmaker: async_sessionmaker[AsyncSession], master_key: str | None
) -> KeyRing:
    """All keys from the database (at startup; `KeyReloader` keeps the ring fresh)."""
    async with sessionmaker() as session:
        rows = (await session.scalars(select(SigningKeyRow))).all()
    return KeyRing.from_rows(rows, master_key)


class KeyReloader:
    """Keeps a running replica's `KeyRing` in step with the database.

    Reloads every `interval_s` seconds (`run()`, a background task) and on demand when a
    token names a `kid` the ring does not know (`reload_for_kid`, at most once per
    `min_gap_s`, so forged kids cannot hammer the database). A failed reload (database
    down, wrong master key) keeps the keys held so far.

        reloader = KeyReloader(ring, sessionmaker, master_key, interval_s=15)
        task = asyncio.create_task(reloader.run())
    """

    def __init__(
        self,
        ring: KeyRing,
        sessionmaker: async_sessionmaker[AsyncSession],
        master_key: str | None,
        *,
        interval_s: float = 15.0,
        min_gap_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ring = ring
        self.sessionmaker = sessionmaker
        self.master_key = master_key
        self.interval_s = interval_s
        self.min_gap_s = min_gap_s
        self.clock = clock
        self._last = float("-inf")
        self._lock = asyncio.Lock()

    async def reload(self) -> bool:
        """Re-read the keys; True when the set of kids or their states changed."""
        async with self._lock:
            self._last = self.clock()
            fresh = await load_key_ring(self.sessionmaker, self.master_key)
            if not fresh.keys:
                return False  # an empty table is a misconfiguration, not a rotation
            before = _fingerprint(self.ring.keys)
            self.ring.replace(fresh.keys)
            changed = _fingerprint(fresh.keys) != before
        if changed:
            log.info("signing keys reloaded", extra={"active_kid": self.ring.active.kid})
        return changed

    async def reload_for_kid(self, kid: str) -> bool:
        """Reload if `kid` is unknown and the last reload is `min_gap_s` old; True when
        the ring knows `kid` afterwards."""
        if self.ring.knows(kid):
            return True
        if self.clock() - self._last < self.min_gap_s:
            return False
        try:
            await self.reload()
        except Exception as exc:  # the database may be down; the caller answers "unknown"
            log.warning("signing key reload failed", extra={"error": repr(exc)})
            return False
        return self.ring.knows(kid)

    async def run(self) -> None:
        """Reload every `interval_s` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.reload()
            except Exception as exc:
                log.warning("signing key reload failed", extra={"error": repr(exc)})


def _fingerprint(keys: Sequence[SigningKey]) -> set[tuple[str, object, object]]:
    return {(k.kid, k.retired_at, k.not_after) for k in keys}


async def ensure_signing_key(
    sessionmaker: async_sessionmaker[AsyncSession], alg: Alg, master_key: str | None
) -> str | None:
    """Create a signing key if none is active; returns the new kid, or None if one existed."""
    async with sessionmaker() as session, session.begin():
        active = await session.scalar(
            select(SigningKeyRow).where(SigningKeyRow.retired_at.is_(None)).limit(1)
        )
        if active is not None:
            return None
        return _add_key(session, alg, master_key)


def _add_key(session: AsyncSession, alg: Alg, master_key: str | None) -> str:
    key = generate_key(alg)
    kid = str(key.kid)
    session.add(
        SigningKeyRow(
            kid=kid,
            alg=alg,
            private_jwk=seal_private_jwk(key.as_dict(private=True), master_key),
            created_at=utcnow(),
        )
    )
    return kid


async def rotate_signing_key(
    sessionmaker: async_sessionmaker[AsyncSession],
    alg: Alg,
    master_key: str | None,
    max_token_ttl_s: int,
    *,
    reload_interval_s: float = 15.0,
) -> str:
    """Retire the active key(s) and create a new one; returns the new kid.

    Retired keys stay in the JWKS until `not_after` = now + the longest access-token
    lifetime + a margin, by when every token they signed has expired. Running replicas pick
    up the new key within their `KeyReloader` interval (`reload_interval_s`); until then they
    still sign with the retired key, so the margin is that interval plus 60 s.
    """
    margin_s = 60 + math.ceil(reload_interval_s)
    now = utcnow()
    async with sessionmaker() as session, session.begin():
        for row in (
            await session.scalars(select(SigningKeyRow).where(SigningKeyRow.retired_at.is_(None)))
        ).all():
            row.retired_at = now
            row.not_after = now + timedelta(seconds=max_token_ttl_s + margin_s)
        return _add_key(session, alg, master_key)


async def reseal_signing_keys(
    sessionmaker: async_sessionmaker[AsyncSession],
    old_master_key: str | None,
    new_master_key: str | None,
) -> int:
    """Re-encrypt every stored private key under a new master key (or decrypt with None)."""
    async with sessionmaker() as session, session.begin():
        rows = (await session.scalars(select(SigningKeyRow))).all()
        for row in rows:
            row.private_jwk = seal_private_jwk(
                open_private_jwk(row.private_jwk, old_master_key), new_master_key
            )
        return len(rows)
