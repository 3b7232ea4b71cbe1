"""BrowserLogin: redirect to /authorize with PKCE, callback sets the session cookie."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import Depends, FastAPI

from authbus.common import BrowserLogin
from authbus.common.security import Caller, browser_login_router, requires
from authbus.core.app import install_error_handlers
from tests.support.tokens import FakeClock, TokenMinter

AUTHORIZE = "http://token.test/authorize"
TOKEN = "http://token.test/token"
CALLBACK = "http://svc.test/auth/callback"


class FakeAuthorizationServer:
    """Hands out one code per challenge; checks the verifier like RFC 7636 §4.6."""

    def __init__(self, minter: TokenMinter) -> None:
        self.minter = minter
        self.codes: dict[str, str] = {}
        self.exchanges: list[dict[str, str]] = []

    def approve(self, authorize_location: str) -> tuple[str, str]:
        params = {k: v[0] for k, v in parse_qs(urlsplit(authorize_location).query).items()}
        code = f"code-{len(self.codes)}"
        self.codes[code] = params["code_challenge"]
        return code, params["state"]

    def handler(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        self.exchanges.append(form)
        challenge = self.codes.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "")
        computed = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        if challenge is None or computed != challenge or form.get("redirect_uri") != CALLBACK:
            return httpx.Response(400, json={"error": "invalid_grant"})
        token = self.minter.mint("user-9", ["pages:read"], client_id="svc-web")
        return httpx.Response(
            200, json={"access_token": token, "token_type": "Bearer", "expires_in": 300}
        )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def minter(clock: FakeClock) -> TokenMinter:
    return TokenMinter(clock=clock)


@pytest.fixture
def server(minter: TokenMinter) -> FakeAuthorizationServer:
    return FakeAuthorizationServer(minter)


@pytest.fixture
def login(server: FakeAuthorizationServer, clock: FakeClock) -> BrowserLogin:
    return BrowserLogin(
        authorize_url=AUTHORIZE,
        token_url=TOKEN,
        client_id="svc-web",
        redirect_uri=CALLBACK,
        secret_key="a-test-secret-of-some-length",
        scopes=["pages:read"],
        transport=httpx.MockTransport(server.handler),
        clock=clock,
    )


@pytest.fixture
async def client(minter: TokenMinter, login: BrowserLogin) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_error_handlers(app)
    app.state.token_validator = minter.validator(browser_login=login)
    app.include_router(browser_login_router(login))

    @app.get("/page")
    async def page(caller: Caller = Depends(requires("pages:read"))) -> dict[str, str]:
        return {"sub": caller.subject}

    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc.test") as c:
        yield c


HTML = {"Accept": "text/html,application/xhtml+xml"}


async def test_browser_signs_in_and_comes_back(
    client: httpx.AsyncClient, server: FakeAuthorizationServer
) -> None:
    first = await client.get("/page?tab=2", headers=HTML)
    assert first.status_code == 303
    location = first.headers["location"]
    assert location.startswith(AUTHORIZE + "?")
    params = parse_qs(urlsplit(location).query)
    assert params["client_id"] == ["svc-web"]
    assert params["redirect_uri"] == [CALLBACK]
    assert params["code_challenge_method"] == ["S256"]
    assert params["response_type"] == ["code"]
    assert params["scope"] == ["pages:read"]
    assert "HttpOnly" in first.headers["set-cookie"]

    code, state = server.approve(location)
    back = await client.get("/auth/callback", params={"code": code, "state": state})
    assert back.status_code == 303
    assert back.headers["location"] == "/page?tab=2"
    assert "authbus_session" in client.cookies

    page = await client.get("/page?tab=2", headers=HTML)
    assert page.status_code == 200
    assert page.json() == {"sub": "user-9"}
    assert "client_id" in server.exchanges[0]  # a public client identifies itself


async def test_api_clients_get_401_not_a_redirect(client: httpx.AsyncClient) -> None:
    response = await client.get("/page", headers={"Accept": "application/json"})
    assert response.status_code == 401


async def test_forged_state_is_refused(
    client: httpx.AsyncClient, server: FakeAuthorizationServer
) -> None:
    first = await client.get("/page", headers=HTML)
    code, _state = server.approve(first.headers["location"])
    response = await client.get("/auth/callback", params={"code": code, "state": "forged"})
    assert response.status_code == 400
    assert "authbus_session" not in client.cookies


async def test_callback_without_the_state_cookie_is_refused(
    client: httpx.AsyncClient, server: FakeAuthorizationServer
) -> None:
    first = await client.get("/page", headers=HTML)
    code, state = server.approve(first.headers["location"])
    client.cookies.clear()
    response = await client.get("/auth/callback", params={"code": code, "state": state})
    assert response.status_code == 400


async def test_tampered_state_cookie_is_refused(
    client: httpx.AsyncClient, server: FakeAuthorizationServer
) -> None:
    first = await client.get("/page", headers=HTML)
    code, state = server.approve(first.headers["location"])
    cookie = client.cookies["authbus_login"]
    client.cookies.clear()
    client.cookies.set("authbus_login", cookie[:-3] + "AAA", path="/auth/callback")
    response = await client.get("/auth/callback", params={"code": code, "state": state})
    assert response.status_code == 400


async def test_slow_sign_in_expires(
    client: httpx.AsyncClient, server: FakeAuthorizationServer, clock: FakeClock
) -> None:
    first = await client.get("/page", headers=HTML)
    code, state = server.approve(first.headers["location"])
    clock.advance(601)
    response = await client.get("/auth/callback", params={"code": code, "state": state})
    assert response.status_code == 400


async def test_denied_sign_in_is_403(client: httpx.AsyncClient) -> None:
    response = await client.get("/auth/callback", params={"error": "access_denied"})
    assert response.status_code == 403
    assert response.json()["error"] == "access_denied"


async def test_refused_code_is_400(
    client: httpx.AsyncClient, server: FakeAuthorizationServer
) -> None:
    first = await client.get("/page", headers=HTML)
    _code, state = server.approve(first.headers["location"])
    response = await client.get("/auth/callback", params={"code": "wrong", "state": state})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


async def test_expired_session_redirects_again(
    client: httpx.AsyncClient, server: FakeAuthorizationServer, clock: FakeClock
) -> None:
    first = await client.get("/page", headers=HTML)
    code, state = server.approve(first.headers["location"])
    await client.get("/auth/callback", params={"code": code, "state": state})
    clock.advance(3600)
    response = await client.get("/page", headers=HTML)
    assert response.status_code == 303


def test_return_path_cannot_leave_the_site(login: BrowserLogin) -> None:
    _url, cookie = login.start("//evil.test/x")
    params = parse_qs(urlsplit(_url).query)
    assert login.check_state(cookie, params["state"][0]).return_to == "/"


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="secret_key"):
        BrowserLogin(AUTHORIZE, TOKEN, "c", CALLBACK, secret_key="short")
    with pytest.raises(ValueError, match="absolute"):
        BrowserLogin(AUTHORIZE, TOKEN, "c", "/cb", secret_key="x" * 32)
