"""The token service over HTTP: login, code exchange, errors, introspection, revocation."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import jwt as pyjwt
import pytest

from authbus.token.issuer import IssuedGrant

from .conftest import (
    ISSUER,
    VERIFIER,
    WEB_REDIRECT,
    Env,
    auth_params,
    csrf_of,
    fragment_of,
    hidden_fields,
    query_of,
    submit_login,
)


async def exchange(env: Env, code: str, **extra: str) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": WEB_REDIRECT,
        "code_verifier": VERIFIER,
        **extra,
    }
    return await env.http.post("/token", data=form, headers=env.basic("web"))


async def login_code(env: Env, **overrides: str) -> str:
    resp = await submit_login(env.http, auth_params(**overrides))
    assert resp.status_code == 302, resp.text
    location = resp.headers["location"]
    assert location.startswith(WEB_REDIRECT + "?")
    q = query_of(location)
    assert q["state"] == "st-123"
    assert q["iss"] == ISSUER
    return q["code"]


# --- the happy path ----------------------------------------------------------------------


async def test_login_code_exchange_and_pyjwt_verifies_with_jwks(env: Env) -> None:
    code = await login_code(env)
    resp = await exchange(env, code)
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    body = resp.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "orders:read"
    assert body["expires_in"] == 900

    jwks = (await env.http.get("/.well-known/jwks.json")).json()
    header = pyjwt.get_unverified_header(body["access_token"])
    assert header["typ"] == "at+jwt"
    key = pyjwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    claims = pyjwt.decode(
        body["access_token"], key.key, algorithms=["ES256"], audience="authbus", issuer=ISSUER
    )
    assert claims["sub"] == "id-alice"
    assert claims["client_id"] == "web"
    assert claims["scope"] == "orders:read"


async def test_login_page_is_accessible_and_has_no_script(env: Env) -> None:
    page = await env.http.get("/authorize", params=auth_params())
    assert page.status_code == 200
    html = page.text
    assert '<label for="username">' in html and 'id="username"' in html
    assert '<label for="password">' in html and 'id="password"' in html
    assert "<script" not in html
    assert csrf_of(html) == page.cookies["authbus_csrf"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"


async def test_user_service_is_called_with_own_token(env: Env) -> None:
    await login_code(env)
    (token,) = env.users.tokens
    claims = pyjwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == claims["client_id"] == "token-service"
    assert claims["scope"] == "users:verify"
    assert claims["aud"] == "authbus"


# --- bad input ---------------------------------------------------------------------------


async def test_unknown_client_gets_error_page_not_redirect(env: Env) -> None:
    resp = await env.http.get("/authorize", params=auth_params(client_id="nope"))
    assert resp.status_code == 400
    assert "text/html" in resp.headers["content-type"]
    assert "location" not in resp.headers


async def test_redirect_mismatch_gets_error_page(env: Env) -> None:
    for uri in (
        "https://evil.example/cb",
        WEB_REDIRECT + "/extra",
        WEB_REDIRECT + "?a=1",
        "https://app.example.com@evil.example/cb",
        "https://APP.example.com/cb",
        "https://app.example.com:444/cb",
        "https://app.example.com/x/../cb",
        "https://app.example.com/%63b",
    ):
        resp = await env.http.get("/authorize", params=auth_params(redirect_uri=uri))
        assert resp.status_code == 400, uri
        assert "location" not in resp.headers
        assert "not registered" in resp.text


async def test_post_with_bad_redirect_is_not_redirected(env: Env) -> None:
    page = await env.http.get("/authorize", params=auth_params())
    form = hidden_fields(page.text)
    form.update(username="alice", password="alice-pw", redirect_uri="https://evil.example/cb")
    resp = await env.http.post("/authorize", data=form)
    assert resp.status_code == 400
    assert "location" not in resp.headers


async def test_wrong_password_and_unknown_user_show_same_generic_error(env: Env) -> None:
    wrong = await submit_login(env.http, auth_params(), "alice", "nope")
    unknown = await submit_login(env.http, auth_params(), "nobody", "nope")
    for resp in (wrong, unknown):
        assert resp.status_code == 200
        assert "Invalid username or password." in resp.text
        assert "location" not in resp.headers
    assert wrong.text.replace("alice", "X") == unknown.text.replace("nobody", "X").replace(
        csrf_of(unknown.text), csrf_of(wrong.text)
    )


async def test_missing_scope_redirects_access_denied(env: Env) -> None:
    resp = await submit_login(env.http, auth_params(scope="orders:write"), "carol", "carol-pw")
    assert resp.status_code == 302
    q = query_of(resp.headers["location"])
    assert q["error"] == "access_denied"
    assert q["state"] == "st-123"
    assert q["iss"] == ISSUER  # RFC 9207: error responses name the issuer too


async def test_disabled_user_redirects_access_denied(env: Env) -> None:
    resp = await submit_login(env.http, auth_params(), "bob", "bob-pw")
    assert resp.status_code == 302
    assert query_of(resp.headers["location"])["error"] == "access_denied"


async def test_throttled_login_says_so(env: Env) -> None:
    env.users.throttled = True
    resp = await submit_login(env.http, auth_params())
    assert resp.status_code == 429
    assert "7 seconds" in resp.text


async def test_user_service_down_shows_temporarily_unavailable_page(env: Env) -> None:
    env.users.down = True
    resp = await submit_login(env.http, auth_params())
    # The user stays on the sign-in page (no redirect), told plainly, and can retry.
    assert resp.status_code == 503
    assert "location" not in resp.headers
    assert "retry-after" in resp.headers
    assert "temporarily unavailable" in resp.text
    assert 'name="password"' in resp.text
    env.users.down = False
    form = hidden_fields(resp.text)
    form.update(username="alice", password="alice-pw")
    again = await env.http.post("/authorize", data=form)
    assert again.status_code == 302
    assert "code" in query_of(again.headers["location"])


async def test_csrf_token_required(env: Env) -> None:
    page = await env.http.get("/authorize", params=auth_params())
    form = hidden_fields(page.text)
    form.update(username="alice", password="alice-pw", csrf_token="forged-token-value-123456")
    resp = await env.http.post("/authorize", data=form)
    assert resp.status_code == 400
    assert "location" not in resp.headers


async def test_unknown_response_type_redirects_error(env: Env) -> None:
    resp = await env.http.get("/authorize", params=auth_params(response_type="id_token"))
    assert resp.status_code == 302
    assert query_of(resp.headers["location"])["error"] == "unsupported_response_type"


async def test_wrong_client_secret_is_401(env: Env) -> None:
    resp = await env.http.post(
        "/token", data={"grant_type": "client_credentials"}, headers=env.basic("svc", "wrong")
    )
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"
    assert resp.headers["www-authenticate"].startswith("Basic")


async def test_unknown_grant_type(env: Env) -> None:
    resp = await env.http.post("/token", data={"grant_type": "password"}, headers=env.basic("svc"))
    assert resp.status_code == 400
    assert resp.json()["error"] == "unsupported_grant_type"


async def test_malformed_token_requests_are_400(env: Env) -> None:
    form_type = {"content-type": "application/x-www-form-urlencoded"}
    cases: list[tuple[bytes, dict[str, str]]] = [
        (b'{"grant_type": "client_credentials"}', {"content-type": "application/json"}),
        (b"grant_type=client_credentials&grant_type=client_credentials", form_type),
        (b"%%%&&&==", form_type),
    ]
    for content, ctype in cases:
        headers = {**ctype, **env.basic("svc")}
        resp = await env.http.post("/token", content=content, headers=headers)
        assert resp.status_code in (400, 401), resp.text
        assert resp.json()["error"] in ("invalid_request", "unsupported_grant_type")
    resp = await env.http.post("/token", data={}, headers=env.basic("svc"))
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_request"


async def test_a_form_with_too_many_fields_is_400_before_anything_else(env: Env) -> None:
    fields = "&".join(f"f{i}=x" for i in range(60))
    resp = await env.http.post(
        "/token",
        content=f"grant_type=client_credentials&{fields}".encode(),
        headers={"content-type": "application/x-www-form-urlencoded", **env.basic("svc")},
    )
    assert resp.status_code == 400, resp.text
    assert resp.json() == {"error": "invalid_request", "error_description": "malformed form body"}


# --- client credentials, introspection, revocation --------------------------------------


async def test_client_credentials_post_auth(env: Env) -> None:
    resp = await env.http.post(
        "/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "svc",
            "client_secret": env.secrets["svc"],
        },
    )
    assert resp.status_code == 200
    assert "refresh_token" not in resp.json()


async def test_introspect_and_revoke(env: Env) -> None:
    body = (await exchange(env, await login_code(env))).json()
    intro = await env.http.post(
        "/introspect", data={"token": body["access_token"]}, headers=env.basic("svc")
    )
    assert intro.status_code == 200
    assert intro.json()["active"] is True
    assert intro.json()["sub"] == "id-alice"
    refresh_intro = await env.http.post(
        "/introspect", data={"token": body["refresh_token"]}, headers=env.basic("web")
    )
    assert refresh_intro.json()["active"] is True
    assert refresh_intro.json()["token_type"] == "refresh_token"
    # Another client learns nothing about someone else's refresh token.
    foreign = await env.http.post(
        "/introspect", data={"token": body["refresh_token"]}, headers=env.basic("svc")
    )
    assert foreign.json() == {"active": False}

    revoked = await env.http.post(
        "/revoke", data={"token": body["refresh_token"]}, headers=env.basic("web")
    )
    assert revoked.status_code == 200
    for token in (body["access_token"], body["refresh_token"]):
        resp = await env.http.post("/introspect", data={"token": token}, headers=env.basic("svc"))
        assert resp.json() == {"active": False}


async def test_revoke_unknown_token_is_200(env: Env) -> None:
    resp = await env.http.post("/revoke", data={"token": "nonsense"}, headers=env.basic("web"))
    assert resp.status_code == 200


async def test_introspect_needs_client_auth(env: Env) -> None:
    resp = await env.http.post("/introspect", data={"token": "x"})
    assert resp.status_code == 401
    public = await env.http.post("/introspect", data={"token": "x", "client_id": "spa"})
    assert public.status_code == 400


async def test_refresh_flow_and_reuse_detection(env: Env) -> None:
    body = (await exchange(env, await login_code(env))).json()
    form = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    second = await env.http.post("/token", data=form, headers=env.basic("web"))
    assert second.status_code == 200
    # Within the grace period (10 s) a retry (the response was lost) gets the same new token.
    again = await env.http.post("/token", data=form, headers=env.basic("web"))
    assert again.status_code == 200
    new = second.json()["refresh_token"]
    assert again.json()["refresh_token"] == new
    ok = await env.http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": new},
        headers=env.basic("web"),
    )
    assert ok.status_code == 200
    # Once the new token has been used, the old one is reuse: refused, and the whole
    # family is revoked (RFC 9700 §4.14.2), the newest tokens included.
    late = await env.http.post("/token", data=form, headers=env.basic("web"))
    assert late.status_code == 400
    assert late.json()["error"] == "invalid_grant"
    for token in (ok.json()["refresh_token"], ok.json()["access_token"]):
        assert await introspect_as(env, token, "web") is False


async def test_code_reuse_revokes_first_tokens(env: Env) -> None:
    code = await login_code(env)
    first = (await exchange(env, code)).json()
    second = await exchange(env, code)
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    resp = await env.http.post(
        "/introspect", data={"token": first["access_token"]}, headers=env.basic("svc")
    )
    assert resp.json()["active"] is False


async def test_pkce_mismatch_over_http(env: Env) -> None:
    code = await login_code(env)
    resp = await exchange(env, code, code_verifier="y" * 64)
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_grant"


# --- implicit, SSO, consent, logout -----------------------------------------------------


async def test_implicit_flow_token_in_fragment(env: Env) -> None:
    params = {
        "response_type": "token",
        "client_id": "spa",
        "redirect_uri": "https://spa.example.com/cb",
        "scope": "orders:read",
        "state": "imp",
    }
    resp = await submit_login(env.http, params)
    assert resp.status_code == 302
    location = resp.headers["location"]
    assert "?" not in location
    frag = fragment_of(location)
    assert frag["state"] == "imp"
    assert frag["iss"] == ISSUER
    assert frag["access_token"]


async def test_implicit_denied_in_fragment(env: Env) -> None:
    params = {
        "response_type": "token",
        "client_id": "spa",
        "redirect_uri": "https://spa.example.com/cb",
        "scope": "orders:read",
        "state": "imp",
    }
    resp = await submit_login(env.http, params, "bob", "bob-pw")
    assert fragment_of(resp.headers["location"])["error"] == "access_denied"


async def test_sso_cookie_skips_form_then_logout(env: Env) -> None:
    first = await submit_login(env.http, auth_params())
    assert first.status_code == 302
    cookie = first.headers["set-cookie"]
    assert "authbus_sso=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    again = await env.http.get("/authorize", params=auth_params())
    assert again.status_code == 302
    assert "code" in query_of(again.headers["location"])
    assert len(env.users.tokens) == 1  # no second password check

    page = await env.http.get("/logout")
    out = await env.http.post("/logout", data={"csrf_token": csrf_of(page.text)})
    assert out.status_code == 200
    after = await env.http.get("/authorize", params=auth_params())
    assert after.status_code == 200  # the form again


async def test_consent_for_third_party_client(env: Env) -> None:
    params = auth_params(client_id="thirdparty", redirect_uri="https://third.example.com/cb")
    consent = await submit_login(env.http, params)
    assert consent.status_code == 200
    assert "Allow access?" in consent.text
    form = hidden_fields(consent.text)
    denied = await env.http.post("/authorize", data={**form, "decision": "deny"})
    assert query_of(denied.headers["location"])["error"] == "access_denied"
    # A consent page is answered once; the signed-in user is asked again on a new request.
    asked_again = await env.http.get("/authorize", params=params)
    assert "Allow access?" in asked_again.text
    form = hidden_fields(asked_again.text)
    allowed = await env.http.post("/authorize", data={**form, "decision": "allow"})
    assert allowed.status_code == 302
    assert "code" in query_of(allowed.headers["location"])
    # Consent remembered for the session.
    again = await env.http.get("/authorize", params=params)
    assert again.status_code == 302


# --- metadata, jwks, health -------------------------------------------------------------


async def test_metadata_lists_what_is_supported(env: Env) -> None:
    meta = (await env.http.get("/.well-known/oauth-authorization-server")).json()
    assert meta["issuer"] == ISSUER
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert "password" not in meta["grant_types_supported"]
    assert set(meta["response_types_supported"]) == {"code", "token"}
    assert meta["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"


async def test_jwks_is_cacheable(env: Env) -> None:
    resp = await env.http.get("/.well-known/jwks.json")
    assert "max-age" in resp.headers["cache-control"]
    assert all("d" not in k for k in resp.json()["keys"])


async def test_readiness(env: Env) -> None:
    resp = await env.http.get("/readyz")
    assert resp.status_code == 200
    expected = {"database": "ok", **({"redis": "ok"} if env.settings.redis_url else {})}
    assert resp.json()["checks"] == expected


async def test_openapi_document_builds(env: Env) -> None:
    resp = await env.http.get("/openapi.json")
    assert resp.status_code == 200
    assert "/token" in resp.json()["paths"]


async def test_repeated_authorize_parameter_is_error_page(env: Env) -> None:
    resp = await env.http.get("/authorize?client_id=web&client_id=spa&response_type=code")
    assert resp.status_code == 400
    assert "location" not in resp.headers


async def test_concurrent_code_redemption_issues_once(env: Env) -> None:
    code = await login_code(env)
    results = await asyncio.gather(*(exchange(env, code) for _ in range(5)))
    assert sorted(r.status_code for r in results) == [200, 400, 400, 400, 400]
    assert {r.json()["error"] for r in results if r.status_code == 400} == {"invalid_grant"}


async def test_duplicates_racing_the_first_redemption_leave_its_tokens_valid(
    env: Env,
) -> None:
    # Hold the one redemption that wins until the four duplicates have been answered, so
    # each of them arrives while it is issuing (not after: that would be a replay).
    code = await login_code(env)
    issuer = env.service.issuer
    issue, losers_answered = issuer.issue, asyncio.Event()

    async def issue_after_the_duplicates(*args: Any, **kwargs: Any) -> IssuedGrant:
        await asyncio.wait_for(losers_answered.wait(), 10)
        return await issue(*args, **kwargs)

    refused: list[httpx.Response] = []

    async def redeem() -> httpx.Response:
        resp = await exchange(env, code)
        if resp.status_code != 200:
            refused.append(resp)
            if len(refused) == 4:
                losers_answered.set()
        return resp

    issuer.issue = issue_after_the_duplicates  # type: ignore[method-assign]
    try:
        results = await asyncio.gather(*(redeem() for _ in range(5)))
    finally:
        issuer.issue = issue  # type: ignore[method-assign]
    [winner] = [r.json() for r in results if r.status_code == 200]
    assert [r.json()["error"] for r in refused] == ["invalid_grant"] * 4
    for token in (winner["access_token"], winner["refresh_token"]):
        assert await introspect_as(env, token, "web") is True
    # A presentation after the redemption finished is a replay (RFC 6749 §4.1.2): it
    # revokes what the code issued.
    assert (await exchange(env, code)).json()["error"] == "invalid_grant"
    for token in (winner["access_token"], winner["refresh_token"]):
        assert await introspect_as(env, token, "web") is False


async def introspect_as(env: Env, token: str, client_id: str) -> bool:
    resp = await env.http.post("/introspect", data={"token": token}, headers=env.basic(client_id))
    active: bool = resp.json()["active"]
    return active


async def test_concurrent_refresh_rotates_once(env: Env) -> None:
    body = (await exchange(env, await login_code(env))).json()
    form = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    results = await asyncio.gather(
        *(env.http.post("/token", data=form, headers=env.basic("web")) for _ in range(5))
    )
    # One rotation; inside the grace period the others are answered as retries of it.
    assert [r.status_code for r in results] == [200] * 5
    assert len({r.json()["refresh_token"] for r in results}) == 1
    for r in results:
        intro = await env.http.post(
            "/introspect", data={"token": r.json()["access_token"]}, headers=env.basic("svc")
        )
        assert intro.json()["active"] is True


async def test_no_secret_in_logs(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("DEBUG"):
        code = await login_code(env)
        body = (await exchange(env, code)).json()
        await env.http.post(
            "/token", data={"grant_type": "client_credentials"}, headers=env.basic("svc", "bad")
        )
        env.users.down = True
        env.http.cookies.clear()  # no SSO session: the form again
        await submit_login(env.http, auth_params())
    text = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    for secret in (
        "alice-pw",
        code,
        body["access_token"],
        body["refresh_token"],
        env.secrets["web"],
        env.secrets["svc"],
    ):
        assert secret not in text


async def test_non_ascii_basic_header_is_401(env: Env) -> None:
    resp = await env.http.post(
        "/token",
        data={"grant_type": "client_credentials"},
        headers={b"authorization": b"Basic \xc3\xa9\xff"},
    )
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"
