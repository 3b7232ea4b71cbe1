"""The token service's parts wired together, and the login rules (SSO sessions, consent).

No HTTP here: the api layer reads cookies and forms and calls these methods.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from authbus.token.clients import Client, ClientRepository, hash_secret
from authbus.token.grants import AuthorizationRequest, AuthorizationServer
from authbus.token.issuer import TokenIssuer
from authbus.token.keys import KeyRing
from authbus.token.store import TokenStore
from authbus.token.users import UserServiceClient, VerifiedUser

# The scope the token service's own token carries when it calls the user service.
USERS_VERIFY_SCOPE = "users:verify"


@dataclass(frozen=True)
class Session:
    """A signed-in browser (SSO): who, since when, and the consents given."""

    user_id: str
    username: str
    permissions: frozenset[str]
    auth_time: int
    # client_id -> scopes the user agreed to share with it
    consents: dict[str, list[str]] = field(default_factory=dict)

    def holds(self, scopes: Sequence[str]) -> bool:
        return set(scopes) <= self.permissions

    def consented(self, client: Client, scopes: Sequence[str]) -> bool:
        return client.first_party or set(scopes) <= set(self.consents.get(client.client_id, ()))

    def as_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "username": self.username,
            "permissions": sorted(self.permissions),
            "auth_time": self.auth_time,
            "consents": self.consents,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Session:
        return cls(
            user_id=str(data["user_id"]),
            username=str(data.get("username", "")),
            permissions=frozenset(data.get("permissions") or ()),
            auth_time=int(data.get("auth_time") or 0),
            consents={str(k): list(v) for k, v in (data.get("consents") or {}).items()},
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
        )
        cookie = secrets.token_urlsafe(32)
        await self.store.add_session(
            hash_secret(cookie), session.as_json(), self.sso_session_ttl_s, subject=user.id
        )
        return cookie, session

    async def session(self, cookie: str | None) -> Session | None:
        if not cookie or len(cookie) > 100:
            return None
        data = await self.store.session(hash_secret(cookie))
        return Session.from_json(data) if data is not None else None

    async def record_consent(
        self, cookie: str, session: Session, request: AuthorizationRequest
    ) -> Session:
        consents = dict(session.consents)
        given = set(consents.get(request.client.client_id, ()))
        consents[request.client.client_id] = sorted(given | set(request.scopes))
        updated = Session(
            session.user_id, session.username, session.permissions, session.auth_time, consents
        )
        left = max(1, session.auth_time + self.sso_session_ttl_s - int(time.time()))
        await self.store.add_session(
            hash_secret(cookie), updated.as_json(), left, subject=session.user_id
        )
        return updated

    async def end_session(self, cookie: str | None) -> None:
        if cookie and len(cookie) <= 100:
            await self.store.delete_session(hash_secret(cookie))

    async def aclose(self) -> None:
        await self.users.aclose()
        await self.store.close()
