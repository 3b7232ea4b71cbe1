"""Client registration refuses text no database can hold (422 naming the field), built-in
clients cannot be deleted, and a client cannot be renamed by PUT.

Run on SQLite and Postgres (`database_url`), where a NUL would otherwise be a server error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from authbus.core.migrate import upgrade
from authbus.token.bootstrap import ensure_clients
from authbus.token.cli import client_app

from .conftest import Env, FakeUserService, make_settings, start_env

VALID: dict[str, Any] = {
    "client_id": "shop",
    "name": "Shop",
    "redirect_uris": ["https://shop.example.com/cb"],
    "scopes": ["orders:read"],
}

BAD_FIELDS = [
    ("name", "Shop\x00"),
    ("name", "Shop\x1b[31m red"),
    ("name", "line\nbreak"),
    ("name", "   "),
    ("audience", ""),
    ("audience", "orders\x00"),
    ("audience", "orders api"),
    ("audience", "orders\u0085"),
    ("redirect_uris", ["https://shop.example.com/cb\x00"]),
    ("redirect_uris", ["https://shop.example.com/c b"]),
    ("redirect_uris", ["https://shop.example.com/cb\r\nX-Injected: 1"]),
    ("scopes", ["orders:read\x00"]),
    ("scopes", ["orders:read\n"]),
    ("client_id", "shop\n"),
]


async def admin_headers(env: Env) -> dict[str, str]:
    return {"Authorization": f"Bearer {await env.client_token('admin', 'clients:admin')}"}


@pytest.mark.parametrize(("field", "value"), BAD_FIELDS)
async def test_registration_refuses_control_characters_naming_the_field(
    env: Env, field: str, value: object
) -> None:
    headers = await admin_headers(env)
    resp = await env.http.post("/v1/clients", json={**VALID, field: value}, headers=headers)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error_description"].startswith(f"{field}:"), resp.text
    # Nothing was written, and the database is fine.
    listed = await env.http.get("/v1/clients", headers=headers)
    assert listed.status_code == 200
    assert "shop" not in {c["client_id"] for c in listed.json()["clients"]}


@pytest.mark.parametrize(("field", "value"), [f for f in BAD_FIELDS if f[0] != "client_id"])
async def test_update_refuses_control_characters_naming_the_field(
    env: Env, field: str, value: object
) -> None:
    headers = await admin_headers(env)
    assert (await env.http.post("/v1/clients", json=VALID, headers=headers)).status_code == 201
    resp = await env.http.put("/v1/clients/shop", json={**VALID, field: value}, headers=headers)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error_description"].startswith(f"{field}:"), resp.text
    kept = (await env.http.get("/v1/clients/shop", headers=headers)).json()
    assert kept["name"] == "Shop" and kept["audience"] is None


async def test_empty_audience_never_reaches_a_token(env: Env) -> None:
    headers = await admin_headers(env)
    body = {"client_id": "m2m", "name": "M2M", "grant_types": ["client_credentials"]}
    resp = await env.http.post("/v1/clients", json={**body, "audience": ""}, headers=headers)
    assert resp.status_code == 422
    assert resp.json()["error_description"].startswith("audience:")


async def test_client_ids_no_client_can_have_are_unknown_not_errors(env: Env) -> None:
    headers = await admin_headers(env)
    for path in ("/v1/clients/a%00b", "/v1/clients/a%0Ab"):
        assert (await env.http.get(path, headers=headers)).status_code == 404
        assert (await env.http.delete(path, headers=headers)).status_code == 404
        assert (await env.http.post(f"{path}/secret", headers=headers)).status_code == 404
    page = await env.http.get("/authorize", params={"client_id": "a\x00b", "response_type": "code"})
    assert page.status_code == 400
    token = await env.http.post(
        "/token",
        data={"grant_type": "client_credentials", "client_id": "a\x00b", "client_secret": "x"},
    )
    assert token.status_code == 401


# -- built-in clients and renames ------------------------------------------------------------


@pytest.fixture
async def stack_env(tmp_path: Path, database_url: str, users: FakeUserService) -> Any:
    """The token service with the built-in clients `authbus bootstrap` creates."""
    settings = make_settings(tmp_path, database_url)
    async for env in start_env(settings, users):
        await ensure_clients(settings, {})
        yield env


@pytest.mark.parametrize(
    "client_id", ["authbus-admin", "user-service", "token-service", "event-service"]
)
async def test_builtin_clients_cannot_be_deleted(stack_env: Env, client_id: str) -> None:
    env = stack_env
    headers = await admin_headers(env)
    resp = await env.http.delete(f"/v1/clients/{client_id}", headers=headers)
    assert resp.status_code == 409, resp.text
    assert resp.json()["error"] == "conflict"
    assert "built in" in resp.json()["error_description"]
    assert (await env.http.get(f"/v1/clients/{client_id}", headers=headers)).status_code == 200


async def test_a_client_named_by_the_settings_cannot_be_deleted(
    tmp_path: Path, database_url: str, users: FakeUserService
) -> None:
    settings = make_settings(tmp_path, database_url, token={"client_id": "my-token-service"})
    async for env in start_env(settings, users):
        headers = await admin_headers(env)
        resp = await env.http.delete("/v1/clients/my-token-service", headers=headers)
        assert resp.status_code == 409
        # Ordinary clients still can be.
        assert (await env.http.delete("/v1/clients/svc", headers=headers)).status_code == 204


async def test_put_naming_another_client_is_refused(env: Env) -> None:
    headers = await admin_headers(env)
    assert (await env.http.post("/v1/clients", json=VALID, headers=headers)).status_code == 201
    body = {**VALID, "client_id": "svc", "name": "Renamed"}
    resp = await env.http.put("/v1/clients/shop", json=body, headers=headers)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error_description"].startswith("client_id:")
    assert (await env.http.get("/v1/clients/shop", headers=headers)).json()["name"] == "Shop"
    assert (await env.http.get("/v1/clients/svc", headers=headers)).json()["name"] == "Service"
    # The same id, or none, is the usual full replacement.
    same = await env.http.put("/v1/clients/shop", json={**VALID, "name": "Shop 2"}, headers=headers)
    assert same.status_code == 200 and same.json()["name"] == "Shop 2"
    no_id = {k: v for k, v in VALID.items() if k != "client_id"} | {"name": "Shop 3"}
    assert (await env.http.put("/v1/clients/shop", json=no_id, headers=headers)).status_code == 200


# -- the command line -------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    upgrade(database_url, "token")
    return {"AUTHBUS_DATA_DIR": str(tmp_path), "AUTHBUS_TOKEN__DATABASE_URL": database_url}


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--name", "Shop\x01"], "name"),
        (["--audience", ""], "audience"),
        (["--audience", "a\x7fb"], "audience"),
        (["--redirect-uri", "https://shop.example.com/c\tb"], "redirect_uris"),
    ],
)
def test_cli_create_refuses_control_characters_naming_the_field(
    cli_env: dict[str, str], args: list[str], field: str
) -> None:
    runner = CliRunner()
    base = ["create", "shop", "--redirect-uri", "https://shop.example.com/cb"]
    result = runner.invoke(client_app, [*base, *args], env=cli_env)
    assert result.exit_code == 2, result.output
    assert f"error: {field}:" in result.output
    listed = runner.invoke(client_app, ["list", "--json"], env=cli_env)
    assert json.loads(listed.stdout) == {"clients": []}


def test_cli_refuses_to_delete_builtin_clients(cli_env: dict[str, str]) -> None:
    runner = CliRunner()
    made = runner.invoke(
        client_app,
        ["create", "authbus-admin", "--grant-type", "client_credentials", "--json"],
        env=cli_env,
    )
    assert made.exit_code == 0, made.output
    result = runner.invoke(client_app, ["delete", "authbus-admin", "--yes"], env=cli_env)
    assert result.exit_code == 1
    assert "built in" in result.output
    listed = runner.invoke(client_app, ["list", "--json"], env=cli_env)
    assert [c["client_id"] for c in json.loads(listed.stdout)["clients"]] == ["authbus-admin"]
