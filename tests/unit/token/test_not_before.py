"""A revoking user event also refuses grants issued while it was being applied.

`UserGrantRevoker` sets the user's "not before" time, then revokes what the user's index
holds. A grant issued at the same moment (a code redeemed, a login finishing) may be indexed
after that read: it rests on a check of the user's rights older than the event, so it is
refused at its next use (refresh, code exchange, SSO) or at once when the issuer sees it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from authbus.common._envelope import Event
from authbus.token.clients import Client
from authbus.token.consistency import UserGrantRevoker
from authbus.token.errors import InvalidGrant
from authbus.token.grants import AuthorizationRequest, AuthorizationServer
from authbus.token.issuer import IssuedGrant, TokenIssuer, parse_refresh_token
from authbus.token.pkce import s256_challenge
from authbus.token.service import TokenService
from authbus.token.store import MemoryTokenStore
from authbus.token.users import UserServiceClient, VerifiedUser

from .conftest import DictClients

VERIFIER = "v" * 64
WEB_CB = "https://app.example.com/cb"
PERMISSIONS_CHANGED = Event(
    id="e1", position=1, channel="users", type="user.permissions_changed", data={"id": "u1"}
)


async def web(clients: DictClients) -> Client:
    client = await clients.get("web")
    assert client is not None
    return client


async def code_request(server: AuthorizationServer) -> AuthorizationRequest:
    return await server.validate_authorization_request(
        {
            "response_type": "code",
            "client_id": "web",
            "redirect_uri": WEB_CB,
            "scope": "orders:read",
            "code_challenge": s256_challenge(VERIFIER),
            "code_challenge_method": "S256",
        }
    )


def code_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["code"][0]


def exchange_form(code: str) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": WEB_CB,
        "code_verifier": VERIFIER,
    }


def before(store: MemoryTokenStore, method: str, hook: Callable[[], Awaitable[object]]) -> None:
    """Run `hook` just before the store's `method` (a revocation racing that write)."""
    original = getattr(store, method)

    async def wrapped(*args: Any, **kw: Any) -> Any:
        await hook()
        return await original(*args, **kw)

    setattr(store, method, wrapped)


async def test_code_indexed_after_the_revocation_cannot_be_exchanged(
    server: AuthorizationServer, clients: DictClients, store: MemoryTokenStore
) -> None:
    revoker = UserGrantRevoker(store)
    checked_at = time.time()  # the user service said yes ...
    before(store, "add_code", lambda: revoker.apply(PERMISSIONS_CHANGED))  # ... then this
    url = await server.approve(await code_request(server), subject="u1", checked_at=checked_at)
    with pytest.raises(InvalidGrant, match="rights changed"):
        await server.token_request(await web(clients), exchange_form(code_of(url)))


async def test_tokens_issued_while_the_user_is_revoked_are_revoked_at_once(
    server: AuthorizationServer, clients: DictClients, store: MemoryTokenStore
) -> None:
    revoker = UserGrantRevoker(store)
    url = await server.approve(await code_request(server), subject="u1", checked_at=time.time())
    issued: list[IssuedGrant] = []
    issue = server.issuer.issue

    async def recording_issue(*args: Any, **kw: Any) -> IssuedGrant:
        grant = await issue(*args, **kw)
        issued.append(grant)
        return grant

    server.issuer.issue = recording_issue  # type: ignore[method-assign]
    # The event is applied after the exchange checked it, before the family is indexed.
    before(store, "add_refresh_token", lambda: revoker.apply(PERMISSIONS_CHANGED))
    with pytest.raises(InvalidGrant, match="rights changed"):
        await server.token_request(await web(clients), exchange_form(code_of(url)))
    [grant] = issued
    assert await store.access_token(grant.jti) is None
    intro = await server.issuer.introspect(str(grant.refresh_token))
    assert intro == {"active": False}


async def test_family_resting_on_an_older_check_cannot_be_refreshed(
    issuer: TokenIssuer, clients: DictClients, store: MemoryTokenStore
) -> None:
    client = await web(clients)
    await store.set_not_before("u1", 2000.0, 3600)
    grant = await issuer.issue(
        client,
        subject="u1",
        scopes=("orders:read", "orders:write"),
        audience="authbus",
        refresh=True,
        checked_at=1999.0,
    )
    ref = parse_refresh_token(str(grant.refresh_token))
    assert ref is not None
    assert (await issuer.introspect(str(grant.refresh_token)))["active"] is False
    with pytest.raises(InvalidGrant, match="rights changed"):
        await issuer.rotate_refresh(client, ref, None)
    # The family is revoked with its access token.
    assert await store.access_token(grant.jti) is None
    assert (await issuer.introspect(str(grant.refresh_token)))["active"] is False


async def test_grants_checked_after_the_event_refresh_normally(
    issuer: TokenIssuer, clients: DictClients, store: MemoryTokenStore
) -> None:
    client = await web(clients)
    await store.set_not_before("u1", 2000.0, 3600)
    grant = await issuer.issue(
        client,
        subject="u1",
        scopes=("orders:read",),
        audience="authbus",
        refresh=True,
        checked_at=2000.5,
    )
    ref = parse_refresh_token(str(grant.refresh_token))
    assert ref is not None
    refreshed = await issuer.rotate_refresh(client, ref, None)
    assert refreshed.scopes == ("orders:read",)
    # Other users are not concerned.
    other = await issuer.issue(
        client, subject="u2", scopes=("orders:read",), audience="authbus", refresh=True
    )
    other_ref = parse_refresh_token(str(other.refresh_token))
    assert other_ref is not None
    assert (await issuer.rotate_refresh(client, other_ref, None)).refresh_token


async def test_implicit_token_issued_while_the_user_is_revoked_is_not_handed_out(
    server: AuthorizationServer, store: MemoryTokenStore
) -> None:
    request = await server.validate_authorization_request(
        {"response_type": "token", "client_id": "spa", "redirect_uri": "https://spa.example.com/cb"}
    )
    checked_at = time.time()
    await UserGrantRevoker(store).apply(PERMISSIONS_CHANGED)
    url = await server.approve(request, subject="u1", checked_at=checked_at)
    answer = parse_qs(urlsplit(url).fragment)
    assert answer["error"] == ["access_denied"]
    assert "access_token" not in answer


async def test_sso_session_started_by_a_login_that_raced_the_event_is_not_used(
    server: AuthorizationServer, issuer: TokenIssuer, clients: DictClients, store: MemoryTokenStore
) -> None:
    users = UserServiceClient(
        "http://user.test",
        _no_token,
        transport=httpx.MockTransport(lambda r: httpx.Response(500)),
    )
    service = TokenService(clients, store, issuer.keys, issuer, server, users, 3600)  # type: ignore[arg-type]
    checked_at = time.time()  # the user service answered for the old permissions
    await UserGrantRevoker(store).apply(PERMISSIONS_CHANGED)
    user = VerifiedUser("u1", "alice", frozenset({"orders:read"}), checked_at=checked_at)
    cookie, _session = await service.start_session(user)
    assert await service.session(cookie) is None
    # A login after the event is a session like any other.
    fresh = VerifiedUser("u1", "alice", frozenset({"orders:read"}), checked_at=time.time())
    cookie, _session = await service.start_session(fresh)
    assert await service.session(cookie) is not None
    await users.aclose()


async def _no_token() -> str:
    return "t"
