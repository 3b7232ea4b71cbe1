"""Independent OAuth clients against a live token service (uvicorn on a loopback port):
Authlib's OAuth2Session / AsyncOAuth2Client, requests-oauthlib (BackendApplicationClient and
the authorization-code flow with PKCE), and authbus.common's TokenAuth / RefreshTokenAuth,
each used as its documentation shows, unchanged."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
import requests
import uvicorn
from authlib.integrations.requests_client import OAuth2Session
from oauthlib.oauth2 import BackendApplicationClient  # type: ignore[import-untyped]
from requests.auth import HTTPBasicAuth
from requests_oauthlib import OAuth2Session as RequestsOAuth2Session

from authbus.common.token_auth import RefreshTokenAuth, TokenAuth
from authbus.core.db import create_engine, create_sessionmaker
from authbus.core.migrate import upgrade
from authbus.token.app import create_app
from authbus.token.clients import ClientRepository, ClientSpec
from tests.conftest import free_port

from .conftest import FakeUserService, hidden_fields, make_settings

REDIRECT = "http://127.0.0.1/callback"


@dataclass
class Live:
    url: str
    secrets: dict[str, str]


async def _create_clients(database_url: str) -> dict[str, str]:
    engine = create_engine(database_url)
    repo = ClientRepository(create_sessionmaker(engine))
    out: dict[str, str] = {}
    for spec in (
        ClientSpec(
            "webapp", "Web", redirect_uris=(REDIRECT,), scopes=("orders:read",), first_party=True
        ),
        ClientSpec(
            "backend",
            "Backend",
            grant_types=("client_credentials",),
            scopes=("events:read", "events:publish"),
        ),
    ):
        _, secret = await repo.create(spec)
        assert secret is not None
        out[spec.client_id] = secret
    await engine.dispose()
    return out


@pytest.fixture
def live(tmp_path: Path, database_url: str, store_settings: dict[str, Any]) -> Iterator[Live]:
    """The token service under uvicorn, on each store (dict, Redis) and database."""
    port = free_port()
    settings = make_settings(tmp_path, database_url, **store_settings)
    settings = settings.model_copy(update={"token_url": f"http://127.0.0.1:{port}"})
    upgrade(database_url, "token")
    client_secrets = asyncio.run(_create_clients(database_url))
    users = FakeUserService()
    users.add("alice", "alice-pw", "orders:read")
    app = create_app(settings, user_transport=httpx.MockTransport(users.handle))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield Live(f"http://127.0.0.1:{port}", client_secrets)
    finally:
        server.should_exit = True
        thread.join(10)


def _browser_login(authorize_url: str) -> str:
    """What a user does in a browser: open the page, sign in; returns the redirect target."""
    with requests.Session() as browser:
        page = browser.get(authorize_url, timeout=5)
        assert page.status_code == 200, page.text
        form = hidden_fields(page.text)
        form.update(username="alice", password="alice-pw")
        action = authorize_url.split("?")[0]
        resp = browser.post(action, data=form, allow_redirects=False, timeout=5)
        assert resp.status_code == 302, resp.text
        return str(resp.headers["Location"])


def test_authlib_code_flow_refresh_introspect_revoke(live: Live) -> None:
    verifier = secrets.token_urlsafe(48)
    session = OAuth2Session(
        "webapp",
        live.secrets["webapp"],
        redirect_uri=REDIRECT,
        scope="orders:read",
        code_challenge_method="S256",
    )
    url, _state = session.create_authorization_url(f"{live.url}/authorize", code_verifier=verifier)
    callback = _browser_login(url)
    token = session.fetch_token(
        f"{live.url}/token", authorization_response=callback, code_verifier=verifier
    )
    assert token["token_type"] == "Bearer"
    assert token["refresh_token"]

    jwks = requests.get(f"{live.url}/.well-known/jwks.json", timeout=5).json()
    kid = pyjwt.get_unverified_header(token["access_token"])["kid"]
    claims = pyjwt.decode(
        token["access_token"],
        pyjwt.PyJWKSet.from_dict(jwks)[kid].key,
        algorithms=["ES256"],
        audience="authbus",
        issuer=live.url,
    )
    assert claims["sub"] == "id-alice"

    refreshed = session.refresh_token(f"{live.url}/token")
    assert refreshed["access_token"] != token["access_token"]
    assert refreshed["refresh_token"] != token["refresh_token"]

    intro = session.introspect_token(f"{live.url}/introspect", token=refreshed["access_token"])
    assert intro.json()["active"] is True
    revoked = session.revoke_token(
        f"{live.url}/revoke", token=refreshed["refresh_token"], token_type_hint="refresh_token"
    )
    assert revoked.status_code == 200
    after = session.introspect_token(f"{live.url}/introspect", token=refreshed["access_token"])
    assert after.json()["active"] is False
    session.close()


async def test_authlib_async_client_credentials(live: Live) -> None:
    with warnings.catch_warnings():
        # Authlib nudges towards the `httpx2` package when only httpx is installed.
        warnings.simplefilter("ignore", DeprecationWarning)
        from authlib.integrations.httpx_client import AsyncOAuth2Client

    async with AsyncOAuth2Client(
        "backend",
        live.secrets["backend"],
        scope="events:read",
        token_endpoint_auth_method="client_secret_post",
    ) as client:
        token = await client.fetch_token(f"{live.url}/token", grant_type="client_credentials")
        assert token["scope"] == "events:read"
        assert "refresh_token" not in token


def test_requests_oauthlib_backend_application(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # plain http on loopback
    session = RequestsOAuth2Session(client=BackendApplicationClient(client_id="backend"))
    token = session.fetch_token(
        f"{live.url}/token", client_id="backend", client_secret=live.secrets["backend"]
    )
    assert set(token["scope"]) == {"events:read", "events:publish"}
    meta = session.get(f"{live.url}/.well-known/oauth-authorization-server", timeout=5).json()
    assert meta["issuer"] == live.url
    session.close()


def _pyjwt_claims(live: Live, access_token: str) -> dict[str, object]:
    jwks = requests.get(f"{live.url}/.well-known/jwks.json", timeout=5).json()
    kid = pyjwt.get_unverified_header(access_token)["kid"]
    claims: dict[str, object] = pyjwt.decode(
        access_token,
        pyjwt.PyJWKSet.from_dict(jwks)[kid].key,
        algorithms=["ES256"],
        audience="authbus",
        issuer=live.url,
    )
    return claims


def test_requests_oauthlib_code_flow_with_pkce_refresh_introspect_revoke(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # plain http on loopback
    client_auth = HTTPBasicAuth("webapp", live.secrets["webapp"])
    session = RequestsOAuth2Session(
        "webapp", redirect_uri=REDIRECT, scope=["orders:read"], pkce="S256"
    )
    url, _state = session.authorization_url(f"{live.url}/authorize")
    callback = _browser_login(url)
    token = session.fetch_token(
        f"{live.url}/token", authorization_response=callback, auth=client_auth
    )
    assert token["token_type"] == "Bearer" and token["refresh_token"]
    assert _pyjwt_claims(live, token["access_token"])["sub"] == "id-alice"

    refreshed = session.refresh_token(f"{live.url}/token", auth=client_auth)
    assert refreshed["refresh_token"] != token["refresh_token"]
    # requests-oauthlib has no introspection/revocation helpers: plain RFC 7662/7009 posts.
    intro = session.post(
        f"{live.url}/introspect", data={"token": refreshed["access_token"]}, auth=client_auth
    )
    assert intro.json()["active"] is True
    assert intro.json()["client_id"] == "webapp"
    revoked = session.post(
        f"{live.url}/revoke",
        data={"token": refreshed["refresh_token"], "token_type_hint": "refresh_token"},
        auth=client_auth,
    )
    assert revoked.status_code == 200
    after = session.post(
        f"{live.url}/introspect", data={"token": refreshed["access_token"]}, auth=client_auth
    )
    assert after.json()["active"] is False
    session.close()


async def test_authlib_async_code_flow_refresh_introspect_revoke(live: Live) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from authlib.integrations.httpx_client import AsyncOAuth2Client

    verifier = secrets.token_urlsafe(48)
    async with AsyncOAuth2Client(
        "webapp",
        live.secrets["webapp"],
        redirect_uri=REDIRECT,
        scope="orders:read",
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_post",
    ) as client:
        url, _state = client.create_authorization_url(
            f"{live.url}/authorize", code_verifier=verifier
        )
        callback = await asyncio.to_thread(_browser_login, url)
        token = await client.fetch_token(
            f"{live.url}/token", authorization_response=callback, code_verifier=verifier
        )
        assert token["refresh_token"]
        refreshed = await client.refresh_token(f"{live.url}/token")
        assert refreshed["access_token"] != token["access_token"]
        intro = await client.introspect_token(
            f"{live.url}/introspect", token=refreshed["access_token"]
        )
        assert intro.json()["active"] is True
        old = await client.introspect_token(f"{live.url}/introspect", token=token["refresh_token"])
        assert old.json()["active"] is False  # rotated
        revoked = await client.revoke_token(
            f"{live.url}/revoke", token=refreshed["access_token"], token_type_hint="access_token"
        )
        assert revoked.status_code == 200
        after = await client.introspect_token(
            f"{live.url}/introspect", token=refreshed["access_token"]
        )
        assert after.json()["active"] is False


def test_authlib_client_credentials_and_resource_server_introspection(live: Live) -> None:
    backend = OAuth2Session(
        "backend", live.secrets["backend"], scope="events:read"
    )  # client_secret_basic, Authlib's default
    token = backend.fetch_token(f"{live.url}/token", grant_type="client_credentials")
    assert token["scope"] == "events:read"
    assert _pyjwt_claims(live, token["access_token"])["client_id"] == "backend"
    # Another confidential client (a resource server) introspects it.
    webapp = OAuth2Session("webapp", live.secrets["webapp"])
    intro = webapp.introspect_token(f"{live.url}/introspect", token=token["access_token"])
    assert intro.json()["active"] is True and intro.json()["scope"] == "events:read"
    backend.revoke_token(f"{live.url}/revoke", token=token["access_token"])
    again = webapp.introspect_token(f"{live.url}/introspect", token=token["access_token"])
    assert again.json() == {"active": False}
    backend.close()
    webapp.close()


def test_authbus_token_auth_and_refresh_token_auth(live: Live) -> None:
    auth = TokenAuth("backend", live.secrets["backend"], issuer=live.url, scopes=["events:read"])
    access = auth.get_token()
    assert _pyjwt_claims(live, access)["scope"] == "events:read"
    auth.close()

    # A user's grant, obtained with Authlib, then carried by RefreshTokenAuth.
    verifier = secrets.token_urlsafe(48)
    session = OAuth2Session(
        "webapp",
        live.secrets["webapp"],
        redirect_uri=REDIRECT,
        scope="orders:read",
        code_challenge_method="S256",
    )
    url, _state = session.create_authorization_url(f"{live.url}/authorize", code_verifier=verifier)
    token = session.fetch_token(
        f"{live.url}/token", authorization_response=_browser_login(url), code_verifier=verifier
    )
    session.close()
    refresh_auth = RefreshTokenAuth(
        "webapp", token["refresh_token"], client_secret=live.secrets["webapp"], issuer=live.url
    )
    user_access = refresh_auth.get_token()
    assert _pyjwt_claims(live, user_access)["sub"] == "id-alice"
    assert refresh_auth.refresh_token != token["refresh_token"]  # rotated
    refresh_auth.close()
