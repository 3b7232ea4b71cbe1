"""Grant logic without HTTP: authorization requests, codes + PKCE, client credentials,
refresh rotation, implicit."""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from joserfc import jwt

from authbus.token.clients import Client
from authbus.token.errors import (
    InvalidAuthorizationTarget,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from authbus.token.grants import AuthorizationServer, RedirectError
from authbus.token.issuer import IssuedGrant, IssuerConfig, TokenIssuer
from authbus.token.keys import KeyRing
from authbus.token.pkce import s256_challenge
from authbus.token.store import MemoryTokenStore

from .conftest import ISSUER, SECRET, DictClients

VERIFIER = "v" * 50
CHALLENGE = s256_challenge(VERIFIER)


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def fragment_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).fragment).items()}


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


async def code_for(
    server: AuthorizationServer, client_id: str = "web", **extra: str
) -> tuple[str, dict[str, str]]:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": "https://app.example.com/cb"
        if client_id == "web"
        else "https://spa.example.com/cb",
        "scope": "orders:read",
        "state": "xyz",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        **extra,
    }
    req = await server.validate_authorization_request(params)
    url = await server.approve(req, subject="user-1")
    q = query_of(url)
    return q["code"], params


# --- authorization request -------------------------------------------------------------


async def test_unknown_client_is_not_redirected(server: AuthorizationServer) -> None:
    with pytest.raises(InvalidAuthorizationTarget):
        await server.validate_authorization_request(
            {"response_type": "code", "client_id": "nope", "redirect_uri": "https://x/cb"}
        )


async def test_unregistered_redirect_is_not_redirected(server: AuthorizationServer) -> None:
    with pytest.raises(InvalidAuthorizationTarget):
        await server.validate_authorization_request(
            {
                "response_type": "code",
                "client_id": "web",
                "redirect_uri": "https://app.example.com/cb/../evil",
            }
        )


async def test_unknown_response_type_redirects_rfc_error(server: AuthorizationServer) -> None:
    with pytest.raises(RedirectError) as info:
        await server.validate_authorization_request(
            {"response_type": "id_token", "client_id": "web", "state": "s1"}
        )
    q = query_of(info.value.redirect_to)
    assert q["error"] == "unsupported_response_type"
    assert q["state"] == "s1"
    assert info.value.redirect_to.startswith("https://app.example.com/cb?")


async def test_scope_not_allowed_for_client(server: AuthorizationServer) -> None:
    with pytest.raises(RedirectError) as info:
        await server.validate_authorization_request(
            {"response_type": "code", "client_id": "web", "scope": "users:admin"}
        )
    assert query_of(info.value.redirect_to)["error"] == "invalid_scope"


async def test_plain_pkce_is_refused(server: AuthorizationServer) -> None:
    with pytest.raises(RedirectError) as info:
        await server.validate_authorization_request(
            {
                "response_type": "code",
                "client_id": "web",
                "code_challenge": VERIFIER,
                "code_challenge_method": "plain",
            }
        )
    assert query_of(info.value.redirect_to)["error"] == "invalid_request"


async def test_public_client_needs_pkce(server: AuthorizationServer) -> None:
    with pytest.raises(RedirectError) as info:
        await server.validate_authorization_request(
            {
                "response_type": "code",
                "client_id": "spa",
                "redirect_uri": "https://spa.example.com/cb",
            }
        )
    assert query_of(info.value.redirect_to)["error"] == "invalid_request"


async def test_implicit_only_when_enabled(server: AuthorizationServer) -> None:
    with pytest.raises(RedirectError) as info:
        await server.validate_authorization_request(
            {"response_type": "token", "client_id": "web", "state": "s"}
        )
    # The error of an implicit request travels in the fragment too.
    assert fragment_of(info.value.redirect_to)["error"] == "unauthorized_client"


async def test_implicit_token_only_in_fragment(server: AuthorizationServer) -> None:
    req = await server.validate_authorization_request(
        {
            "response_type": "token",
            "client_id": "spa",
            "redirect_uri": "https://spa.example.com/cb",
            "scope": "orders:read",
            "state": "st",
        }
    )
    url = await server.approve(req, subject="user-1")
    parts = urlsplit(url)
    assert parts.query == ""
    frag = fragment_of(url)
    assert frag["token_type"] == "Bearer"
    assert frag["state"] == "st"
    assert "access_token" in frag
    assert "refresh_token" not in frag


# --- authorization code ----------------------------------------------------------------


