"""Text no database can store (NUL bytes, lone surrogates, control characters) is a 422 that
names the field, or an ordinary "no such user", on SQLite and Postgres: never a 500, and
nothing is written."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from authbus.user.service import UserService
from tests.integration.user.conftest import PASSWORD

# JSON can carry both; Postgres refuses NUL in text, and a lone surrogate is not UTF-8 at all.
NUL = "\u0000"
SURROGATE = "\ud800"
BAD_TEXT = pytest.mark.parametrize(
    "bad", [NUL, SURROGATE, "\u001b"], ids=["nul", "surrogate", "esc"]
)


async def post_json(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]
) -> httpx.Response:
    """POST `body` as ASCII JSON: a lone surrogate goes as its `\\ud800` escape, as any JSON
    encoder sends it."""
    return await client.post(
        url,
        content=json.dumps(body).encode(),
        headers={**headers, "Content-Type": "application/json"},
    )


async def audit_size(app: FastAPI) -> int:
    service: UserService = app.state.user_service
    return len(await service.list_audit(limit=500))


@BAD_TEXT
async def test_bad_text_in_an_email_is_a_422(
    client: httpx.AsyncClient, admin: dict[str, str], bad: str
) -> None:
    r = await post_json(
        client,
        "/v1/users",
        {"username": "alice", "password": PASSWORD, "email": f"al{bad}ice@example.com"},
        admin,
    )
    assert r.status_code == 422, r.text
    # The JSON parser already refuses a lone surrogate; the policy refuses the rest.
    assert r.json()["error"] in ("invalid_email", "validation_error")
    assert r.json()["error_description"].startswith("email:")
    assert (await client.get("/v1/users", headers=admin)).json()["items"] == []


# In a URL: a NUL, an escape, and bytes that are not UTF-8 (a surrogate cannot be encoded).
BAD_QUERY = pytest.mark.parametrize("bad", ["%00", "%1B", "%ED%A0%80"], ids=["nul", "esc", "raw"])


@BAD_QUERY
async def test_bad_text_in_a_username_prefix_filter_is_a_422(
    client: httpx.AsyncClient, admin: dict[str, str], bad: str
) -> None:
    r = await client.get(f"/v1/users?username_prefix=al{bad}", headers=admin)
    assert r.status_code == 422, r.text
    assert "username_prefix" in r.json()["error_description"]


@BAD_QUERY
async def test_bad_text_in_an_exact_username_filter_finds_nobody(
    client: httpx.AsyncClient, admin: dict[str, str], bad: str
) -> None:
    r = await client.get(f"/v1/users?username=al{bad}ice", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["items"] == []


@BAD_TEXT
async def test_bad_text_in_a_role_description_is_a_422(
    client: httpx.AsyncClient, admin: dict[str, str], app: FastAPI, bad: str
) -> None:
    before = await audit_size(app)
    made = await post_json(
        client, "/v1/roles", {"name": "clerks", "description": f"desk{bad}"}, admin
    )
    assert made.status_code == 422, made.text
    assert made.json()["error_description"].startswith("description:")
    assert (await client.get("/v1/roles", headers=admin)).json()["items"] == []
    assert await audit_size(app) == before

    await client.post("/v1/roles", json={"name": "clerks"}, headers=admin)
    patched = await client.patch(
        "/v1/roles/clerks",
        content=json.dumps({"description": f"desk{bad}"}).encode(),
        headers={**admin, "Content-Type": "application/json"},
    )
    assert patched.status_code == 422, patched.text
    assert (await client.get("/v1/roles/clerks", headers=admin)).json()["description"] == ""


async def test_a_role_description_may_span_lines(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    made = await client.post(
        "/v1/roles",
        json={"name": "clerks", "description": "Order desk.\n\tReads orders."},
        headers=admin,
    )
    assert made.status_code == 201, made.text


@pytest.mark.parametrize("bad", [NUL, "\u001b"], ids=["nul", "esc"])
async def test_a_login_with_bad_text_in_the_username_is_invalid_credentials(
    client: httpx.AsyncClient, verifier: dict[str, str], app: FastAPI, bad: str
) -> None:
    before = await audit_size(app)
    r = await post_json(
        client,
        "/v1/credentials/verify",
        {"username": f"ali{bad}ce", "password": PASSWORD},
        verifier,
    )
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "invalid_credentials"
    # The failed attempt is audited, with the name escaped so any database can hold it.
    service: UserService = app.state.user_service
    entries = await service.list_audit(limit=500)
    assert len(entries) == before + 1
    tried = entries[0].details["username"]
    assert isinstance(tried, str) and tried.startswith("ali\\") and bad not in tried


@BAD_TEXT
async def test_bad_text_in_the_client_address_is_a_422(
    client: httpx.AsyncClient, verifier: dict[str, str], bad: str
) -> None:
    r = await post_json(
        client,
        "/v1/credentials/verify",
        {"username": "alice", "password": PASSWORD, "client_address": f"10.0.0.1{bad}"},
        verifier,
    )
    assert r.status_code == 422, r.text
    assert "client_address" in r.text


async def test_a_login_with_a_lone_surrogate_is_a_422_naming_the_field(
    client: httpx.AsyncClient, verifier: dict[str, str]
) -> None:
    r = await post_json(
        client,
        "/v1/credentials/verify",
        {"username": f"ali{SURROGATE}ce", "password": PASSWORD},
        verifier,
    )
    assert r.status_code == 422, r.text
    assert r.json()["error_description"].startswith("username:")
