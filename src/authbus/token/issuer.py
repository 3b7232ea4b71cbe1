"""Issuing, introspecting and revoking tokens.

Access tokens are RFC 9068 JWTs whose jti is recorded in the token store with the token's
lifetime as TTL, so revocation acts at once. Refresh tokens are opaque `<family>.<secret>`
strings stored as SHA-256 digests; the family id groups every token of one grant so reuse
of a rotated token can revoke them all (RFC 9700 §4.14.2).

    issuer = TokenIssuer(config, store, key_ring)
    grant = await issuer.issue(client, subject="user-id", scopes=("orders:read",), refresh=True)
    grant.response()  # {"access_token": ..., "token_type": "Bearer", ...}
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc import jwt
from joserfc.errors import JoseError, SecurityWarning

from authbus.token.clients import Client, hash_secret
from authbus.token.errors import InvalidGrant, InvalidScope, InvalidTarget
from authbus.token.keys import SUPPORTED_ALGS, KeyRing
from authbus.token.store import Rotation, TokenStore

# Clock skew tolerated between replicas on `nbf` (the services' validators allow as much).
NBF_LEEWAY_S = 30


@dataclass(frozen=True)
class IssuerConfig:
    """Lifetimes and names the issuer uses (built from `Settings`)."""

    issuer: str
    access_token_ttl_s: int = 900
    refresh_token_ttl_s: int = 30 * 24 * 3600
    refresh_reuse_grace_s: int = 10
    code_ttl_s: int = 60
    default_audience: str = "authbus"
    # Values a request may name as RFC 8707 `resource` (besides a client's own audience).
    audiences: tuple[str, ...] = ("authbus",)


@dataclass(frozen=True)
class IssuedGrant:
    """The tokens issued for one token request."""

    access_token: str
    jti: str
    expires_in: int
    scopes: tuple[str, ...]
    refresh_token: str | None = None
    family: str | None = None

    def response(self) -> dict[str, Any]:
        """RFC 6749 §5.1 successful response body."""
        body: dict[str, Any] = {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": " ".join(self.scopes),
        }
        if self.refresh_token is not None:
            body["refresh_token"] = self.refresh_token
        return body


@dataclass(frozen=True)
class RefreshTokenRef:
    """A refresh token split into its family id and its digest (the token itself is kept,
    unprinted, only to seal its successor: see `seal_successor`)."""

    family: str
    digest: str
    token: str = field(default="", repr=False, compare=False)


def parse_refresh_token(token: str) -> RefreshTokenRef | None:
    """The family and digest of a presented refresh token, or None when malformed."""
    family, sep, secret = token.partition(".")
    if not sep or not family or not secret or "." in secret or len(token) > 200:
        return None
    return RefreshTokenRef(family, hash_secret(token), token)


def new_refresh_token(family: str | None = None) -> tuple[str, RefreshTokenRef]:
    family = family or secrets.token_urlsafe(12)
    token = f"{family}.{secrets.token_urlsafe(32)}"
    return token, RefreshTokenRef(family, hash_secret(token), token)


def _successor_key(presented: str) -> AESGCM:
    return AESGCM(hashlib.sha256(b"authbus-refresh-successor\x00" + presented.encode()).digest())


def seal_successor(successor: str, presented: str) -> str:
    """The new refresh token encrypted under the one it replaces (AES-256-GCM).

    Kept with the rotation so a retry within the grace period gets the same new token back,
    while the store holds nothing usable without the old token (which only its holder has).
    """
    nonce = os.urandom(12)
    sealed = _successor_key(presented).encrypt(nonce, successor.encode(), b"refresh")
    return base64.urlsafe_b64encode(nonce + sealed).decode()


def open_successor(sealed: str, presented: str) -> str | None:
    """The inverse of `seal_successor`, or None when it does not open."""
    try:
        raw = base64.urlsafe_b64decode(sealed)
        return _successor_key(presented).decrypt(raw[:12], raw[12:], b"refresh").decode()
    except (ValueError, InvalidTag):
        return None


@dataclass
class TokenIssuer:
    """Makes and tracks tokens; shared by every grant."""

    config: IssuerConfig
    store: TokenStore
    keys: KeyRing
    clock: Callable[[], float] = field(default=time.time)
    # Called with a token's kid when the ring does not know it (another replica may have
    # rotated the key already); True when the ring knows it afterwards.
    on_unknown_kid: Callable[[str], Awaitable[bool]] | None = None

    def access_ttl(self, client: Client) -> int:
        return client.access_token_ttl_s or self.config.access_token_ttl_s

    def refresh_ttl(self, client: Client) -> int:
        return client.refresh_token_ttl_s or self.config.refresh_token_ttl_s

    def grant_ttl(self, client: Client) -> int:
        """How long the tokens of one user grant to `client` can live: the refresh token's
        lifetime when the client gets one, else the access token's."""
        if client.allows_grant("refresh_token"):
            return max(self.access_ttl(client), self.refresh_ttl(client))
        return self.access_ttl(client)

    def audience_for(self, client: Client, resource: str | None) -> str:
        """RFC 8707: the requested resource, else the client's audience, else the default."""
        if resource:
            return resource
        return client.audience or self.config.default_audience

    def allowed_resources(self, client: Client) -> frozenset[str]:
        return frozenset((*self.config.audiences, *((client.audience,) if client.audience else ())))

    async def rights_outdated(self, subject: str, checked_at: float | None) -> bool:
        """Whether a grant of user `subject` whose rights were checked at `checked_at` (epoch
        seconds; None: not recorded) predates a revoking user event (`TokenStore.not_before`).
        """
        not_before = await self.store.not_before(subject)
        if not_before is None:
            return False
        return checked_at is None or float(checked_at) < not_before

    async def issue(
        self,
        client: Client,
        *,
        subject: str,
        scopes: Sequence[str],
        audience: str,
        refresh: bool,
        family: str | None = None,
        auth_time: int | None = None,
        for_user: bool = True,
        resource: str | None = None,
        checked_at: float | None = None,
    ) -> IssuedGrant:
        """Sign an access token, record it, and (if `refresh`) start a refresh family.

        `for_user`: the subject is a user, so the grant is indexed under it for
        `TokenStore.revoke_user` (False for client-credentials tokens). `resource`: the RFC
        8707 resource the grant was made for, which later refreshes must keep to.
        `checked_at`: when the user service confirmed the user's rights for this grant; a
        refresh is refused once a revoking user event is newer (`rights_outdated`).
        """
        if not refresh:
            access, jti, ttl = await self.issue_access_token(
                client, subject=subject, scopes=scopes, audience=audience, for_user=for_user
            )
            return IssuedGrant(access, jti, ttl, tuple(scopes))
        token, ref = new_refresh_token(family)
        data = self._refresh_record(client, subject, scopes, audience, auth_time)
        if checked_at is not None:
            data["checked_at"] = checked_at
        if resource is not None:
            data["resource"] = resource
        # The family exists before the access token joins it (revoked together).
        await self.store.add_refresh_token(
            ref.family,
            ref.digest,
            data,
            self.refresh_ttl(client),
            subject=subject if for_user else None,
        )
        access, jti, ttl = await self.issue_access_token(
            client, subject=subject, scopes=scopes, audience=audience, family=ref.family
        )
        return IssuedGrant(access, jti, ttl, tuple(scopes), token, ref.family)

    def _refresh_record(
        self,
        client: Client,
        subject: str,
        scopes: Sequence[str],
        audience: str,
        auth_time: int | None,
    ) -> dict[str, Any]:
        return {
            "client_id": client.client_id,
            "sub": subject,
            "scope": " ".join(scopes),
            "aud": audience,
            "iat": int(self.clock()),
            "auth_time": auth_time,
        }

    def _access_info(
        self, client: Client, subject: str, scopes: Sequence[str], audience: str
    ) -> dict[str, Any]:
        return {
            "client_id": client.client_id,
            "sub": subject,
            "scope": " ".join(scopes),
            "aud": audience,
        }

    async def issue_access_token(
        self,
        client: Client,
        *,
        subject: str,
        scopes: Sequence[str],
        audience: str,
        family: str | None = None,
        for_user: bool = False,
    ) -> tuple[str, str, int]:
        """An RFC 9068 access token; returns (jwt, jti, ttl). Without a `family`, a token
        `for_user` is indexed under its subject (with one, the family is)."""
        now = int(self.clock())
        ttl = self.access_ttl(client)
        jti = secrets.token_urlsafe(16)
        # RFC 9068 §2.2: iss, exp, aud, sub, client_id, iat, jti (+ scope, §2.2.3).
        claims = {
            "iss": self.config.issuer,
            "sub": subject,
            "aud": audience,
            "exp": now + ttl,
            "iat": now,
            "nbf": now,
            "jti": jti,
            "client_id": client.client_id,
            "scope": " ".join(scopes),
        }
        token = self.keys.sign_access_token(claims)
        info = {**self._access_info(client, subject, scopes, audience), "exp": now + ttl}
        await self.store.add_access_token(
            jti, info, ttl, family=family, subject=subject if for_user else None
        )
        return token, jti, ttl

    async def rotate_refresh(
        self,
        client: Client,
        presented: RefreshTokenRef,
        scopes: Sequence[str] | None,
        *,
        resource: str | None = None,
    ) -> IssuedGrant:
        """RFC 6749 §6 with rotation (RFC 9700 §4.14.2); reuse revokes the whole family.

        A replay within `refresh_reuse_grace_s` of the rotation (the client lost the
        response and retries) gets the same new refresh token back, with a fresh access
        token, as long as that new token is still unused. A replay after the grace period,
        or once the new token has been used (so the response was not lost), is reuse: the
        family is revoked.
        """
        current = await self.store.refresh_token(presented.family, presented.digest)
        if current is not None and current.get("client_id") != client.client_id:
            # RFC 6749 §6: the refresh token must have been issued to this client.
            raise InvalidGrant("the refresh token was not issued to this client")
        if current is not None:
            await self._refuse_if_outdated(presented.family, current)
        new_token, new_ref = new_refresh_token(presented.family)
        base = current or {}
        granted = tuple(str(base.get("scope", "")).split())
        if scopes is not None and current is not None:
            if not set(scopes) <= set(granted):
                # RFC 6749 §6: a refresh may narrow the scope, never widen it.
                raise InvalidScope("the requested scope exceeds the original grant")
            granted = tuple(scopes)
        # RFC 8707 §2.2: a refresh may name a resource within the original grant.
        if (
            resource is not None
            and current is not None
            and resource != (current.get("resource") or resource)
        ):
            raise InvalidTarget("the resource differs from the one authorized")
        data = {**base, "scope": " ".join(granted), "iat": int(self.clock())}
        outcome = await self.store.rotate_refresh_token(
            presented.family,
            presented.digest,
            new_ref.digest,
            data,
            self.refresh_ttl(client),
            self.config.refresh_reuse_grace_s,
            subject=str(current["sub"]) if current is not None else None,
            successor=seal_successor(new_token, presented.token) if presented.token else None,
        )
        if outcome.status == "reused":
            await self.store.revoke_family(presented.family)
            raise InvalidGrant("the refresh token was already used; the grant is revoked")
        if outcome.status == "grace":
            return await self._replay_within_grace(client, presented, outcome, scopes)
        if outcome.status != "rotated" or outcome.data is None or current is None:
            raise InvalidGrant("the refresh token is invalid, expired or revoked")
        audience = (
            self.audience_for(client, resource)
            if resource is not None
            else str(current.get("aud") or self.audience_for(client, None))
        )
        access, jti, ttl = await self.issue_access_token(
            client,
            subject=str(current["sub"]),
            scopes=granted,
            audience=audience,
            family=presented.family,
        )
        return IssuedGrant(access, jti, ttl, granted, new_token, presented.family)

    async def _refuse_if_outdated(self, family: str, record: dict[str, Any]) -> None:
        """A family that escaped a revoking user event (issued while it was being applied)
        still cannot be refreshed: revoke it now. The refreshed scope thus never exceeds
        what the user held at the last check the token service knows to be current."""
        if await self.rights_outdated(str(record.get("sub")), record.get("checked_at")):
            await self.store.revoke_family(family)
            raise InvalidGrant("the user's rights changed since this grant; sign in again")

    async def _replay_within_grace(
        self,
        client: Client,
        presented: RefreshTokenRef,
        outcome: Rotation,
        scopes: Sequence[str] | None,
    ) -> IssuedGrant:
        if (outcome.data or {}).get("client_id") != client.client_id:
            raise InvalidGrant("the refresh token was not issued to this client")
        successor = (
            open_successor(outcome.successor, presented.token)
            if outcome.successor and presented.token
            else None
        )
        record = (
            await self.store.refresh_token(presented.family, outcome.next_hash)
            if outcome.next_hash
            else None
        )
        if successor is None or record is None:
            # The new token was already used, so whoever presents the old one did not lose
            # the response: two parties hold the grant. RFC 9700 §4.14.2: revoke the family.
            await self.store.revoke_family(presented.family)
            raise InvalidGrant("the refresh token was already used; the grant is revoked")
        await self._refuse_if_outdated(presented.family, record)
        granted = tuple(str(record.get("scope", "")).split())
        if scopes is not None and set(scopes) != set(granted):
            raise InvalidScope("a retried refresh must ask for the scope of the first request")
        access, jti, ttl = await self.issue_access_token(
            client,
            subject=str(record["sub"]),
            scopes=granted,
            audience=str(record.get("aud") or self.audience_for(client, None)),
            family=presented.family,
        )
        return IssuedGrant(access, jti, ttl, granted, successor, presented.family)

    def decode_access_token(self, token: str) -> dict[str, Any] | None:
        """Claims of a JWT we signed (signature checked, exp not), or None."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SecurityWarning)
                decoded = jwt.decode(token, self.keys.key_set(), algorithms=list(SUPPORTED_ALGS))
        except (JoseError, ValueError):
            return None
        if decoded.header.get("typ") != "at+jwt" or decoded.claims.get("iss") != self.config.issuer:
            return None
        return dict(decoded.claims)

    async def own_token_claims(self, token: str) -> dict[str, Any] | None:
        """`decode_access_token`, reloading the keys first when the token's kid is unknown."""
        claims = self.decode_access_token(token)
        if claims is not None or self.on_unknown_kid is None:
            return claims
        kid = _unverified_kid(token)
        if kid is None or self.keys.knows(kid) or not await self.on_unknown_kid(kid):
            return None
        return self.decode_access_token(token)

    async def introspect(self, token: str, caller: Client | None = None) -> dict[str, Any]:
        """RFC 7662 §2.2 response for an access or refresh token.

        Access tokens are described to any authenticated `caller` (resource servers need
        that); a refresh token only to the client it was issued to (RFC 7662 §4: the server
        may answer inactive to callers that have no business knowing).
        """
        ref = parse_refresh_token(token)
        if ref is not None:
            record = await self.store.refresh_token(ref.family, ref.digest)
            if record is None:
                return {"active": False}
            if caller is not None and record.get("client_id") != caller.client_id:
                return {"active": False}
            if await self.rights_outdated(str(record.get("sub")), record.get("checked_at")):
                return {"active": False}  # it would be refused (`_refuse_if_outdated`)
            return {
                "active": True,
                "token_type": "refresh_token",
                "client_id": record.get("client_id"),
                "sub": record.get("sub"),
                "scope": record.get("scope", ""),
                "aud": record.get("aud"),
                "iat": record.get("iat"),
                "iss": self.config.issuer,
            }
        claims = await self.own_token_claims(token)
        now = self.clock()
        if claims is None or int(claims.get("exp", 0)) <= now:
            return {"active": False}
        if int(claims.get("nbf", 0)) > now + NBF_LEEWAY_S:
            # RFC 7662 §2.2: "active" means usable now; not before nbf (RFC 7519 §4.1.5).
            return {"active": False}
        if await self.store.access_token(str(claims.get("jti"))) is None:
            return {"active": False}
        return {"active": True, "token_type": "Bearer", **claims}

    async def revoke(self, token: str, client: Client) -> None:
        """RFC 7009 §2.1: revoke a token issued to `client`; anything else is silently ignored.

        Revoking a refresh token revokes its whole family, access tokens included.
        """
        ref = parse_refresh_token(token)
        if ref is not None:
            record = await self.store.refresh_token(ref.family, ref.digest)
            if record is not None and record.get("client_id") == client.client_id:
                await self.store.revoke_family(ref.family)
            return
        claims = await self.own_token_claims(token)
        if claims is not None and claims.get("client_id") == client.client_id:
            await self.store.revoke_access_token(str(claims.get("jti")))


def _unverified_kid(token: str) -> str | None:
    """The `kid` of a JWT's header, unverified (only to pick a key), or None."""
    head = token.split(".", 1)[0]
    if not head or len(head) > 2000:
        return None
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except ValueError:
        return None
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) and len(kid) <= 200 else None
