"""Bad input to the user service over HTTP, on SQLite and Postgres: each request gets the
right 4xx with a message naming what was wrong, and writes nothing (every table of the user
database, audit log and outbox included, reads the same before and after)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection

from authbus.core.db import create_engine
from authbus.user.models import metadata
from tests.integration.user.conftest import PASSWORD
from tests.support.tokens import TokenMinter

Snapshot = dict[str, list[tuple[Any, ...]]]


def _read_all(conn: Connection) -> Snapshot:
    out: Snapshot = {}
    for name in sorted(metadata.tables):
        rows = conn.execute(text(f"SELECT * FROM {name}")).all()  # noqa: S608 - our own names
        out[name] = sorted((tuple(r) for r in rows), key=repr)
    return out


async def snapshot(url: str) -> Snapshot:
    """Every row of every table of the user database, read on a connection of its own."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_read_all)
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class Seeded:
    alice_id: str
    admin: dict[str, str]
    alice: dict[str, str]


@pytest.fixture
async def seeded(client: httpx.AsyncClient, admin: dict[str, str], minter: TokenMinter) -> Seeded:
    """A role `clerks` (orders:read) and a user alice (direct orders:write, role clerks)."""
    role = await client.post(
        "/v1/roles", json={"name": "clerks", "permissions": ["orders:read"]}, headers=admin
    )
    assert role.status_code == 201, role.text
    made = await client.post(
        "/v1/users",
        json={
            "username": "alice",
            "password": PASSWORD,
            "email": "alice@example.com",
            "permissions": ["orders:write"],
            "roles": ["clerks"],
        },
        headers=admin,
    )
    assert made.status_code == 201, made.text
    alice_id = made.json()["id"]
    alice = {"Authorization": f"Bearer {minter.mint(alice_id, [])}"}
    return Seeded(alice_id, admin, alice)


@dataclass(frozen=True)
class Bad:
    """One bad request and what it must be answered with."""

    method: str
    path: str  # "{alice}" is replaced with alice's id
    body: Any = None
    params: Mapping[str, str | int] = field(default_factory=dict)
    status: int = 422
    error: str = "validation_error"
    # Text the error_description must contain: the field (or value) at fault.
    names: tuple[str, ...] = ()
    as_alice: bool = False  # sent with alice's own token rather than the admin's