async def test_code_exchange_issues_tokens(
    server: AuthorizationServer, issuer: TokenIssuer
) -> None:
    code, params = await code_for(server)
    client = await server.authenticate_client(basic("web", SECRET), {})
    grant = await server.token_request(
        client,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": params["redirect_uri"],
            "code_verifier": VERIFIER,
        },
    )
    body = grant.response()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "orders:read"
    assert body["refresh_token"]
    token = jwt.decode(body["access_token"], issuer.keys.key_set(), algorithms=["ES256"])
    assert token.header["typ"] == "at+jwt"
    assert token.header["kid"] == issuer.keys.active.kid
    claims = token.claims
    assert claims["iss"] == ISSUER
    assert claims["sub"] == "user-1"
    assert claims["client_id"] == "web"
    assert claims["aud"] == "authbus"
    assert {"exp", "iat", "nbf", "jti"} <= set(claims)
    assert (await issuer.introspect(body["access_token"]))["active"] is True


async def test_pkce_mismatch_is_invalid_grant(server: AuthorizationServer) -> None:
    code, params = await code_for(server)
    client = await server.authenticate_client(basic("web", SECRET), {})
    with pytest.raises(InvalidGrant):
        await server.token_request(
            client,
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": params["redirect_uri"],
                "code_verifier": "w" * 50,
            },
        )


async def test_verifier_without_challenge_is_refused(server: AuthorizationServer) -> None:
    req = await server.validate_authorization_request({"response_type": "code", "client_id": "web"})
    code = query_of(await server.approve(req, subject="u"))["code"]
    client = await server.authenticate_client(basic("web", SECRET), {})
    with pytest.raises(InvalidGrant):
        await server.token_request(
            client,
            {"grant_type": "authorization_code", "code": code, "code_verifier": VERIFIER},
        )


async def test_code_redirect_uri_must_repeat(server: AuthorizationServer) -> None:
    code, _ = await code_for(server)
    client = await server.authenticate_client(basic("web", SECRET), {})
    with pytest.raises(InvalidGrant):
        await server.token_request(
            client, {"grant_type": "authorization_code", "code": code, "code_verifier": VERIFIER}
        )


async def test_code_used_by_another_client(
    server: AuthorizationServer, clients: DictClients
) -> None:
    code, params = await code_for(server)
    other = clients.add(
        Client(
            "other",
            "Other",
            "confidential",
            secret_hash=clients.clients["web"].secret_hash,
            grant_types=("authorization_code",),
            redirect_uris=("https://app.example.com/cb",),
        )
    )
    with pytest.raises(InvalidGrant):
        await server.token_request(
            other,
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": params["redirect_uri"],
                "code_verifier": VERIFIER,
            },
        )


async def test_reused_code_revokes_tokens_from_first_use(
    server: AuthorizationServer, issuer: TokenIssuer
) -> None:
    code, params = await code_for(server)
    client = await server.authenticate_client(basic("web", SECRET), {})
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": params["redirect_uri"],
        "code_verifier": VERIFIER,
    }
    first = (await server.token_request(client, form)).response()
    with pytest.raises(InvalidGrant, match="already used"):
        await server.token_request(client, form)
    assert (await issuer.introspect(first["access_token"]))["active"] is False
    assert (await issuer.introspect(first["refresh_token"]))["active"] is False


async def test_code_presented_while_its_redemption_issues_is_refused_without_revoking(
    server: AuthorizationServer, issuer: TokenIssuer
) -> None:
    code, params = await code_for(server)
    client = await server.authenticate_client(basic("web", SECRET), {})
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": params["redirect_uri"],
        "code_verifier": VERIFIER,
    }
    issue = issuer.issue

    async def issue_while_duplicated(*args: Any, **kwargs: Any) -> IssuedGrant:
        # A concurrent duplicate arrives between redemption and the recording of what the
        # redemption issued: it is refused, and nothing had been issued before it.
        with pytest.raises(InvalidGrant, match="already used"):
            await server.token_request(client, form)
        return await issue(*args, **kwargs)

    issuer.issue = issue_while_duplicated  # type: ignore[method-assign]
    winner = (await server.token_request(client, form)).response()
    issuer.issue = issue  # type: ignore[method-assign]
    assert (await issuer.introspect(winner["access_token"]))["active"] is True
    assert (await issuer.introspect(winner["refresh_token"]))["active"] is True
    # A presentation after the redemption finished is a replay: it revokes the winner's.
    with pytest.raises(InvalidGrant, match="already used"):
        await server.token_request(client, form)
    assert (await issuer.introspect(winner["access_token"]))["active"] is False
    assert (await issuer.introspect(winner["refresh_token"]))["active"] is False


