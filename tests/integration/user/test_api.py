"""The user service over HTTP (httpx + ASGI transport), on SQLite and Postgres."""

from __future__ import annotations

import uuid
from typing import Any

import bcrypt
import httpx
from fastapi import FastAPI

from authbus.user.domain import UserChanges, utcnow
from authbus.user.service import UserService
from tests.integration.user.conftest import PASSWORD
from tests.support.tokens import TokenMinter


async def create(
    client: httpx.AsyncClient, headers: dict[str, str], username: str = "alice", **body: Any
) -> dict[str, Any]:
    r = await client.post(
        "/v1/users", json={"username": username, "password": PASSWORD, **body}, headers=headers
    )
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def user_count(app: FastAPI) -> int:
    service: UserService = app.state.user_service
    return len((await service.list_users(limit=200)).items)


async def audit_count(app: FastAPI) -> int:
    service: UserService = app.state.user_service
    return len(await service.list_audit(limit=200))


# -- creating and reading --------------------------------------------------------------------


async def test_create_then_read(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    made = await create(client, admin, email="alice@example.com", permissions=["orders:read"])
    assert made["username"] == "alice" and made["email"] == "alice@example.com"
    assert made["effective_permissions"] == ["orders:read"]
    assert "password" not in made and "password_hash" not in made
    got = await client.get(f"/v1/users/{made['id']}", headers=admin)
    assert got.status_code == 200 and got.json() == made
    listed = await client.get("/v1/users", headers=admin)
    assert [u["id"] for u in listed.json()["items"]] == [made["id"]]


async def test_me_gives_the_tokens_user(
    client: httpx.AsyncClient, admin: dict[str, str], minter: TokenMinter
) -> None:
    made = await create(client, admin)
    token = minter.mint(made["id"], [])
    r = await client.get("/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["id"] == made["id"]
    # Users may read their own record by id without users:admin, not anyone else's.
    own = await client.get(f"/v1/users/{made['id']}", headers={"Authorization": f"Bearer {token}"})
    assert own.status_code == 200
    other = await client.get(
        f"/v1/users/{uuid.uuid4()}", headers={"Authorization": f"Bearer {token}"}
    )
    assert other.status_code == 403 and other.json()["missing_scopes"] == ["users:admin"]


async def test_me_with_a_client_token_is_user_not_found(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    r = await client.get("/v1/users/me", headers=admin)
    assert r.status_code == 404 and r.json()["error"] == "user_not_found"


# -- bad input never writes ------------------------------------------------------------------


async def test_malformed_json_is_400(
    client: httpx.AsyncClient, admin: dict[str, str], app: FastAPI
) -> None:
    r = await client.post(
        "/v1/users",
        content=b'{"username": "alice", "password": ',
        headers={**admin, "Content-Type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert await user_count(app) == 0 and await audit_count(app) == 0


async def test_username_collision_ignoring_case_is_409(
    client: httpx.AsyncClient, admin: dict[str, str], app: FastAPI
) -> None:
    await create(client, admin, "Alice")
    r = await client.post(
        "/v1/users", json={"username": "alice", "password": PASSWORD}, headers=admin
    )
    assert r.status_code == 409 and r.json()["error"] == "username_taken"
    assert await user_count(app) == 1 and await audit_count(app) == 1


async def test_no_token_is_401(client: httpx.AsyncClient, app: FastAPI) -> None:
    r = await client.post("/v1/users", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert await user_count(app) == 0


async def test_missing_scope_is_403(
    client: httpx.AsyncClient, minter: TokenMinter, app: FastAPI
) -> None:
    token = minter.mint("someone", ["users:verify"])
    r = await client.post(
        "/v1/users",
        json={"username": "alice", "password": PASSWORD},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 403 and r.json()["missing_scopes"] == ["users:admin"]
    assert await user_count(app) == 0


async def test_forged_token_is_401(
    client: httpx.AsyncClient, minter: TokenMinter, app: FastAPI
) -> None:
    token = minter.forge_unsigned("someone", ["users:admin"])
    r = await client.post(
        "/v1/users",
        json={"username": "alice", "password": PASSWORD},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 401
    assert await user_count(app) == 0


async def test_unknown_user_is_404(
    client: httpx.AsyncClient, admin: dict[str, str], app: FastAPI
) -> None:
    for method, path, body in [
        ("GET", f"/v1/users/{uuid.uuid4()}", None),
        ("PUT", f"/v1/users/{uuid.uuid4()}/permissions", {"permissions": ["a:b"]}),
        ("PATCH", f"/v1/users/{uuid.uuid4()}", {"disabled": True}),
        ("DELETE", f"/v1/users/{uuid.uuid4()}", None),
        ("PUT", f"/v1/users/{uuid.uuid4()}/password", {"password": "a new passphrase"}),
    ]:
        r = await client.request(method, path, json=body, headers=admin)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"] == "user_not_found"
    assert await user_count(app) == 0 and await audit_count(app) == 0


async def test_invalid_username_and_weak_password_are_422(
    client: httpx.AsyncClient, admin: dict[str, str], app: FastAPI
) -> None:
    r = await client.post(
        "/v1/users", json={"username": "a b", "password": PASSWORD}, headers=admin
    )
    assert r.status_code == 422 and r.json()["error"] == "invalid_username"
    assert "letters" in r.json()["error_description"]
    r = await client.post(
        "/v1/users", json={"username": "alice", "password": "password1"}, headers=admin
    )
    assert r.status_code == 422 and r.json()["error"] == "weak_password"
    assert "commonly used" in r.json()["error_description"]
    r = await client.post("/v1/users", json={"username": "alice"}, headers=admin)
    assert r.status_code == 422 and "password" in r.json()["error_description"]
    r = await client.post(
        "/v1/users", json={"username": "alice", "password": PASSWORD, "x": 1}, headers=admin
    )
    assert r.status_code == 422
    assert await user_count(app) == 0 and await audit_count(app) == 0


async def test_unknown_role_is_404_and_writes_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], app: FastAPI
) -> None:
    r = await client.post(
        "/v1/users",
        json={"username": "alice", "password": PASSWORD, "roles": ["ghost"]},
        headers=admin,
    )
    assert r.status_code == 404 and r.json()["error"] == "role_not_found"
    assert await user_count(app) == 0


# -- credentials -----------------------------------------------------------------------------


async def verify(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> httpx.Response:
    return await client.post("/v1/credentials/verify", json=body, headers=headers)


async def test_verify_gives_the_user(
    client: httpx.AsyncClient, admin: dict[str, str], verifier: dict[str, str]
) -> None:
    made = await create(client, admin, permissions=["orders:read"])
    r = await verify(
        client,
        verifier,
        username="ALICE",
        password=PASSWORD,
        scopes=["orders:read"],
        client_address="1.2.3.4",
    )
    assert r.status_code == 200, r.text
    u = r.json()["user"]
    assert u["id"] == made["id"] and u["effective_permissions"] == ["orders:read"]
    assert u["last_login_at"] is not None


async def test_unknown_user_and_wrong_password_answer_alike(
    client: httpx.AsyncClient, admin: dict[str, str], verifier: dict[str, str]
) -> None:
    await create(client, admin)
    unknown = await verify(client, verifier, username="nobody", password=PASSWORD)
    wrong = await verify(client, verifier, username="alice", password="not the password")
    assert unknown.status_code == wrong.status_code == 401
    assert (
        unknown.json()
        == wrong.json()
        == {
            "error": "invalid_credentials",
            "error_description": "invalid username or password",
        }
    )


async def test_verify_needs_users_verify(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create(client, admin)
    r = await verify(client, admin, username="alice", password=PASSWORD)
    assert r.status_code == 403 and r.json()["missing_scopes"] == ["users:verify"]


async def test_verify_reports_missing_scopes_and_disabled(
    client: httpx.AsyncClient, admin: dict[str, str], verifier: dict[str, str]
) -> None:
    made = await create(client, admin, permissions=["orders:read"])
    r = await verify(
        client, verifier, username="alice", password=PASSWORD, scopes=["orders:read", "x:y"]
    )
    assert r.status_code == 403
    assert r.json()["error"] == "insufficient_rights" and r.json()["missing_scopes"] == ["x:y"]
    await client.patch(f"/v1/users/{made['id']}", json={"disabled": True}, headers=admin)
    r = await verify(client, verifier, username="alice", password=PASSWORD)
    assert r.status_code == 403 and r.json()["error"] == "user_disabled"


async def test_failed_verifies_are_throttled_with_retry_after(
    client: httpx.AsyncClient, admin: dict[str, str], verifier: dict[str, str]
) -> None:
    await create(client, admin)
    for _ in range(4):
        r = await verify(
            client, verifier, username="alice", password="wrong password", client_address="9.9.9.9"
        )
        assert r.status_code == 401
    r = await verify(
        client, verifier, username="alice", password=PASSWORD, client_address="9.9.9.9"
    )
    assert r.status_code == 429 and r.json()["error"] == "too_many_attempts"
    assert int(r.headers["Retry-After"]) >= 1
    ok = await verify(
        client, verifier, username="alice", password=PASSWORD, client_address="8.8.8.8"
    )
    assert ok.status_code == 200


# -- updates, passwords, roles, audit --------------------------------------------------------


async def test_permissions_update_and_delete(
    client: httpx.AsyncClient, admin: dict[str, str], verifier: dict[str, str]
) -> None:
    made = await create(client, admin, email="a@example.com")
    r = await client.put(
        f"/v1/users/{made['id']}/permissions", json={"permissions": ["b:c", "a:b"]}, headers=admin
    )
    assert r.status_code == 200 and r.json()["permissions"] == ["a:b", "b:c"]
    r = await client.patch(f"/v1/users/{made['id']}", json={"email": None}, headers=admin)
    assert r.status_code == 200 and r.json()["email"] is None
    r = await client.delete(f"/v1/users/{made['id']}", headers=admin)
    assert r.status_code == 204
    r = await verify(client, verifier, username="alice", password=PASSWORD)
    assert r.status_code == 401


async def test_change_own_password(
    client: httpx.AsyncClient, admin: dict[str, str], minter: TokenMinter, verifier: dict[str, str]
) -> None:
    made = await create(client, admin)
    me = {"Authorization": f"Bearer {minter.mint(made['id'])}"}
    r = await client.put(
        "/v1/users/me/password",
        json={"current_password": "wrong password", "new_password": "a brand new passphrase"},
        headers=me,
    )
    assert r.status_code == 403 and r.json()["error"] == "invalid_current_password"
    r = await client.put(
        "/v1/users/me/password",
        json={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
        headers=me,
    )
    assert r.status_code == 204
    r = await verify(client, verifier, username="alice", password="a brand new passphrase")
    assert r.status_code == 200


async def test_admin_resets_a_password(
    client: httpx.AsyncClient, admin: dict[str, str], verifier: dict[str, str]
) -> None:
    made = await create(client, admin)
    r = await client.put(
        f"/v1/users/{made['id']}/password", json={"password": "reset passphrase"}, headers=admin
    )
    assert r.status_code == 204
    r = await verify(client, verifier, username="alice", password="reset passphrase")
    assert r.status_code == 200


async def test_roles_drive_effective_permissions(
    client: httpx.AsyncClient, admin: dict[str, str], verifier: dict[str, str]
) -> None:
    r = await client.post(
        "/v1/roles", json={"name": "sales", "permissions": ["orders:read"]}, headers=admin
    )
    assert r.status_code == 201
    assert (
        await client.post("/v1/roles", json={"name": "sales"}, headers=admin)
    ).status_code == 409
    made = await create(client, admin, roles=["sales"])
    assert made["effective_permissions"] == ["orders:read"]
    r = await client.patch(
        "/v1/roles/sales", json={"permissions": ["orders:read", "orders:write"]}, headers=admin
    )
    assert r.status_code == 200
    r = await verify(client, verifier, username="alice", password=PASSWORD, scopes=["orders:write"])
    assert r.status_code == 200
    assert (await client.get("/v1/roles", headers=admin)).json()["items"][0]["name"] == "sales"
    assert (await client.delete("/v1/roles/sales", headers=admin)).status_code == 204
    assert (await client.get("/v1/roles/sales", headers=admin)).status_code == 404
    got = await client.get(f"/v1/users/{made['id']}", headers=admin)
    assert got.json()["roles"] == [] and got.json()["effective_permissions"] == []


async def test_list_pages_with_cursor_and_filters(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    for name in ["erin", "dave", "carol", "bob", "alice"]:
        await create(client, admin, name, permissions=["x:y"] if name in ("bob", "dave") else [])
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/users", params=params, headers=admin)).json()
        seen += [u["username"] for u in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["alice", "bob", "carol", "dave", "erin"]
    r = await client.get("/v1/users", params={"permission": "x:y"}, headers=admin)
    assert [u["username"] for u in r.json()["items"]] == ["bob", "dave"]
    r = await client.get("/v1/users", params={"username_prefix": "CA"}, headers=admin)
    assert [u["username"] for u in r.json()["items"]] == ["carol"]
    r = await client.get("/v1/users", params={"username": "Dave"}, headers=admin)
    assert [u["username"] for u in r.json()["items"]] == ["dave"]
    r = await client.get("/v1/users", params={"cursor": "!!"}, headers=admin)
    assert r.status_code == 422 and r.json()["error"] == "invalid_cursor"


async def test_audit_lists_admin_changes(
    client: httpx.AsyncClient, admin: dict[str, str], minter: TokenMinter
) -> None:
    made = await create(client, admin)
    await client.patch(f"/v1/users/{made['id']}", json={"disabled": True}, headers=admin)
    r = await client.get("/v1/audit", params={"limit": 1}, headers=admin)
    assert r.status_code == 200
    body = r.json()
    assert [e["action"] for e in body["items"]] == ["user.updated"]
    assert body["items"][0]["actor"] == "authbus-admin"
    older = await client.get("/v1/audit", params={"before": body["next_before"]}, headers=admin)
    assert [e["action"] for e in older.json()["items"]] == ["user.created"]
    user_token = minter.mint(made["id"], [])
    r = await client.get("/v1/audit", headers={"Authorization": f"Bearer {user_token}"})
    assert r.status_code == 403


async def test_readiness_checks_the_database(client: httpx.AsyncClient) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"]["database"] == "ok"


async def test_disabled_user_cannot_use_me(
    client: httpx.AsyncClient, admin: dict[str, str], minter: TokenMinter
) -> None:
    made = await create(client, admin)
    await client.patch(f"/v1/users/{made['id']}", json={"disabled": True}, headers=admin)
    me = {"Authorization": f"Bearer {minter.mint(made['id'])}"}
    r = await client.get("/v1/users/me", headers=me)
    assert r.status_code == 403 and r.json()["error"] == "user_disabled"


async def test_bcrypt_hash_is_upgraded_in_the_database_at_login(
    client: httpx.AsyncClient, admin: dict[str, str], verifier: dict[str, str], app: FastAPI
) -> None:
    made = await create(client, admin)
    service: UserService = app.state.user_service
    legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    await service.repository.update_user(
        uuid.UUID(made["id"]), UserChanges(updated_at=utcnow(), password_hash=legacy)
    )
    r = await verify(client, verifier, username="alice", password=PASSWORD)
    assert r.status_code == 200
    stored = await service.repository.get_user(uuid.UUID(made["id"]))
    assert stored is not None and stored.password_hash.startswith("$argon2id$")


async def test_me_for_a_deleted_user_is_404(client: httpx.AsyncClient, minter: TokenMinter) -> None:
    token = minter.mint(str(uuid.uuid4()))
    r = await client.get("/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 404 and r.json()["error"] == "user_not_found"


async def test_openapi_documents_the_routes(client: httpx.AsyncClient) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for path in (
        "/v1/users",
        "/v1/users/me",
        "/v1/users/me/password",
        "/v1/users/{user_id}",
        "/v1/users/{user_id}/permissions",
        "/v1/users/{user_id}/roles",
        "/v1/users/{user_id}/password",
        "/v1/credentials/verify",
        "/v1/roles",
        "/v1/roles/{name}",
        "/v1/audit",
    ):
        assert path in paths


def login_counts(text: str) -> dict[str, float]:
    """`authbus_user_logins_total` by outcome, from a /metrics page."""
    prefix = 'authbus_user_logins_total{outcome="'
    counts = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            outcome, _, value = line[len(prefix) :].partition('"} ')
            counts[outcome] = float(value)
    return counts


async def test_logins_are_counted_by_outcome(
    client: httpx.AsyncClient, admin: dict[str, str], verifier: dict[str, str]
) -> None:
    before = login_counts((await client.get("/metrics")).text)
    # Every outcome is exported from the start.
    assert before == dict.fromkeys(
        ["ok", "invalid_credentials", "insufficient_rights", "disabled", "throttled"], 0.0
    )
    made = await create(client, admin, permissions=["orders:read"])
    assert (await verify(client, verifier, username="alice", password=PASSWORD)).status_code == 200
    r = await verify(client, verifier, username="alice", password=PASSWORD, scopes=["x:y"])
    assert r.status_code == 403
    # Three free attempts (the fixture's setting), then the pair is throttled.
    for _ in range(3):
        r = await verify(client, verifier, username="nobody", password="wrong password")
        assert r.status_code == 401
    r = await verify(client, verifier, username="nobody", password="wrong password")
    assert r.status_code == 401
    r = await verify(client, verifier, username="nobody", password="wrong password")
    assert r.status_code == 429
    await client.patch(f"/v1/users/{made['id']}", json={"disabled": True}, headers=admin)
    r = await verify(client, verifier, username="alice", password=PASSWORD)
    assert r.status_code == 403
    assert login_counts((await client.get("/metrics")).text) == {
        "ok": 1.0,
        "invalid_credentials": 4.0,
        "insufficient_rights": 1.0,
        "disabled": 1.0,
        "throttled": 1.0,
    }


async def test_login_verdicts_are_audited_without_the_password(
    client: httpx.AsyncClient, admin: dict[str, str], verifier: dict[str, str]
) -> None:
    made = await create(client, admin)
    await verify(client, verifier, username="ALICE", password=PASSWORD, client_address="1.2.3.4")
    await verify(client, verifier, username="alice", password="wrong password")
    await verify(client, verifier, username="nobody", password="wrong password")
    r = await client.get("/v1/audit", params={"limit": 3}, headers=admin)
    entries = r.json()["items"]
    assert [(e["action"], e["target_id"], e["details"]["outcome"]) for e in entries] == [
        ("login.failed", "nobody", "invalid_credentials"),
        ("login.failed", "alice", "invalid_credentials"),
        ("login.succeeded", made["id"], "ok"),
    ]
    assert entries[2]["details"]["client_address"] == "1.2.3.4"
    assert entries[2]["actor"] == made["id"]
    assert "wrong password" not in r.text and PASSWORD not in r.text