ALICE = "/v1/users/{alice}"
CASES = {
    # PUT /v1/users/{id}/permissions
    "permissions-with-a-space": Bad(
        "PUT",
        ALICE + "/permissions",
        {"permissions": ["orders:read", "orders read"]},
        error="invalid_permission",
        names=("permission", "'orders read'"),
    ),
    "permissions-with-a-quote": Bad(
        "PUT",
        ALICE + "/permissions",
        {"permissions": ['orders"read']},
        error="invalid_permission",
        names=("permission",),
    ),
    "permissions-empty-string": Bad(
        "PUT",
        ALICE + "/permissions",
        {"permissions": [""]},
        error="invalid_permission",
        names=("permission",),
    ),
    "permissions-not-a-list": Bad(
        "PUT", ALICE + "/permissions", {"permissions": "orders:read"}, names=("permissions",)
    ),
    "permissions-missing": Bad("PUT", ALICE + "/permissions", {}, names=("permissions",)),
    # PUT /v1/users/{id}/roles
    "roles-unknown": Bad(
        "PUT",
        ALICE + "/roles",
        {"roles": ["ghost"]},
        status=404,
        error="role_not_found",
        names=("ghost",),
    ),
    "roles-one-known-one-unknown": Bad(
        "PUT",
        ALICE + "/roles",
        {"roles": ["clerks", "ghost"]},
        status=404,
        error="role_not_found",
        names=("ghost",),
    ),
    "roles-not-a-list": Bad("PUT", ALICE + "/roles", {"roles": "clerks"}, names=("roles",)),
    # PUT /v1/users/{id}/password (an administrator's reset)
    "reset-too-short": Bad(
        "PUT",
        ALICE + "/password",
        {"password": "short"},
        error="weak_password",
        names=("password", "at least 8"),
    ),
    "reset-commonly-used": Bad(
        "PUT",
        ALICE + "/password",
        {"password": "password1"},
        error="weak_password",
        names=("password", "commonly used"),
    ),
    "reset-wrong-field": Bad(
        "PUT", ALICE + "/password", {"new_password": "a fine new passphrase"}, names=("password",)
    ),
    # PUT /v1/users/me/password (one's own)
    "me-weak-new-password": Bad(
        "PUT",
        "/v1/users/me/password",
        {"current_password": PASSWORD, "new_password": "short"},
        error="weak_password",
        names=("password", "at least 8"),
        as_alice=True,
    ),
    "me-commonly-used-new-password": Bad(
        "PUT",
        "/v1/users/me/password",
        {"current_password": PASSWORD, "new_password": "password1"},
        error="weak_password",
        names=("password", "commonly used"),
        as_alice=True,
    ),
    "me-wrong-current-password": Bad(
        "PUT",
        "/v1/users/me/password",
        {"current_password": "not the password", "new_password": "a fine new passphrase"},
        status=403,
        error="invalid_current_password",
        names=("current password",),
        as_alice=True,
    ),
    "me-missing-current-password": Bad(
        "PUT",
        "/v1/users/me/password",
        {"new_password": "a fine new passphrase"},
        names=("current_password",),
        as_alice=True,
    ),
    # PATCH /v1/users/{id}
    "patch-malformed-email": Bad(
        "PATCH", ALICE, {"email": "not-an-address"}, error="invalid_email", names=("email",)
    ),
    "patch-email-with-two-ats": Bad(
        "PATCH", ALICE, {"email": "a@b@example.com"}, error="invalid_email", names=("email",)
    ),
    "patch-valid-disable-with-a-malformed-email": Bad(
        "PATCH",
        ALICE,
        {"disabled": True, "email": "not-an-address"},
        error="invalid_email",
        names=("email",),
    ),
    "patch-disabled-not-a-boolean": Bad(
        "PATCH", ALICE, {"disabled": "perhaps"}, names=("disabled",)
    ),
    "patch-email-not-a-string": Bad("PATCH", ALICE, {"email": 42}, names=("email",)),
    "patch-unknown-field": Bad(
        "PATCH", ALICE, {"username": "mallory"}, names=("username", "not permitted")
    ),
    "patch-body-not-an-object": Bad("PATCH", ALICE, ["disabled"]),
    # POST /v1/roles
    "role-name-with-a-space": Bad(
        "POST", "/v1/roles", {"name": "bad name"}, error="invalid_role_name", names=("name",)
    ),
    "role-name-too-short": Bad(
        "POST", "/v1/roles", {"name": "ab"}, error="invalid_role_name", names=("name",)
    ),
    "role-with-a-malformed-permission": Bad(
        "POST",
        "/v1/roles",
        {"name": "auditors", "permissions": ["audit read"]},
        error="invalid_permission",
        names=("permission", "'audit read'"),
    ),
    "role-unknown-field": Bad(
        "POST", "/v1/roles", {"name": "auditors", "members": ["alice"]}, names=("members",)
    ),
    # PATCH and DELETE /v1/roles/{name}
    "patch-unknown-role": Bad(
        "PATCH",
        "/v1/roles/ghost",
        {"description": "nobody"},
        status=404,
        error="role_not_found",
        names=("ghost",),
    ),
    "patch-role-with-a-malformed-permission": Bad(
        "PATCH",
        "/v1/roles/clerks",
        {"permissions": ["orders:read", "orders read"]},
        error="invalid_permission",
        names=("permission", "'orders read'"),
    ),
    "delete-unknown-role": Bad(
        "DELETE", "/v1/roles/ghost", status=404, error="role_not_found", names=("ghost",)
    ),
    # A user id that is not a UUID
    "get-user-not-a-uuid": Bad("GET", "/v1/users/not-a-uuid", names=("user_id", "UUID")),
    "patch-user-not-a-uuid": Bad(
        "PATCH", "/v1/users/not-a-uuid", {"disabled": True}, names=("user_id",)
    ),
    "delete-user-not-a-uuid": Bad("DELETE", "/v1/users/not-a-uuid", names=("user_id",)),
    "permissions-of-not-a-uuid": Bad(
        "PUT", "/v1/users/not-a-uuid/permissions", {"permissions": []}, names=("user_id",)
    ),
    # Paging
    "users-limit-0": Bad("GET", "/v1/users", params={"limit": 0}, names=("limit",)),
    "users-limit-201": Bad("GET", "/v1/users", params={"limit": 201}, names=("limit", "200")),
    "users-limit-not-a-number": Bad("GET", "/v1/users", params={"limit": "ten"}, names=("limit",)),
    "audit-limit-0": Bad("GET", "/v1/audit", params={"limit": 0}, names=("limit",)),
    "audit-limit-201": Bad("GET", "/v1/audit", params={"limit": 201}, names=("limit", "200")),
    "audit-before-0": Bad("GET", "/v1/audit", params={"before": 0}, names=("before",)),
    "audit-before-negative": Bad("GET", "/v1/audit", params={"before": -5}, names=("before",)),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
async def test_bad_input_is_a_4xx_naming_the_field_and_writes_nothing(
    client: httpx.AsyncClient, migrated_url: str, seeded: Seeded, case: Bad
) -> None:
    before = await snapshot(migrated_url)
    r = await client.request(
        case.method,
        case.path.format(alice=seeded.alice_id),
        json=case.body,
        params=dict(case.params),
        headers=seeded.alice if case.as_alice else seeded.admin,
    )
    assert r.status_code == case.status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["error"] == case.error, body
    description = body["error_description"]
    assert isinstance(description, str) and description
    for name in case.names:
        assert name in description, (name, description)
    assert await snapshot(migrated_url) == before


async def test_unknown_role_answer_lists_only_the_missing_roles(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    r = await client.put(
        f"/v1/users/{seeded.alice_id}/roles",
        json={"roles": ["clerks", "ghost", "phantom"]},
        headers=seeded.admin,
    )
    assert r.status_code == 404, r.text
    assert r.json()["roles"] == ["ghost", "phantom"]
    got = await client.get(f"/v1/users/{seeded.alice_id}", headers=seeded.admin)
    assert got.json()["roles"] == ["clerks"]
    assert got.json()["effective_permissions"] == ["orders:read", "orders:write"]


async def test_a_refused_password_change_keeps_the_old_password(
    client: httpx.AsyncClient, seeded: Seeded, verifier: dict[str, str]
) -> None:
    for body, headers, path in [
        ({"password": "short"}, seeded.admin, f"/v1/users/{seeded.alice_id}/password"),
        (
            {"current_password": PASSWORD, "new_password": "short"},
            seeded.alice,
            "/v1/users/me/password",
        ),
        (
            {"current_password": "not the password", "new_password": "a fine new passphrase"},
            seeded.alice,
            "/v1/users/me/password",
        ),
    ]:
        r = await client.put(path, json=body, headers=headers)
        assert 400 <= r.status_code < 500, r.text
    for password, status in [(PASSWORD, 200), ("a fine new passphrase", 401)]:
        r = await client.post(
            "/v1/credentials/verify",
            json={"username": "alice", "password": password},
            headers=verifier,
        )
        assert r.status_code == status, r.text


async def test_a_weak_new_password_is_named_new_password(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    r = await client.put(
        "/v1/users/me/password",
        json={"current_password": PASSWORD, "new_password": "short"},
        headers=seeded.alice,
    )
    assert r.status_code == 422 and r.json()["error"] == "weak_password"
    assert r.json()["error_description"].startswith("new_password:")