async def test_code_replayed_after_the_access_token_expired_still_revokes_the_refresh_family(
    clients: DictClients, ring: KeyRing
) -> None:
    now = [1000.0]
    store = MemoryTokenStore(clock=lambda: now[0], warn=False)
    issuer = TokenIssuer(IssuerConfig(issuer=ISSUER, access_token_ttl_s=900), store, ring)
    server = AuthorizationServer(clients, issuer)
    code, params = await code_for(server)
    client = await server.authenticate_client(basic("web", SECRET), {})
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": params["redirect_uri"],
        "code_verifier": VERIFIER,
    }
    first = (await server.token_request(client, form)).response()
    now[0] += 900 + 3600  # the access token is long gone; the refresh token lives 30 days
    assert (await issuer.introspect(first["refresh_token"]))["active"] is True
    with pytest.raises(InvalidGrant, match="already used"):
        await server.token_request(client, form)
    assert (await issuer.introspect(first["refresh_token"]))["active"] is False


# --- client authentication -------------------------------------------------------------


async def test_client_secret_post_and_basic(server: AuthorizationServer) -> None:
    assert (await server.authenticate_client(basic("svc", SECRET), {})).client_id == "svc"
    post = {"client_id": "svc", "client_secret": SECRET}
    assert (await server.authenticate_client(None, post)).client_id == "svc"


async def test_basic_credentials_are_form_urlencoded(
    server: AuthorizationServer, clients: DictClients
) -> None:
    from authbus.token.clients import hash_secret

    clients.add(
        Client(
            "a b",
            "x",
            "confidential",
            secret_hash=hash_secret("p:q r"),
            grant_types=("client_credentials",),
        )
    )
    header = "Basic " + base64.b64encode(b"a+b:p%3Aq+r").decode()
    assert (await server.authenticate_client(header, {})).client_id == "a b"


@pytest.mark.parametrize(
    "header, form",
    [
        (basic("svc", "wrong"), {}),
        (basic("nobody", SECRET), {}),
        (None, {"client_id": "svc", "client_secret": "wrong"}),
        (None, {"client_id": "svc"}),
        (None, {}),
        ("Basic !!!", {}),
        (None, {"client_id": "spa", "client_secret": "anything"}),
    ],
)
async def test_bad_client_auth_is_invalid_client(
    server: AuthorizationServer, header: str | None, form: dict[str, str]
) -> None:
    with pytest.raises(InvalidClient) as info:
        await server.authenticate_client(header, form)
    assert info.value.status_code == 401
    assert "WWW-Authenticate" in info.value.headers


async def test_two_auth_methods_refused(server: AuthorizationServer) -> None:
    with pytest.raises(InvalidRequest):
        await server.authenticate_client(basic("svc", SECRET), {"client_secret": SECRET})


# --- client credentials ----------------------------------------------------------------


async def test_client_credentials_default_and_narrowed_scope(
    server: AuthorizationServer,
) -> None:
    svc = await server.authenticate_client(basic("svc", SECRET), {})
    full = await server.token_request(svc, {"grant_type": "client_credentials"})
    assert set(full.scopes) == {"events:publish", "events:read"}
    assert full.refresh_token is None
    narrow = await server.token_request(
        svc, {"grant_type": "client_credentials", "scope": "events:read"}
    )
    assert narrow.scopes == ("events:read",)
    with pytest.raises(InvalidScope):
        await server.token_request(svc, {"grant_type": "client_credentials", "scope": "x:y"})


async def test_grant_type_errors(server: AuthorizationServer) -> None:
    svc = await server.authenticate_client(basic("svc", SECRET), {})
    with pytest.raises(UnsupportedGrantType):
        await server.token_request(svc, {"grant_type": "password"})
    with pytest.raises(InvalidRequest):
        await server.token_request(svc, {})
    with pytest.raises(UnauthorizedClient):
        await server.token_request(svc, {"grant_type": "authorization_code", "code": "x"})


# --- refresh ---------------------------------------------------------------------------


async def _refresh_pair(server: AuthorizationServer) -> dict[str, str]:
    code, params = await code_for(server)
    client = await server.authenticate_client(basic("web", SECRET), {})
    return (
        await server.token_request(
            client,
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": params["redirect_uri"],
                "code_verifier": VERIFIER,
            },
        )
    ).response()


async def test_refresh_rotates(server: AuthorizationServer, issuer: TokenIssuer) -> None:
    first = await _refresh_pair(server)
    client = await server.authenticate_client(basic("web", SECRET), {})
    second = (
        await server.token_request(
            client, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
        )
    ).response()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await issuer.introspect(first["refresh_token"]))["active"] is False
    assert (await issuer.introspect(second["refresh_token"]))["active"] is True


