"""/v1/clients: administration with the clients:admin scope."""

from __future__ import annotations

from .conftest import Env


async def admin_headers(env: Env) -> dict[str, str]:
    return {"Authorization": f"Bearer {await env.client_token('admin', 'clients:admin')}"}


async def test_create_shows_secret_once_and_it_works(env: Env) -> None:
    headers = await admin_headers(env)
    resp = await env.http.post(
        "/v1/clients",
        json={
            "client_id": "new-svc",
            "name": "New",
            "grant_types": ["client_credentials"],
            "scopes": ["events:read"],
        },
        headers=headers,
    )
    assert resp.status_code == 201, resp.text
    secret = resp.json()["client_secret"]
    assert "secret_hash" not in resp.json()
    shown = await env.http.get("/v1/clients/new-svc", headers=headers)
    assert "client_secret" not in shown.json()
    token = await env.http.post(
        "/token", data={"grant_type": "client_credentials"}, headers=env.basic("new-svc", secret)
    )
    assert token.status_code == 200


async def test_requires_clients_admin_scope(env: Env) -> None:
    none = await env.http.get("/v1/clients")
    assert none.status_code == 401
    weak = await env.client_token("admin", "events:read")
    resp = await env.http.get("/v1/clients", headers={"Authorization": f"Bearer {weak}"})
    assert resp.status_code == 403
    assert resp.json()["missing_scopes"] == ["clients:admin"]


async def test_revoked_admin_token_is_refused(env: Env) -> None:
    token = await env.client_token("admin", "clients:admin")
    await env.http.post("/revoke", data={"token": token}, headers=env.basic("admin"))
    resp = await env.http.get("/v1/clients", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401


async def test_redirect_uri_rules_enforced(env: Env) -> None:
    headers = await admin_headers(env)
    for uri in ("http://app.example.com/cb", "https://a.example/cb#x", "/relative"):
        resp = await env.http.post(
            "/v1/clients",
            json={"client_id": "bad", "name": "Bad", "redirect_uris": [uri]},
            headers=headers,
        )
        assert resp.status_code == 422, uri
        assert resp.json()["error"] == "validation_error"


async def test_update_delete_and_conflict(env: Env) -> None:
    headers = await admin_headers(env)
    body = {
        "client_id": "pub",
        "name": "Pub",
        "type": "public",
        "redirect_uris": ["http://127.0.0.1/cb"],
        "scopes": ["orders:read"],
    }
    created = await env.http.post("/v1/clients", json=body, headers=headers)
    assert created.status_code == 201
    assert "client_secret" not in created.json()
    dup = await env.http.post("/v1/clients", json=body, headers=headers)
    assert dup.status_code == 409
    body["name"] = "Renamed"
    updated = await env.http.put("/v1/clients/pub", json=body, headers=headers)
    assert updated.json()["name"] == "Renamed"
    listed = await env.http.get("/v1/clients", headers=headers)
    assert "pub" in {c["client_id"] for c in listed.json()["clients"]}
    assert (await env.http.delete("/v1/clients/pub", headers=headers)).status_code == 204
    assert (await env.http.get("/v1/clients/pub", headers=headers)).status_code == 404
    assert (await env.http.delete("/v1/clients/pub", headers=headers)).status_code == 404


async def test_reset_secret(env: Env) -> None:
    headers = await admin_headers(env)
    await env.client_token("svc")  # the client is now in the repository's cache
    resp = await env.http.post("/v1/clients/svc/secret", headers=headers)
    new = resp.json()["client_secret"]
    old = await env.http.post(
        "/token", data={"grant_type": "client_credentials"}, headers=env.basic("svc")
    )
    assert old.status_code == 401
    ok = await env.http.post(
        "/token", data={"grant_type": "client_credentials"}, headers=env.basic("svc", new)
    )
    assert ok.status_code == 200
