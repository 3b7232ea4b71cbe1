"""The consent form answers the request that was checked, never the fields it carries.

A third-party client may be allowed `users:admin`; a user holding only `orders:read` signs in
for `orders:read` and is asked to consent. Whatever they change in the consent form (scope,
client, redirect URI, PKCE challenge, response type, state, resource...), the code issued is
the one for the request the user service checked.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from authbus.token.clients import ClientSpec
from authbus.token.pkce import s256_challenge

from .conftest import (
    VERIFIER,
    Env,
    FakeUserService,
    auth_params,
    fragment_of,
    hidden_fields,
    query_of,
    submit_login,
)

PARTNER_CB = "https://partner.example.com/cb"
PARTNER_OTHER_CB = "https://partner.example.com/other"
OTHER_CB = "https://other.example.com/cb"


@pytest.fixture
def users(users: FakeUserService) -> FakeUserService:
    users.add("dave", "dave-pw", "orders:read")
    return users


async def add_partners(env: Env) -> None:
    """Third-party clients allowed more than dave holds."""
    for spec in (
        ClientSpec(
            "partner",
            "Partner app",
            redirect_uris=(PARTNER_CB, PARTNER_OTHER_CB),
            scopes=("orders:read", "users:admin"),
            allow_implicit=True,
            audience="partner-api",
        ),
        ClientSpec(
            "other",
            "Other app",
            redirect_uris=(OTHER_CB,),
            scopes=("orders:read", "users:admin"),
        ),
    ):
        _, secret = await env.service.clients.create(spec)
        assert secret is not None
        env.secrets[spec.client_id] = secret


def partner_params(**overrides: str) -> dict[str, str]:
    base = {
        "client_id": "partner",
        "redirect_uri": PARTNER_CB,
        "state": "st-checked",
        "resource": "partner-api",
    }
    return auth_params(**{**base, **overrides})


async def consent_form(env: Env, **overrides: str) -> dict[str, str]:
    await add_partners(env)
    page = await submit_login(env.http, partner_params(**overrides), "dave", "dave-pw")
    assert page.status_code == 200, page.text
    assert "Allow access?" in page.text
    return hidden_fields(page.text)


def claims_of(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return data


async def exchange_as_partner(env: Env, location: str) -> httpx.Response:
    code = query_of(location)["code"]
    return await env.http.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": PARTNER_CB,
            "code_verifier": VERIFIER,
        },
        headers=env.basic("partner"),
    )


async def assert_issued_as_checked(env: Env, allowed: httpx.Response) -> None:
    """The answer is the code of the checked request: partner, PARTNER_CB, state, PKCE with
    VERIFIER, scope orders:read, audience partner-api."""
    assert allowed.status_code == 302, allowed.text
    location = allowed.headers["location"]
    assert location.startswith(PARTNER_CB + "?"), location
    assert query_of(location)["state"] == "st-checked"
    tokens = await exchange_as_partner(env, location)
    assert tokens.status_code == 200, tokens.text
    assert tokens.json()["scope"] == "orders:read"
    claims = claims_of(tokens.json()["access_token"])
    assert claims["scope"] == "orders:read"
    assert claims["client_id"] == "partner"
    assert claims["aud"] == "partner-api"
    assert claims["sub"] == "id-dave"


async def test_consent_cannot_widen_the_scope_the_user_was_checked_for(env: Env) -> None:
    form = await consent_form(env)
    allowed = await env.http.post(
        "/authorize", data={**form, "scope": "users:admin", "decision": "allow"}
    )
    await assert_issued_as_checked(env, allowed)


@pytest.mark.parametrize(
    ("field", "tampered"),
    [
        ("scope", "orders:read users:admin"),
        ("client_id", "other"),
        ("redirect_uri", PARTNER_OTHER_CB),
        ("code_challenge", s256_challenge("y" * 64)),
        ("code_challenge_method", "plain"),
        ("response_type", "token"),
        ("state", "st-attacker"),
        ("resource", "authbus"),
        ("nonce", "n-attacker"),  # not a parameter of ours: ignored either way
    ],
)
async def test_consent_cannot_change_any_field_of_the_checked_request(
    env: Env, field: str, tampered: str
) -> None:
    form = await consent_form(env)
    allowed = await env.http.post("/authorize", data={**form, field: tampered, "decision": "allow"})
    await assert_issued_as_checked(env, allowed)


async def test_consent_form_carries_only_the_handle_of_the_checked_request(env: Env) -> None:
    form = await consent_form(env)
    assert set(form) == {"csrf_token", "action", "consent_request"}


async def test_forged_consent_form_without_a_checked_request_issues_nothing(env: Env) -> None:
    form = await consent_form(env)
    forged = {
        k: v for k, v in partner_params(scope="users:admin").items() if k != "consent_request"
    }
    forged.update({"csrf_token": form["csrf_token"], "action": "consent", "decision": "allow"})
    resp = await env.http.post("/authorize", data=forged)
    assert resp.status_code == 400
    assert "location" not in resp.headers
    assert "expired or was already answered" in resp.text


async def test_a_consent_page_is_answered_once(env: Env) -> None:
    form = await consent_form(env)
    denied = await env.http.post("/authorize", data={**form, "decision": "deny"})
    assert denied.status_code == 302
    assert query_of(denied.headers["location"])["error"] == "access_denied"
    assert query_of(denied.headers["location"])["state"] == "st-checked"
    replay = await env.http.post("/authorize", data={**form, "decision": "allow"})
    assert replay.status_code == 400
    assert "location" not in replay.headers


async def test_denial_goes_to_the_checked_redirect_uri(env: Env) -> None:
    form = await consent_form(env)
    denied = await env.http.post(
        "/authorize",
        data={**form, "redirect_uri": PARTNER_OTHER_CB, "state": "x", "decision": "deny"},
    )
    location = denied.headers["location"]
    assert location.startswith(PARTNER_CB + "?")
    assert query_of(location) | {"error_description": ""} == {
        "error": "access_denied",
        "error_description": "",
        "state": "st-checked",
        "iss": env.settings.issuer,
    }


async def test_consent_is_bound_to_the_user_it_was_checked_for(env: Env) -> None:
    form = await consent_form(env)
    # Someone else signs in in the same browser: dave's session (and its page) ends.
    alice = await submit_login(env.http, auth_params(scope="orders:write"), "alice", "alice-pw")
    assert alice.status_code == 302
    resp = await env.http.post("/authorize", data={**form, "decision": "allow"})
    assert resp.status_code == 400
    assert "location" not in resp.headers


async def test_consent_page_of_a_signed_in_user_is_bound_too(env: Env) -> None:
    await consent_form(env)  # dave is signed in now (SSO), the first page left unanswered
    page = await env.http.get("/authorize", params=partner_params())
    assert "Allow access?" in page.text
    form = hidden_fields(page.text)
    allowed = await env.http.post(
        "/authorize",
        data={**form, "scope": "users:admin", "client_id": "other", "decision": "allow"},
    )
    await assert_issued_as_checked(env, allowed)


async def test_implicit_consent_keeps_the_checked_response_type(env: Env) -> None:
    await add_partners(env)
    params = partner_params(response_type="token", code_challenge="", code_challenge_method="")
    page = await submit_login(env.http, params, "dave", "dave-pw")
    form = hidden_fields(page.text)
    allowed = await env.http.post(
        "/authorize",
        data={**form, "response_type": "code", "scope": "users:admin", "decision": "allow"},
    )
    assert allowed.status_code == 302
    answer = fragment_of(allowed.headers["location"])
    assert answer["scope"] == "orders:read"
    assert claims_of(answer["access_token"])["scope"] == "orders:read"


# -- the login form: it is the check itself ---------------------------------------------------


async def test_login_form_checks_the_scope_it_submits(env: Env) -> None:
    """The login form's fields are validated and checked with the user service as they are
    submitted (a new request): asking for more than the user holds is denied."""
    await add_partners(env)
    page = await env.http.get("/authorize", params=partner_params())
    form = hidden_fields(page.text) | {"scope": "users:admin"}
    resp = await env.http.post(
        "/authorize", data={**form, "username": "dave", "password": "dave-pw"}
    )
    assert resp.status_code == 302
    assert query_of(resp.headers["location"])["error"] == "access_denied"


async def test_login_form_with_another_client_asks_that_clients_consent(env: Env) -> None:
    await add_partners(env)
    page = await env.http.get("/authorize", params=partner_params())
    form = hidden_fields(page.text)
    form |= {"client_id": "other", "redirect_uri": OTHER_CB, "resource": ""}
    resp = await env.http.post(
        "/authorize", data={**form, "username": "dave", "password": "dave-pw"}
    )
    assert resp.status_code == 200
    assert "Other app" in resp.text and "Allow access?" in resp.text


async def test_login_form_with_an_unregistered_redirect_uri_is_not_redirected(env: Env) -> None:
    await add_partners(env)
    page = await env.http.get("/authorize", params=partner_params())
    form = hidden_fields(page.text) | {"redirect_uri": "https://evil.example.com/cb"}
    resp = await env.http.post(
        "/authorize", data={**form, "username": "dave", "password": "dave-pw"}
    )
    assert resp.status_code == 400
    assert "location" not in resp.headers
