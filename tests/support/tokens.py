"""Mint access tokens for tests, signed with a throwaway ES256 key.

    minter = TokenMinter()
    app.state.token_validator = minter.validator()
    token = minter.mint("user-1", ["orders:read"])
    client.get("/v1/orders", headers={"Authorization": f"Bearer {token}"})

`mint()` also forges tokens for attack tests (`headers={"alg": ...}`, `key=`), and
`forge_unsigned()` / `forge_hs256_with_public_key()` build the classic algorithm attacks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, Key, KeySet, import_key

from authbus.common import TokenValidator

DEFAULT_ISSUER = "http://token.test"
DEFAULT_AUDIENCE = "authbus"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(obj: Mapping[str, Any]) -> str:
    return _b64(json.dumps(obj, separators=(",", ":")).encode())


class TokenMinter:
    """An issuer in a box: an ES256 key (kid `test-key-1`), its JWKS and a validator."""

    def __init__(
        self,
        issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
        *,
        kid: str = "test-key-1",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.clock = clock
        self.key: Key = ECKey.generate_key("P-256", parameters={"kid": kid, "use": "sig"})
        self.kid = kid
        self.keys: list[Key] = [self.key]

    def rotate(self, kid: str) -> Key:
        """Add a new signing key (the old one stays in the JWKS) and sign with it."""
        self.key = ECKey.generate_key("P-256", parameters={"kid": kid, "use": "sig"})
        self.kid = kid
        self.keys.append(self.key)
        return self.key

    def key_set(self) -> KeySet:
        """The public keys as a joserfc KeySet."""
        return KeySet([import_key(k.as_dict(private=False)) for k in self.keys])

    def jwks(self) -> dict[str, Any]:
        """The public JWKS document (what `/.well-known/jwks.json` serves)."""
        return {"keys": [k.as_dict(private=False) for k in self.keys]}

    def claims(
        self,
        sub: str = "user-1",
        scopes: Iterable[str] = (),
        *,
        client_id: str = "test-client",
        ttl: int = 300,
        aud: str | list[str] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """The RFC 9068 claims `mint()` signs; `extra` adds or overrides claims
        (`None` removes one: `claims(jti=None)`)."""
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": aud if aud is not None else self.audience,
            "exp": now + ttl,
            "iat": now,
            "nbf": now,
            "jti": uuid.uuid4().hex,
            "client_id": client_id,
            "scope": " ".join(scopes),
        }
        claims.update(extra)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(
        self,
        sub: str = "user-1",
        scopes: Iterable[str] = (),
        *,
        client_id: str = "test-client",
        ttl: int = 300,
        aud: str | list[str] | None = None,
        headers: Mapping[str, Any] | None = None,
        key: Key | None = None,
        **extra: Any,
    ) -> str:
        """A signed access token; `headers` overrides the JOSE header (typ, kid, alg)."""
        header: dict[str, Any] = {"alg": "ES256", "typ": "at+jwt", "kid": self.kid}
        header.update(headers or {})
        header = {k: v for k, v in header.items() if v is not None}
        claims = self.claims(sub, scopes, client_id=client_id, ttl=ttl, aud=aud, **extra)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SecurityWarning)  # EdDSA, deprecated by RFC 9864
            return jwt.encode(header, claims, key or self.key, algorithms=[header["alg"]])

    def forge_unsigned(self, sub: str = "user-1", scopes: Iterable[str] = (), **kw: Any) -> str:
        """An `alg: none` token (RFC 7519 §6): must always be rejected."""
        header = {"alg": "none", "typ": "at+jwt", "kid": self.kid}
        return f"{_segment(header)}.{_segment(self.claims(sub, scopes, **kw))}."

    def forge_hs256_with_public_key(
        self, sub: str = "user-1", scopes: Iterable[str] = (), **kw: Any
    ) -> str:
        """HS256 keyed with the public key's JSON: the key-confusion attack."""
        header = {"alg": "HS256", "typ": "at+jwt", "kid": self.kid}
        signing_input = f"{_segment(header)}.{_segment(self.claims(sub, scopes, **kw))}"
        secret = json.dumps(self.key.as_dict(private=False), sort_keys=True).encode()
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(mac)}"

    def validator(self, **kw: Any) -> TokenValidator:
        """A `TokenValidator` trusting this minter's keys (`key_set=`), same clock."""
        kw.setdefault("issuer", self.issuer)
        kw.setdefault("audiences", [self.audience])
        kw.setdefault("clock", self.clock)
        if "jwks_url" not in kw:
            kw.setdefault("key_set", self.key_set)
        return TokenValidator(**kw)


class FakeClock:
    """A clock tests move by hand: `clock()` -> seconds, `clock.advance(30)`."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
