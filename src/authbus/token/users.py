"""The token service's client of the user service (`POST /v1/credentials/verify`).

users = UserServiceClient(settings.user_url, token_provider=self_token)  # async callable
user = await users.verify("alice", "pw", ["orders:read"], client_address="10.0.0.1")
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from authbus.common._context import add_request_id
from authbus.token.errors import (
    InsufficientRights,
    InvalidCredentials,
    TemporarilyUnavailable,
    TooManyAttempts,
    UserDisabled,
)

log = logging.getLogger("authbus.token.users")


@dataclass(frozen=True)
class VerifiedUser:
    """A user whose password and rights the user service has confirmed.

    `checked_at` (epoch seconds) is when the question was asked: the answer holds the
    user's rights as they were at some moment after it. A revoking user event processed
    later makes every grant resting on an earlier check unusable (`TokenStore.not_before`).
    """

    id: str
    username: str
    effective_permissions: frozenset[str] = field(default_factory=frozenset)
    checked_at: float = 0.0


class UserServiceClient:
    """Asks the user service whether a user exists, is enabled, and holds the scopes."""

    def __init__(
        self,
        base_url: str,
        token_provider: Callable[[], Awaitable[str]],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self._token_provider = token_provider
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), transport=transport, timeout=timeout_s
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def verify(
        self,
        username: str,
        password: str,
        scopes: Sequence[str],
        client_address: str | None = None,
    ) -> VerifiedUser:
        """The verified user, or raises InvalidCredentials / UserDisabled / InsufficientRights /
        TooManyAttempts / TemporarilyUnavailable (user service down or misbehaving)."""
        body: dict[str, Any] = {"username": username, "password": password, "scopes": list(scopes)}
        if client_address:
            body["client_address"] = client_address
        token = await self._token_provider()
        headers = {"Authorization": f"Bearer {token}"}
        add_request_id(headers)  # the login's request id, into the user service's logs
        # Taken before asking: a change committed while the answer travels counts as later.
        checked_at = time.time()
        try:
            resp = await self._http.post("/v1/credentials/verify", json=body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("user service unreachable", extra={"error": type(exc).__name__})
            raise TemporarilyUnavailable("the user service is unavailable") from exc
        return _interpret(resp, checked_at)


def _interpret(resp: httpx.Response, checked_at: float) -> VerifiedUser:
    try:
        data: dict[str, Any] = resp.json()
    except ValueError:
        data = {}
    error = data.get("error") if isinstance(data, dict) else None
    if resp.status_code == 200 and isinstance(data.get("user"), dict):
        user = data["user"]
        return VerifiedUser(
            id=str(user["id"]),
            username=str(user.get("username", "")),
            effective_permissions=frozenset(user.get("effective_permissions") or ()),
            checked_at=checked_at,
        )
    if resp.status_code == 401 and error == "invalid_credentials":
        raise InvalidCredentials("invalid username or password")
    if resp.status_code == 403 and error == "user_disabled":
        raise UserDisabled("the account is disabled")
    if resp.status_code == 403 and error == "insufficient_rights":
        missing = [str(s) for s in data.get("missing_scopes") or ()]
        raise InsufficientRights("the user lacks requested scopes", missing)
    if resp.status_code == 429:
        try:
            retry_after = int(resp.headers.get("Retry-After", "30"))
        except ValueError:
            retry_after = 30
        raise TooManyAttempts("too many failed attempts; try again later", retry_after)
    # Our own token rejected, 5xx, or an unexpected shape: the dependency is not usable now.
    log.warning("user service answered unexpectedly", extra={"status": resp.status_code})
    raise TemporarilyUnavailable("the user service is unavailable")