async def test_refresh_reuse_revokes_family(
    server: AuthorizationServer, issuer: TokenIssuer
) -> None:
    first = await _refresh_pair(server)
    client = await server.authenticate_client(basic("web", SECRET), {})
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    second = (await server.token_request(client, form)).response()
    with pytest.raises(InvalidGrant, match="already used"):
        await server.token_request(client, form)  # grace is 0 in these tests
    for token in (first["access_token"], second["access_token"], second["refresh_token"]):
        assert (await issuer.introspect(token))["active"] is False


async def test_refresh_retried_within_grace_gets_the_same_new_token(
    server: AuthorizationServer, issuer: TokenIssuer
) -> None:
    # The client lost the first response and retries with the old token.
    issuer.config = replace(issuer.config, refresh_reuse_grace_s=30)
    first = await _refresh_pair(server)
    client = await server.authenticate_client(basic("web", SECRET), {})
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    second = (await server.token_request(client, form)).response()
    retried = (await server.token_request(client, form)).response()
    assert retried["refresh_token"] == second["refresh_token"]
    assert retried["access_token"] != second["access_token"]
    for token in (second["access_token"], retried["access_token"], second["refresh_token"]):
        assert (await issuer.introspect(token))["active"] is True


async def test_refresh_retry_after_the_new_token_was_used_revokes_the_family(
    server: AuthorizationServer, issuer: TokenIssuer
) -> None:
    issuer.config = replace(issuer.config, refresh_reuse_grace_s=30)
    first = await _refresh_pair(server)
    client = await server.authenticate_client(basic("web", SECRET), {})
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    second = (await server.token_request(client, form)).response()
    third = (
        await server.token_request(
            client, {"grant_type": "refresh_token", "refresh_token": second["refresh_token"]}
        )
    ).response()
    # The new token was used, so the response was not lost: the old one is a second party
    # holding the grant (RFC 9700 §4.14.2), and the whole family goes.
    with pytest.raises(InvalidGrant, match="already used; the grant is revoked"):
        await server.token_request(client, form)
    for token in (third["refresh_token"], third["access_token"], second["access_token"]):
        assert (await issuer.introspect(token))["active"] is False


async def test_refresh_retry_within_grace_by_another_client_is_refused(
    server: AuthorizationServer, issuer: TokenIssuer, clients: DictClients
) -> None:
    issuer.config = replace(issuer.config, refresh_reuse_grace_s=30)
    first = await _refresh_pair(server)
    client = await server.authenticate_client(basic("web", SECRET), {})
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    await server.token_request(client, form)
    other = Client(
        "web2",
        "Another app",
        "confidential",
        secret_hash=clients.clients["web"].secret_hash,
        grant_types=("refresh_token",),
    )
    with pytest.raises(InvalidGrant, match="not issued to this client"):
        await server.token_request(other, form)


async def test_refresh_token_of_another_client(
    server: AuthorizationServer, clients: DictClients
) -> None:
    first = await _refresh_pair(server)
    other = clients.add(
        Client(
            "other",
            "Other",
            "confidential",
            secret_hash=clients.clients["web"].secret_hash,
            grant_types=("refresh_token",),
        )
    )
    with pytest.raises(InvalidGrant):
        await server.token_request(
            other, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
        )
    # The rightful client can still use it (the attempt did not rotate it).
    web = clients.clients["web"]
    await server.token_request(
        web, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )


async def test_refresh_cannot_widen_scope(server: AuthorizationServer) -> None:
    first = await _refresh_pair(server)
    web = await server.authenticate_client(basic("web", SECRET), {})
    with pytest.raises(InvalidScope):
        await server.token_request(
            web,
            {
                "grant_type": "refresh_token",
                "refresh_token": first["refresh_token"],
                "scope": "orders:read orders:write",
            },
        )


@pytest.mark.parametrize("token", ["garbage", "a.b.c", ".", "fam.", ""])
async def test_malformed_refresh_token(server: AuthorizationServer, token: str) -> None:
    web = await server.authenticate_client(basic("web", SECRET), {})
    with pytest.raises((InvalidGrant, InvalidRequest)):
        await server.token_request(web, {"grant_type": "refresh_token", "refresh_token": token})


# --- revocation ------------------------------------------------------------------------


async def test_revoke_refresh_token_revokes_its_access_tokens(
    server: AuthorizationServer, issuer: TokenIssuer, clients: DictClients
) -> None:
    pair = await _refresh_pair(server)
    await issuer.revoke(pair["refresh_token"], clients.clients["svc"])  # not its client: no-op
    assert (await issuer.introspect(pair["access_token"]))["active"] is True
    await issuer.revoke(pair["refresh_token"], clients.clients["web"])
    assert (await issuer.introspect(pair["access_token"]))["active"] is False
    assert (await issuer.introspect(pair["refresh_token"]))["active"] is False


