"""Which user events end a user's grants, and the revoker applying them to the store."""

from __future__ import annotations

from typing import Any

import pytest

from authbus.common._envelope import Event
from authbus.token.consistency import UserGrantRevoker, revoked_user_id
from authbus.token.grants import AuthorizationServer
from authbus.token.issuer import RefreshTokenRef, parse_refresh_token
from authbus.token.store import MemoryTokenStore

from .conftest import DictClients


def event(type_: str, data: dict[str, Any], **extra: Any) -> Event:
    return Event(id="e1", position=1, channel="users", type=type_, data=data, **extra)


@pytest.mark.parametrize(
    "type_",
    [
        "user.disabled",
        "user.deleted",
        "user.permissions_changed",
        "user.permissions_set",
        "user.roles_set",
    ],
)
def test_revoking_events_name_the_user(type_: str) -> None:
    assert revoked_user_id(event(type_, {"id": "u1"})) == "u1"


def test_user_id_falls_back_to_the_user_aggregate() -> None:
    e = event("user.disabled", {}, aggregate_type="user", aggregate_id="u2")
    assert revoked_user_id(e) == "u2"
    other = event("user.disabled", {}, aggregate_type="role", aggregate_id="admins")
    assert revoked_user_id(other) is None


@pytest.mark.parametrize(
    ("type_", "data"),
    [
        ("user.created", {"id": "u1"}),
        ("user.updated", {"id": "u1", "email": "a@example.com"}),
        ("user.updated", {"id": "u1", "email": "a@example.com", "changed": ["email"]}),
        ("user.enabled", {"id": "u1"}),
        ("user.updated", {"id": "u1", "disabled": False}),
        ("role.updated", {"name": "admins"}),
        ("user.disabled", {}),
    ],
)
def test_other_events_end_nothing(type_: str, data: dict[str, Any]) -> None:
    assert revoked_user_id(event(type_, data)) is None


def test_disabling_update_ends_grants() -> None:
    assert revoked_user_id(event("user.updated", {"id": "u1", "disabled": True})) == "u1"


@pytest.mark.parametrize("changed", [["password"], ["email", "password"]])
def test_password_change_or_reset_ends_grants(changed: list[str]) -> None:
    # What the user service publishes for PUT /v1/users/me/password and an admin reset.
    data = {"id": "u1", "username": "alice", "email": None, "changed": changed}
    assert revoked_user_id(event("user.updated", data)) == "u1"


async def test_revoker_sets_the_users_not_before_time_first() -> None:
    store = MemoryTokenStore(warn=False)
    revoker = UserGrantRevoker(store, clock=lambda: 1000.0)
    assert await revoker.apply(event("user.permissions_changed", {"id": "u1"})) == 0
    assert await store.not_before("u1") == 1000.0
    assert await store.not_before("u2") is None
    await revoker.apply(event("user.created", {"id": "u2"}))
    assert await store.not_before("u2") is None


async def test_revoker_is_idempotent() -> None:
    store = MemoryTokenStore(warn=False)
    await store.add_refresh_token("fam", "h", {"sub": "u1"}, 60, subject="u1")
    await store.add_access_token("jti", {"sub": "u1"}, 60, family="fam")
    revoker = UserGrantRevoker(store)
    assert await revoker.apply(event("user.deleted", {"id": "u1"})) == 2
    assert await revoker.apply(event("user.deleted", {"id": "u1"})) == 0
    assert await store.access_token("jti") is None
    assert await revoker.apply(event("user.created", {"id": "u1"})) == 0


async def test_grants_of_a_user_are_indexed_but_client_tokens_are_not(
    server: AuthorizationServer, clients: DictClients, store: MemoryTokenStore
) -> None:
    web, svc = await clients.get("web"), await clients.get("svc")
    assert web is not None and svc is not None
    issuer = server.issuer
    user_grant = await issuer.issue(
        web, subject="user-1", scopes=("orders:read",), audience="authbus", refresh=True
    )
    rotated = await issuer.rotate_refresh(
        web, parse_refresh_token(str(user_grant.refresh_token)) or _never(), None
    )
    implicit = await issuer.issue(
        web, subject="user-1", scopes=(), audience="authbus", refresh=False
    )
    service = await server.token_request(svc, {"grant_type": "client_credentials"})

    await UserGrantRevoker(store).apply(event("user.disabled", {"id": "user-1"}))

    for jti in (user_grant.jti, rotated.jti, implicit.jti):
        assert await store.access_token(jti) is None
    assert (await issuer.introspect(str(rotated.refresh_token)))["active"] is False
    assert await store.access_token(service.jti) is not None
    # A client id used as a user id finds nothing either: client tokens are never indexed.
    assert await store.revoke_user("svc") == 0


def _never() -> RefreshTokenRef:
    raise AssertionError("malformed refresh token")
