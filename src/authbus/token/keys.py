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

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, KeySet, OKPKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from authbus.token.models import SigningKeyRow, utcnow

Alg = Literal["ES256", "EdDSA"]
SUPPORTED_ALGS: tuple[Alg, ...] = ("ES256", "EdDSA")
# How a stored private key is sealed, by prefix. v2 (what is written): AES-256-GCM under
# HKDF-SHA256(master key bytes, random salt, context label). v1 (still read, never written):
# AES-256-GCM under SHA-256(master key string), from before the master key was validated.
_ENC = "enc:"
_ENC_V1 = "enc:v1:"
_ENC_V2 = "enc:v2:"
_AAD = b"authbus-signing-key"
_HKDF_INFO = b"authbus signing key encryption v2"
_SALT_BYTES = 16
MASTER_KEY_MIN_BYTES = 32
MASTER_KEY_HELP = (
    "AUTHBUS_TOKEN__MASTER_KEY must be at least 32 random bytes in base64, e.g. the output "
    "of `openssl rand -base64 32` or "
    "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
)

log = logging.getLogger("authbus.token.keys")

AnyKey = ECKey | OKPKey


def generate_key(alg: Alg = "ES256") -> AnyKey:
    """A fresh private key for `alg`, with an RFC 7638 thumbprint as its kid."""
    if alg == "ES256":
        return ECKey.generate_key("P-256", auto_kid=True)
    if alg == "EdDSA":
        return OKPKey.generate_key("Ed25519", auto_kid=True)
    raise ValueError(f"unsupported signing algorithm {alg!r}")


class MasterKeyError(ValueError):
    """The master key is missing, malformed, or does not open the stored signing keys."""


def parse_master_key(value: str) -> bytes:
    """The key bytes of a master key given in base64 (standard or URL-safe alphabet,
    padding optional); raises `MasterKeyError` unless it holds at least 32 bytes.

    The key is used as HKDF input keying material without stretching, so it must carry
    its own entropy: random bytes, not a passphrase.

        parse_master_key(secrets.token_urlsafe(32))   # 32 bytes
    """
    text = value.strip().replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError:  # binascii.Error
        raise MasterKeyError(f"the master key is not base64; {MASTER_KEY_HELP}") from None
    if len(raw) < MASTER_KEY_MIN_BYTES:
        raise MasterKeyError(
            f"the master key holds {len(raw)} bytes, fewer than {MASTER_KEY_MIN_BYTES}; "
            f"{MASTER_KEY_HELP}"
        )
    return raw


def _aead_v2(master_key: str, salt: bytes) -> AESGCM:
    # HKDF (RFC 5869) is the right KDF for a high-entropy key: the salt makes every sealed
    # key use its own AES key, the label binds it to this one purpose.
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_HKDF_INFO)
    return AESGCM(hkdf.derive(parse_master_key(master_key)))


def _aead_v1(master_key: str) -> AESGCM:
    # Legacy format (read only): one unsalted SHA-256 of the master key string.
    return AESGCM(hashlib.sha256(master_key.encode()).digest())


def is_sealed(stored: str) -> bool:
    """Whether a stored private key is encrypted under a master key."""
    return stored.startswith(_ENC)


def seal_private_jwk(jwk: Mapping[str, Any], master_key: str | None) -> str:
    """The JWK as stored: plain JSON, or (with a master key) `enc:v2:` + base64url of
    salt, nonce and AES-256-GCM ciphertext. Raises `MasterKeyError` for a malformed key."""
    plain = json.dumps(dict(jwk), separators=(",", ":"))
    if not master_key:
        return plain
    salt, nonce = os.urandom(_SALT_BYTES), os.urandom(12)
    sealed = _aead_v2(master_key, salt).encrypt(nonce, plain.encode(), _AAD)
    return _ENC_V2 + base64.urlsafe_b64encode(salt + nonce + sealed).decode()


