"""The token service's parts wired together, and the login rules (SSO sessions, consent).

No HTTP here: the api layer reads cookies and forms and calls these methods.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from authbus.token.clients import Client, ClientRepository, hash_secret
from authbus.token.grants import AuthorizationRequest, AuthorizationServer
from authbus.token.issuer import TokenIssuer
from authbus.token.keys import KeyRing
from authbus.token.store import TokenStore
from authbus.token.users import UserServiceClient, VerifiedUser

# The scope the token service's own token carries when it calls the user service.
USERS_VERIFY_SCOPE = "users:verify"


# How long a consent page stays answerable, and how many may be open at once per session.
CONSENT_REQUEST_TTL_S = 600
MAX_CONSENT_REQUESTS = 10


@dataclass(frozen=True)
class Session:
    """A signed-in browser (SSO): who, since when, and the consents given.

    `checked_at` is when the user service last confirmed `permissions` (epoch seconds).
    `consent_requests` holds the authorization requests shown on consent pages, as they were
    checked, by a random handle: the consent form carries only the handle, so what the user
    allows is what was checked, whatever the form says.
    """

    user_id: str
    username: str
    permissions: frozenset[str]
    auth_time: int
    # client_id -> scopes the user agreed to share with it
    consents: dict[str, list[str]] = field(default_factory=dict)
    checked_at: float = 0.0
    # handle -> {"params": the request's fields, "expires_at": epoch seconds}
    consent_requests: dict[str, dict[str, Any]] = field(default_factory=dict)

    def holds(self, scopes: Sequence[str]) -> bool:
        return set(scopes) <= self.permissions

    def consented(self, client: Client, scopes: Sequence[str]) -> bool:
        return client.first_party or set(scopes) <= set(self.consents.get(client.client_id, ()))

    def consent_request(self, handle: str, now: float) -> dict[str, str] | None:
        """The request fields shown on the consent page `handle`, while it may be answered."""
        pending = self.consent_requests.get(handle) if handle else None
        if pending is None or float(pending.get("expires_at", 0)) <= now:
            return None
        return {str(k): str(v) for k, v in (pending.get("params") or {}).items()}

    def as_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "username": self.username,
            "permissions": sorted(self.permissions),
            "auth_time": self.auth_time,
            "consents": self.consents,
            "checked_at": self.checked_at,
            "consent_requests": self.consent_requests,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Session:
        auth_time = int(data.get("auth_time") or 0)
        return cls(
            user_id=str(data["user_id"]),
            username=str(data.get("username", "")),
            permissions=frozenset(data.get("permissions") or ()),
            auth_time=auth_time,
            consents={str(k): list(v) for k, v in (data.get("consents") or {}).items()},
            # Sessions started before `checked_at` was kept: the sign-in time is close.
            checked_at=float(data.get("checked_at") or auth_time),
            consent_requests=dict(data.get("consent_requests") or {}),
        )


class SelfTokenProvider:
    """The token service's own access token for the user service (minted locally, cached)."""

    def __init__(self, issuer: TokenIssuer, client_id: str, audience: str) -> None:
        self.issuer = issuer
        self.client = Client(client_id, client_id, "confidential", scopes=(USERS_VERIFY_SCOPE,))
        self.audience = audience
        self._token: str | None = None
        self._expires_at = 0.0

    async def __call__(self) -> str:
        now = time.time()
        if self._token is None or now > self._expires_at - 60:
            token, _jti, ttl = await self.issuer.issue_access_token(
                self.client,
                subject=self.client.client_id,
                scopes=(USERS_VERIFY_SCOPE,),
                audience=self.audience,
            )
            self._token, self._expires_at = token, now + ttl
        return self._token


@dataclass
class TokenService:
    """Everything a request handler of the token service needs."""

    clients: ClientRepository
    store: TokenStore
    keys: KeyRing
    issuer: TokenIssuer
    server: AuthorizationServer
    users: UserServiceClient
    sso_session_ttl_s: int

    async def verify_user(
        self, username: str, password: str, scopes: Sequence[str], client_address: str | None
    ) -> VerifiedUser:
        """Ask the user service (raises the errors of `UserServiceClient.verify`)."""
        return await self.users.verify(username, password, scopes, client_address)

    async def start_session(self, user: VerifiedUser) -> tuple[str, Session]:
        """A new SSO session; returns the cookie value (only its digest is stored)."""
        session = Session(
            user_id=user.id,
            username=user.username,
            permissions=user.effective_permissions,
            auth_time=int(time.time()),
            checked_at=user.checked_at,
        )
        cookie = secrets.token_urlsafe(32)
        await self.store.add_session(
            hash_secret(cookie), session.as_json(), self.sso_session_ttl_s, subject=user.id
        )
        return cookie, session

    async def session(self, cookie: str | None) -> Session | None:
        """The live SSO session of `cookie`, or None (unknown, expired, or resting on a check
        of the user's rights older than a revoking user event)."""
        if not cookie or len(cookie) > 100:
            return None
        data = await self.store.session(hash_secret(cookie))
        if data is None:
            return None
        session = Session.from_json(data)
        if await self.issuer.rights_outdated(session.user_id, session.checked_at):
            await self.store.delete_session(hash_secret(cookie))
            return None
        return session

    async def _save(self, cookie: str, session: Session) -> None:
        left = max(1, session.auth_time + self.sso_session_ttl_s - int(time.time()))
        await self.store.add_session(
            hash_secret(cookie), session.as_json(), left, subject=session.user_id
        )

    async def hold_for_consent(
        self, cookie: str, session: Session, request: AuthorizationRequest
    ) -> tuple[str, Session]:
        """Keep `request` (checked against `session`) for its consent page; returns the
        handle the page's form carries, and the session as saved."""
        now = time.time()
        pending = {
            h: p for h, p in session.consent_requests.items() if float(p.get("expires_at", 0)) > now
        }
        # Bounded: the oldest pages of a user with many tabs open stop being answerable.
        while len(pending) >= MAX_CONSENT_REQUESTS:
            del pending[min(pending, key=lambda h: float(pending[h]["expires_at"]))]
        handle = secrets.token_urlsafe(24)
        pending[handle] = {
            "params": request.form_fields(),
            "expires_at": now + CONSENT_REQUEST_TTL_S,
        }
        updated = replace(session, consent_requests=pending)
        await self._save(cookie, updated)
        return handle, updated

    async def answer_consent(
        self,
        cookie: str,
        session: Session,
        handle: str,
        request: AuthorizationRequest | None = None,
    ) -> Session:
        """The consent page `handle` is answered (it cannot be answered twice); with the
        `request` it showed when the user allowed it, the consent is remembered."""
        pending = {h: p for h, p in session.consent_requests.items() if h != handle}
        consents = dict(session.consents)
        if request is not None:
            given = set(consents.get(request.client.client_id, ()))
            consents[request.client.client_id] = sorted(given | set(request.scopes))
        updated = replace(session, consents=consents, consent_requests=pending)
        await self._save(cookie, updated)
        return updated

    async def end_session(self, cookie: str | None) -> None:
        if cookie and len(cookie) <= 100:
            await self.store.delete_session(hash_secret(cookie))

    async def aclose(self) -> None:
        await self.users.aclose()
        await self.store.close()
