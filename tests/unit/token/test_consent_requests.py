"""Consent pages kept in the SSO session: bounded in number, answerable for a while, once."""

from __future__ import annotations

import time

import httpx
import pytest

from authbus.token.grants import AuthorizationRequest, AuthorizationServer
from authbus.token.issuer import TokenIssuer
from authbus.token.service import CONSENT_REQUEST_TTL_S, MAX_CONSENT_REQUESTS, TokenService
from authbus.token.store import MemoryTokenStore
from authbus.token.users import UserServiceClient, VerifiedUser

from .conftest import DictClients


async def _no_token() -> str:
    return "t"


@pytest.fixture
async def service(
    server: AuthorizationServer, issuer: TokenIssuer, clients: DictClients, store: MemoryTokenStore
) -> TokenService:
    users = UserServiceClient(
        "http://user.test", _no_token, transport=httpx.MockTransport(lambda r: httpx.Response(500))
    )
    return TokenService(clients, store, issuer.keys, issuer, server, users, 3600)  # type: ignore[arg-type]


async def spa_request(server: AuthorizationServer, state: str) -> AuthorizationRequest:
    return await server.validate_authorization_request(
        {
            "response_type": "token",
            "client_id": "spa",
            "redirect_uri": "https://spa.example.com/cb",
            "scope": "orders:read",
            "state": state,
        }
    )


async def test_open_consent_pages_are_bounded_oldest_first(
    service: TokenService, server: AuthorizationServer
) -> None:
    user = VerifiedUser("u1", "alice", frozenset({"orders:read"}), checked_at=time.time())
    cookie, session = await service.start_session(user)
    handles = []
    for i in range(MAX_CONSENT_REQUESTS + 2):
        handle, session = await service.hold_for_consent(
            cookie, session, await spa_request(server, f"s{i}")
        )
        handles.append(handle)
    stored = await service.session(cookie)
    assert stored is not None
    assert len(stored.consent_requests) == MAX_CONSENT_REQUESTS
    now = time.time()
    assert stored.consent_request(handles[0], now) is None
    assert stored.consent_request(handles[1], now) is None
    newest = stored.consent_request(handles[-1], now)
    assert newest is not None and newest["state"] == f"s{MAX_CONSENT_REQUESTS + 1}"
    # A page is answerable for a while only.
    assert stored.consent_request(handles[-1], now + CONSENT_REQUEST_TTL_S + 1) is None
    assert stored.consent_request("", now) is None


async def test_an_answered_page_cannot_be_answered_again(
    service: TokenService, server: AuthorizationServer
) -> None:
    user = VerifiedUser("u1", "alice", frozenset({"orders:read"}), checked_at=time.time())
    cookie, session = await service.start_session(user)
    request = await spa_request(server, "s")
    handle, session = await service.hold_for_consent(cookie, session, request)
    session = await service.answer_consent(cookie, session, handle, request)
    assert session.consented(request.client, request.scopes)
    stored = await service.session(cookie)
    assert stored is not None
    assert stored.consent_request(handle, time.time()) is None
    assert stored.consents == {"spa": ["orders:read"]}