def open_private_jwk(stored: str, master_key: str | None) -> dict[str, Any]:
    """The inverse of `seal_private_jwk` (and reads the legacy `enc:v1:` format); raises
    `MasterKeyError` without the right master key."""
    if not is_sealed(stored):
        data: dict[str, Any] = json.loads(stored)
        return data
    if not master_key:
        raise MasterKeyError(
            "the signing keys are encrypted at rest but no master key is configured: set "
            "AUTHBUS_TOKEN__MASTER_KEY to the key they were sealed with"
        )
    try:
        if stored.startswith(_ENC_V2):
            raw = base64.urlsafe_b64decode(stored[len(_ENC_V2) :])
            salt, nonce, sealed = raw[:_SALT_BYTES], raw[_SALT_BYTES : _SALT_BYTES + 12], raw[28:]
            plain = _aead_v2(master_key, salt).decrypt(nonce, sealed, _AAD)
        elif stored.startswith(_ENC_V1):
            raw = base64.urlsafe_b64decode(stored[len(_ENC_V1) :])
            plain = _aead_v1(master_key).decrypt(raw[:12], raw[12:], _AAD)
        else:
            raise MasterKeyError(f"unknown sealing format {stored[:7]!r}")
    except InvalidTag:
        raise MasterKeyError("the master key does not decrypt the signing keys") from None
    except ValueError as exc:  # malformed base64 or master key
        if isinstance(exc, MasterKeyError):
            raise
        raise MasterKeyError("a stored signing key is corrupt") from None
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


async def count_plain_keys(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """How many stored private keys are not encrypted."""
    async with sessionmaker() as session:
        rows = (await session.scalars(select(SigningKeyRow.private_jwk))).all()
    return sum(not is_sealed(r) for r in rows)


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


def check_master_key(rows: Sequence[SigningKeyRow], master_key: str | None) -> None:
    """Refuse (`MasterKeyError`) a master key that is malformed, missing while some stored
    key is encrypted, or unable to open every encrypted key: a key sealed under it would
    then sit beside keys no single master key opens, or be written in plain text."""
    if master_key is not None:
        parse_master_key(master_key)
    for row in rows:
        if is_sealed(row.private_jwk):
            open_private_jwk(row.private_jwk, master_key)


async def ensure_signing_key(
    sessionmaker: async_sessionmaker[AsyncSession], alg: Alg, master_key: str | None
) -> str | None:
    """Create a signing key if none is active; returns the new kid, or None if one existed.

    Raises `MasterKeyError` when the master key is malformed (even if no key is created).
    """
    if master_key is not None:
        parse_master_key(master_key)
    async with sessionmaker() as session, session.begin():
        active = await session.scalar(
            select(SigningKeyRow).where(SigningKeyRow.retired_at.is_(None)).limit(1)
        )
        if active is not None:
            return None
        check_master_key((await session.scalars(select(SigningKeyRow))).all(), master_key)
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
        rows = (await session.scalars(select(SigningKeyRow))).all()
        # Before any change: an encrypted ring without (or with another) master key would
        # get a new key in plain text (or one no other key's master key opens).
        check_master_key(rows, master_key)
        for row in rows:
            if row.retired_at is None:
                row.retired_at = now
                row.not_after = now + timedelta(seconds=max_token_ttl_s + margin_s)
        return _add_key(session, alg, master_key)


async def reseal_signing_keys(
    sessionmaker: async_sessionmaker[AsyncSession],
    old_master_key: str | None,
    new_master_key: str | None,
) -> int:
    """Re-encrypt every stored private key under a new master key (or decrypt with None).

    `old_master_key` may be a legacy (pre-validation) master key for `enc:v1:` rows; the
    new one must be valid (`parse_master_key`). Raises `MasterKeyError`; nothing changes.
    """
    if new_master_key is not None:
        parse_master_key(new_master_key)
    async with sessionmaker() as session, session.begin():
        rows = (await session.scalars(select(SigningKeyRow))).all()
        for row in rows:
            row.private_jwk = seal_private_jwk(
                open_private_jwk(row.private_jwk, old_master_key), new_master_key
            )
        return len(rows)
