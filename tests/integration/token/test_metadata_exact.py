"""The RFC 8414 metadata lists exactly what the server does: every advertised grant type,
response type, PKCE method and client authentication method is accepted where it applies,
and the ones it leaves out are refused. The JWKS is served with cache headers.

`implicit` is the one advertised grant type with no token request (RFC 6749 §4.2: the token
comes from the authorization endpoint); it is checked there, and the token endpoint must
refuse it like any grant it does not take.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from authbus.token.clients import ClientSpec

from .conftest import (
    ISSUER,
    VERIFIER,
    Env,
    FakeUserService,
    auth_params,
    fragment_of,
    make_settings,
    query_of,
    start_env,
    submit_login,
)

SPA_REDIRECT = "https://spa.example.com/cb"
# Grant types other servers take that this one does not (DESIGN.md: "No password grant").
NOT_OFFERED_GRANTS = (
    "password",
    "implicit",
    "urn:ietf:params:oauth:grant-type:device_code",
    "urn:ietf:params:oauth:grant-type:jwt-bearer",
    "urn:ietf:params:oauth:grant-type:saml2-bearer",
    "urn:ietf:params:oauth:grant-type:token-exchange",
)
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture
async def env(tmp_path: Path, database_url: str, users: FakeUserService) -> AsyncIterator[Env]:
    """The token service on SQLite and Postgres (the in-process token store)."""
    async for e in start_env(make_settings(tmp_path, database_url), users):
        yield e


async def metadata(env: Env) -> dict[str, Any]:
    resp = await env.http.get("/.well-known/oauth-authorization-server")
    assert resp.status_code == 200, resp.text
    meta: dict[str, Any] = resp.json()
    return meta


def path_of(url: str) -> str:
    assert url.startswith(ISSUER + "/"), url
    return urlsplit(url).path


async def token_error(env: Env, form: dict[str, str], **headers: str) -> tuple[int, str | None]:
    """(status, `error` or None on success) of a token request."""
    resp = await env.http.post("/token", data=form, headers=headers)
    if resp.status_code == 200:
        return 200, None
    error: str = resp.json()["error"]
    return resp.status_code, error


async def spa_token(env: Env) -> dict[str, Any]:
    """Tokens of the public client `spa`: code + PKCE, authenticated by client_id alone."""
    params = auth_params(client_id="spa", redirect_uri=SPA_REDIRECT)
    resp = await submit_login(env.http, params)
    assert resp.status_code == 302, resp.text
    code = query_of(resp.headers["location"])["code"]
    token = await env.http.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": SPA_REDIRECT,
            "code_verifier": VERIFIER,
            "client_id": "spa",
        },
    )
    assert token.status_code == 200, token.text
    body: dict[str, Any] = token.json()
    return body


# -- grant types ---------------------------------------------------------------------------


async def test_every_advertised_token_grant_is_taken_by_the_token_endpoint(env: Env) -> None:
    meta = await metadata(env)
    advertised = meta["grant_types_supported"]
    assert len(advertised) == len(set(advertised))
    # A client registered for each grant, so the answer is about the grant itself.
    client_for = {
        "authorization_code": "web",
        "refresh_token": "web",
        "client_credentials": "admin",
    }
    token_grants = [g for g in advertised if g != "implicit"]
    assert set(token_grants) <= set(client_for), f"a new grant to cover here: {token_grants}"
    for grant in token_grants:
        status, error = await token_error(
            env, {"grant_type": grant}, **env.basic(client_for[grant])
        )
        assert error != "unsupported_grant_type", (grant, status, error)


async def test_the_token_endpoint_refuses_every_grant_it_does_not_advertise(env: Env) -> None:
    advertised = set((await metadata(env))["grant_types_supported"])
    for grant in NOT_OFFERED_GRANTS:
        if grant != "implicit":
            assert grant not in advertised, grant
        for client in ("web", "admin"):
            status, error = await token_error(
                env,
                {"grant_type": grant, "username": "alice", "password": "alice-pw"},
                **env.basic(client),
            )
            assert (status, error) == (400, "unsupported_grant_type"), (grant, client)


async def test_the_advertised_token_grants_are_exactly_those_the_endpoint_takes(
    env: Env,
) -> None:
    advertised = set((await metadata(env))["grant_types_supported"]) - {"implicit"}
    candidates = advertised | set(NOT_OFFERED_GRANTS)
    taken = set()
    for grant in candidates:
        for client in ("web", "admin"):
            _, error = await token_error(env, {"grant_type": grant}, **env.basic(client))
            if error != "unsupported_grant_type":
                taken.add(grant)
    assert taken == advertised


async def test_implicit_is_advertised_because_the_authorization_endpoint_issues_it(
    env: Env,
) -> None:
    meta = await metadata(env)
    assert "implicit" in meta["grant_types_supported"]
    assert "token" in meta["response_types_supported"]
    params = auth_params(
        client_id="spa",
        redirect_uri=SPA_REDIRECT,
        response_type="token",
        code_challenge="",
        code_challenge_method="",
    )
    resp = await submit_login(env.http, params)
    assert resp.status_code == 302, resp.text
    fragment = urlsplit(resp.headers["location"]).fragment
    assert "access_token=" in fragment, resp.headers["location"]


# -- response types and PKCE ---------------------------------------------------------------


async def test_every_advertised_response_type_gets_the_login_page(env: Env) -> None:
    for response_type in (await metadata(env))["response_types_supported"]:
        extra = (
            {"code_challenge": "", "code_challenge_method": ""} if response_type == "token" else {}
        )
        params = auth_params(
            client_id="spa", redirect_uri=SPA_REDIRECT, response_type=response_type, **extra
        )
        page = await env.http.get("/authorize", params=params)
        assert page.status_code == 200, (response_type, page.status_code, page.text[:300])
        assert 'name="password"' in page.text


@pytest.mark.parametrize("response_type", ["id_token", "code token", "code id_token", "none"])
async def test_a_response_type_not_advertised_is_refused(env: Env, response_type: str) -> None:
    assert response_type not in (await metadata(env))["response_types_supported"]
    params = auth_params(client_id="spa", redirect_uri=SPA_REDIRECT, response_type=response_type)
    resp = await env.http.get("/authorize", params=params)
    assert resp.status_code == 302, resp.text
    location = resp.headers["location"]
    error = query_of(location).get("error") or fragment_of(location).get("error")
    assert error == "unsupported_response_type", location


async def test_code_challenge_methods_are_exactly_s256(env: Env) -> None:
    assert (await metadata(env))["code_challenge_methods_supported"] == ["S256"]
    page = await env.http.get("/authorize", params=auth_params())
    assert page.status_code == 200
    for method in ("plain", "S512", "s256"):
        resp = await env.http.get("/authorize", params=auth_params(code_challenge_method=method))
        assert resp.status_code == 302, (method, resp.text)
        assert query_of(resp.headers["location"])["error"] == "invalid_request", method


# -- client authentication -----------------------------------------------------------------


async def test_token_endpoint_auth_methods_are_exactly_those_advertised(env: Env) -> None:
    advertised = (await metadata(env))["token_endpoint_auth_methods_supported"]
    assert sorted(advertised) == ["client_secret_basic", "client_secret_post", "none"]
    cc = {"grant_type": "client_credentials"}
    # client_secret_basic
    assert await token_error(env, cc, **env.basic("admin")) == (200, None)
    # client_secret_post
    form = {**cc, "client_id": "admin", "client_secret": env.secrets["admin"]}
    assert await token_error(env, form) == (200, None)
    # none: a public client identified by client_id (code + PKCE)
    assert (await spa_token(env))["token_type"] == "Bearer"
    # Not advertised: a JWT client assertion (private_key_jwt / client_secret_jwt).
    assertion = {
        **cc,
        "client_id": "admin",
        "client_assertion_type": JWT_BEARER_ASSERTION,
        "client_assertion": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2ln",
    }
    assert await token_error(env, assertion) == (401, "invalid_client")
    # "none" is for public clients only: a confidential one without its secret is refused.
    assert await token_error(env, {**cc, "client_id": "admin"}) == (401, "invalid_client")


async def test_introspection_auth_methods_are_exactly_those_advertised(env: Env) -> None:
    meta = await metadata(env)
    assert path_of(meta["introspection_endpoint"]) == "/introspect"
    advertised = meta["introspection_endpoint_auth_methods_supported"]
    assert sorted(advertised) == ["client_secret_basic", "client_secret_post"]
    token = await env.client_token("svc")
    by_basic = await env.http.post("/introspect", data={"token": token}, headers=env.basic("admin"))
    assert by_basic.status_code == 200 and by_basic.json()["active"] is True
    by_post = await env.http.post(
        "/introspect",
        data={"token": token, "client_id": "admin", "client_secret": env.secrets["admin"]},
    )
    assert by_post.status_code == 200 and by_post.json()["active"] is True
    # "none" is not advertised for introspection: a public client is refused.
    by_public = await env.http.post("/introspect", data={"token": token, "client_id": "spa"})
    assert by_public.status_code in (400, 401), by_public.text
    assert "active" not in by_public.json()
    anonymous = await env.http.post("/introspect", data={"token": token})
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"


async def test_revocation_auth_methods_are_exactly_those_advertised(env: Env) -> None:
    meta = await metadata(env)
    assert path_of(meta["revocation_endpoint"]) == "/revoke"
    advertised = meta["revocation_endpoint_auth_methods_supported"]
    assert sorted(advertised) == ["client_secret_basic", "client_secret_post", "none"]

    async def active(token: str) -> bool:
        r = await env.http.post("/introspect", data={"token": token}, headers=env.basic("admin"))
        assert r.status_code == 200, r.text
        return bool(r.json()["active"])

    # client_secret_basic
    token = await env.client_token("svc")
    r = await env.http.post("/revoke", data={"token": token}, headers=env.basic("svc"))
    assert r.status_code == 200 and not await active(token)
    # client_secret_post
    token = await env.client_token("svc")
    r = await env.http.post(
        "/revoke", data={"token": token, "client_id": "svc", "client_secret": env.secrets["svc"]}
    )
    assert r.status_code == 200 and not await active(token)
    # none: the public client revokes its own token with its client_id
    token = (await spa_token(env))["access_token"]
    assert await active(token)
    r = await env.http.post("/revoke", data={"token": token, "client_id": "spa"})
    assert r.status_code == 200 and not await active(token)
    # Not advertised: a JWT client assertion.
    token = await env.client_token("svc")
    r = await env.http.post(
        "/revoke",
        data={
            "token": token,
            "client_id": "svc",
            "client_assertion_type": JWT_BEARER_ASSERTION,
            "client_assertion": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzdmMifQ.c2ln",
        },
    )
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert await active(token)


# -- endpoints and scopes ------------------------------------------------------------------


async def test_the_advertised_endpoints_are_served_under_the_issuer(env: Env) -> None:
    meta = await metadata(env)
    assert meta["issuer"] == ISSUER  # RFC 8414 §3.3
    assert path_of(meta["authorization_endpoint"]) == "/authorize"
    assert path_of(meta["token_endpoint"]) == "/token"
    jwks = await env.http.get(path_of(meta["jwks_uri"]))
    assert jwks.status_code == 200 and jwks.json()["keys"]
    for key in ("token_endpoint", "introspection_endpoint", "revocation_endpoint"):
        # Routed (not a 404): without client authentication, an OAuth error.
        r = await env.http.post(path_of(meta[key]), data={"token": "x", "grant_type": "x"})
        assert r.status_code == 401 and r.json()["error"] == "invalid_client", key
    page = await env.http.get(path_of(meta["authorization_endpoint"]), params=auth_params())
    assert page.status_code == 200


async def test_every_advertised_scope_can_be_granted(env: Env) -> None:
    scopes = (await metadata(env))["scopes_supported"]
    assert scopes and len(scopes) == len(set(scopes))
    _, secret = await env.service.clients.create(
        ClientSpec("scoper", "Scoper", grant_types=("client_credentials",), scopes=tuple(scopes))
    )
    assert secret is not None
    env.secrets["scoper"] = secret
    for scope in scopes:
        resp = await env.http.post(
            "/token",
            data={"grant_type": "client_credentials", "scope": scope},
            headers=env.basic("scoper"),
        )
        assert resp.status_code == 200, (scope, resp.text)
        assert resp.json()["scope"] == scope


# -- JWKS ----------------------------------------------------------------------------------


async def test_jwks_is_served_with_a_max_age(env: Env) -> None:
    resp = await env.http.get("/.well-known/jwks.json")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    cache_control = resp.headers["cache-control"].lower()
    assert "no-store" not in cache_control and "private" not in cache_control
    match = re.search(r"(?:^|[,\s])max-age=(\d+)", cache_control)
    assert match and int(match.group(1)) > 0, cache_control
    for key in resp.json()["keys"]:
        assert key["use"] == "sig" and key["kid"] and key["alg"] in ("ES256", "EdDSA")
        assert "d" not in key  # never the private part


async def test_unknown_grant_answer_is_an_rfc6749_error(env: Env) -> None:
    resp = await env.http.post(
        "/token", data={"grant_type": "password"}, headers=env.basic("admin")
    )
    assert resp.status_code == 400
    assert resp.headers["cache-control"] == "no-store"
    body = resp.json()
    assert body["error"] == "unsupported_grant_type"
    assert "password" in body["error_description"]