async def test_revoke_access_token(
    server: AuthorizationServer, issuer: TokenIssuer, clients: DictClients
) -> None:
    pair = await _refresh_pair(server)
    await issuer.revoke(pair["access_token"], clients.clients["web"])
    assert (await issuer.introspect(pair["access_token"]))["active"] is False
    assert (await issuer.introspect(pair["refresh_token"]))["active"] is True
    await issuer.revoke("not-a-token", clients.clients["web"])  # unknown: silently fine


# --- RFC 8707 resource / audience --------------------------------------------------------


async def test_resource_sets_audience(server: AuthorizationServer, issuer: TokenIssuer) -> None:
    issuer.config = replace(issuer.config, audiences=("authbus", "https://orders.example.com"))
    svc = await server.authenticate_client(basic("svc", SECRET), {})
    grant = await server.token_request(
        svc, {"grant_type": "client_credentials", "resource": "https://orders.example.com"}
    )
    claims = issuer.decode_access_token(grant.access_token)
    assert claims is not None and claims["aud"] == "https://orders.example.com"


async def test_unknown_resource_is_invalid_target(server: AuthorizationServer) -> None:
    svc = await server.authenticate_client(basic("svc", SECRET), {})
    with pytest.raises(InvalidTarget):
        await server.token_request(
            svc, {"grant_type": "client_credentials", "resource": "https://evil.example"}
        )
    with pytest.raises(RedirectError) as info:
        await server.validate_authorization_request(
            {"response_type": "code", "client_id": "web", "resource": "https://evil.example"}
        )
    assert query_of(info.value.redirect_to)["error"] == "invalid_target"


ORDERS = "https://orders.example.com"
BILLING = "https://billing.example.com"


async def _exchange(server: AuthorizationServer, code: str, **extra: str) -> IssuedGrant:
    web = await server.authenticate_client(basic("web", SECRET), {})
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": "https://app.example.com/cb",
        "code_verifier": VERIFIER,
        **extra,
    }
    return await server.token_request(web, form)


async def test_resource_named_at_the_token_request_sets_audience_and_sticks(
    server: AuthorizationServer, issuer: TokenIssuer
) -> None:
    # RFC 8707 §2.2: no resource at /authorize, one at /token.
    issuer.config = replace(issuer.config, audiences=("authbus", ORDERS, BILLING))
    code, _ = await code_for(server)
    grant = await _exchange(server, code, resource=ORDERS)
    claims = issuer.decode_access_token(grant.access_token)
    assert claims is not None and claims["aud"] == ORDERS
    web = await server.authenticate_client(basic("web", SECRET), {})
    refresh = {"grant_type": "refresh_token", "refresh_token": str(grant.refresh_token)}
    with pytest.raises(InvalidTarget):
        await server.token_request(web, {**refresh, "resource": BILLING})
    renewed = await server.token_request(web, refresh)
    claims = issuer.decode_access_token(renewed.access_token)
    assert claims is not None and claims["aud"] == ORDERS


async def test_token_request_cannot_switch_the_authorized_resource(
    server: AuthorizationServer, issuer: TokenIssuer
) -> None:
    issuer.config = replace(issuer.config, audiences=("authbus", ORDERS, BILLING))
    code, _ = await code_for(server, resource=ORDERS)
    with pytest.raises(InvalidTarget):
        await _exchange(server, code, resource=BILLING)
    code, _ = await code_for(server, resource=ORDERS)
    same = await _exchange(server, code, resource=ORDERS)
    claims = issuer.decode_access_token(same.access_token)
    assert claims is not None and claims["aud"] == ORDERS


async def test_client_audience_is_default(
    server: AuthorizationServer, issuer: TokenIssuer, clients: DictClients
) -> None:
    clients.add(replace(clients.clients["svc"], audience="billing"))
    svc = await server.authenticate_client(basic("svc", SECRET), {})
    grant = await server.token_request(svc, {"grant_type": "client_credentials"})
    claims = issuer.decode_access_token(grant.access_token)
    assert claims is not None and claims["aud"] == "billing"


async def test_client_ttl_overrides_default(
    server: AuthorizationServer, clients: DictClients
) -> None:
    clients.add(replace(clients.clients["svc"], access_token_ttl_s=60))
    svc = await server.authenticate_client(basic("svc", SECRET), {})
    grant = await server.token_request(svc, {"grant_type": "client_credentials"})
    assert grant.expires_in == 60
