"""Bearer access token validation (RFC 9068 JWT profile), free of any web framework.

`authbus.common.security.requires()` wraps this for FastAPI; other frameworks can call
`TokenValidator.validate()` directly.
"""

from __future__ import annotations

import base64
import inspect
import json
import time
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from joserfc import jwt
from joserfc.errors import (
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
    SecurityWarning,
)
from joserfc.jwk import Key, KeySet

from authbus.common._errors import InvalidTokenError
from authbus.common._jwks import JWKSCache
from authbus.common._login import BrowserLogin

#: RFC 9068 §2.1 "at+jwt"; plain "JWT" is accepted for issuers that do not set it.
DEFAULT_TOKEN_TYPES = ("at+jwt", "application/at+jwt", "jwt")
DEFAULT_ALGORITHMS = ("ES256", "EdDSA", "Ed25519")
#: refuse absurdly large tokens before parsing them
MAX_TOKEN_LENGTH = 16 * 1024

KeySetProvider = Callable[[], "KeySet | Awaitable[KeySet]"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the checked claims of its access token.

    `subject` is the JWT `sub` (a user id, or the client id for client-credentials tokens),
    `client_id` the OAuth client that obtained the token, `scopes` its granted scopes.

    Example:
        >>> c = Caller("u1", "web", frozenset({"orders:read"}), {"sub": "u1"}, "eyJ...")
        >>> c.has_scopes("orders:read"), c.has_scopes("orders:write")
        (True, False)
    """

    subject: str
    client_id: str | None
    scopes: frozenset[str]
    claims: dict[str, Any] = field(repr=False)
    token: str = field(repr=False)

    def has_scopes(self, *scopes: str) -> bool:
        """True when every one of `scopes` was granted to this token."""
        return set(scopes) <= self.scopes


class RevocationCheck(Protocol):
    """Tells whether a signature-checked token is still active (not revoked).

    Raise `TokenCheckUnavailable` when the answer cannot be obtained.

    Example:
        class AllowAll:
            async def is_active(self, token: str, claims: Mapping[str, Any]) -> bool:
                return True
    """

    async def is_active(self, token: str, claims: Mapping[str, Any]) -> bool:
        """True when the token has not been revoked."""
        ...


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _unverified_header(token: str) -> dict[str, Any]:
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidTokenError("the token is too large")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidTokenError("the token is not a signed JWT")
    try:
        header = json.loads(_b64decode(parts[0]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidTokenError("the token header is malformed") from exc
    if not isinstance(header, dict):
        raise InvalidTokenError("the token header is malformed")
    return header


def _scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    scope = claims.get("scope", "")
    if isinstance(scope, str):
        return frozenset(scope.split())
    if isinstance(scope, list) and all(isinstance(s, str) for s in scope):
        return frozenset(scope)
    raise InvalidTokenError("the token's scope claim is malformed")


class TokenValidator:
    """Checks RFC 9068 JWT access tokens: signature, algorithm, type, issuer, audience, times.

    Give it either `jwks_url` (keys fetched over HTTP, cached, refetched at most once per
    `jwks_refetch_interval` seconds on an unknown `kid`) or `key_set` (a callable returning
    a local joserfc `KeySet`, sync or async). Only `algorithms` are accepted: never `none`,
    never an HMAC algorithm keyed with a public key. `revocation` adds an "is it still
    active" check (`RedisRevocationCheck` or `IntrospectionRevocationCheck`).

    Example:
        validator = TokenValidator(
            issuer="http://127.0.0.1:8082",
            audiences=["authbus"],
            jwks_url="http://127.0.0.1:8082/.well-known/jwks.json",
        )
        caller = await validator.validate(token)   # or raises InvalidTokenError
        app.state.token_validator = validator      # what requires() looks up
    """

    def __init__(
        self,
        *,
        issuer: str,
        audiences: Iterable[str] = ("authbus",),
        jwks_url: str | None = None,
        key_set: KeySetProvider | None = None,
        algorithms: Iterable[str] = DEFAULT_ALGORITHMS,
        token_types: Iterable[str] = DEFAULT_TOKEN_TYPES,
        leeway: float = 30.0,
        revocation: RevocationCheck | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        jwks_max_age: float = 300.0,
        jwks_refetch_interval: float = 10.0,
        clock: Callable[[], float] = time.time,
        browser_login: BrowserLogin | None = None,
    ) -> None:
        if (jwks_url is None) == (key_set is None):
            raise ValueError("give exactly one of jwks_url and key_set")
        self.issuer = issuer
        self.audiences = tuple(audiences)
        if not self.audiences:
            raise ValueError("at least one accepted audience is required")
        self.algorithms = tuple(algorithms)
        unsafe = [a for a in self.algorithms if a.lower() == "none" or a.upper().startswith("HS")]
        if unsafe:
            # Symmetric algorithms would let anyone holding the public JWKS forge tokens.
            raise ValueError(f"algorithms not allowed for access tokens: {unsafe}")
        self.token_types = tuple(t.lower() for t in token_types)
        self.leeway = leeway
        self.revocation = revocation
        self.clock = clock
        #: optional `BrowserLogin`: redirect browsers without a token to sign in
        self.browser_login = browser_login
        self._key_set = key_set
        self.jwks: JWKSCache | None = None
        if jwks_url is not None:
            self.jwks = JWKSCache(
                jwks_url,
                transport=transport,
                max_age=jwks_max_age,
                min_refetch_interval=jwks_refetch_interval,
                clock=clock,
            )

    async def aclose(self) -> None:
        """Release the revocation check's connections (call from the app's shutdown).

        Example:
            stack.push_async_callback(validator.aclose)
        """
        close = getattr(self.revocation, "aclose", None)
        if close is not None:  # RedisRevocationCheck borrows its client: nothing to close
            await close()

    async def _key_for(self, kid: str | None) -> Key:
        if self.jwks is not None:
            return await self.jwks.get_key(kid)
        assert self._key_set is not None
        result = self._key_set()
        keys: KeySet = await result if inspect.isawaitable(result) else result
        matching = [k for k in keys if k.kid == kid] if kid is not None else list(keys)
        if len(matching) != 1:
            raise InvalidTokenError("the token is signed with an unknown key")
        return matching[0]

    async def validate(self, token: str) -> Caller:
        """The `Caller` of a valid token; raises `InvalidTokenError` (401) or
        `TokenCheckUnavailable` (503, the keys or the revocation store are unreachable)."""
        header = _unverified_header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise InvalidTokenError("the token's signing algorithm is not accepted")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in self.token_types:
            raise InvalidTokenError("the token is not an access token (typ at+jwt)")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidTokenError("the token header is malformed")
        key = await self._key_for(kid)
        # RFC 8725 §3.1: a key published for another algorithm or for encryption
        # must not verify this token.
        if key.get("use") not in (None, "sig") or key.alg not in (None, alg):
            raise InvalidTokenError("the token's key does not match its algorithm")
        claims = self._decode(token, key, alg)
        self._check_claims(claims)
        if self.revocation is not None and not await self.revocation.is_active(token, claims):
            raise InvalidTokenError("the token has been revoked")
        sub = claims["sub"]
        client_id = claims.get("client_id")
        return Caller(
            subject=sub,
            client_id=client_id if isinstance(client_id, str) else None,
            scopes=_scopes_of(claims),
            claims=claims,
            token=token,
        )

    def _decode(self, token: str, key: Key, alg: str) -> dict[str, Any]:
        try:
            with warnings.catch_warnings():
                # joserfc flags "EdDSA" as superseded by RFC 9864; we accept it on purpose.
                warnings.simplefilter("ignore", SecurityWarning)
                decoded = jwt.decode(token, key, algorithms=[alg])
        except JoseError as exc:
            raise InvalidTokenError("the token signature is invalid") from exc
        except ValueError as exc:  # malformed base64/JSON inside joserfc
            raise InvalidTokenError("the token is malformed") from exc
        return dict(decoded.claims)

    def _check_claims(self, claims: dict[str, Any]) -> None:
        registry = jwt.JWTClaimsRegistry(
            now=int(self.clock()),
            leeway=int(self.leeway),
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "values": list(self.audiences)},
            sub={"essential": True},
            exp={"essential": True},
            jti={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError as exc:
            raise InvalidTokenError("the token has expired") from exc
        except MissingClaimError as exc:
            raise InvalidTokenError(f"the token lacks the claim(s) {exc.claim}") from exc
        except InvalidClaimError as exc:
            what = {
                "iss": "the token was issued by an issuer that is not trusted",
                "aud": "the token is not meant for this audience",
                "nbf": "the token is not valid yet",
                "iat": "the token was issued in the future",
            }.get(exc.claim, f"the token's {exc.claim} claim is invalid")
            raise InvalidTokenError(what) from exc
        except JoseError as exc:
            raise InvalidTokenError("the token's claims are invalid") from exc
        if "client_id" in claims and not isinstance(claims["client_id"], str):
            raise InvalidTokenError("the token's client_id claim is invalid")
